"""Safety of the staff pages in real Chromium: a decimal comma typed into a volume is saved
as a decimal point (an ``<input type="number">`` had read "1,5" as 15), a word is refused
with the field's example and kept in the box, the live preview of a negative volume shows
the problem and no computation, a critical alert asks for a reason before it is
acknowledged, and the worklist spells out a pump's critical alert."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal as D

import pytest
from playwright.sync_api import expect

from pumps.models import Alert, Refill
from tests.browser.test_browser_staff import local_input, sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def open_refill(page, clinic_data):
    base, pump, clinic = clinic_data["url"], clinic_data["main"], clinic_data["clinic"]
    sign_in(page, base, "nina", f"/pumps/{pump.pk}/refill/")
    page.get_by_label("Performed at").fill(local_input(clinic_data["fill_at"] + timedelta(days=30), clinic))
    return pump


def test_a_decimal_comma_is_saved_as_a_decimal_point(page, clinic_data, screenshot):
    pump = open_refill(page, clinic_data)
    extracted = page.get_by_label("Extracted residual volume (mL)")
    assert extracted.get_attribute("type") == "text"
    assert extracted.get_attribute("inputmode") == "decimal"
    extracted.fill("22,5")
    page.get_by_label("Volume added (mL)").fill("36,5")
    # 36 - 0.45 x 30 = 22.5 mL expected: 22,5 read as 22.5 is within the threshold
    expect(page.locator("#preview-after")).to_have_text("36.5 mL of 40 mL", timeout=10_000)
    expect(page.locator("#preview-discrepancy")).to_contain_text("0 mL (threshold ±2 mL): within the threshold")
    screenshot("20-decimal-comma")
    page.get_by_role("button", name="Save refill").click()
    page.wait_for_url(re.compile(rf".*/pumps/{pump.pk}/#summary$"))
    refill = Refill.objects.latest("performed_at")
    assert (refill.extracted_volume_ml, refill.added_volume_ml) == (D("22.5"), D("36.5"))


def test_a_word_is_refused_with_the_fields_example_and_kept(page, clinic_data, screenshot, accessible):
    pump = open_refill(page, clinic_data)
    page.get_by_label("Extracted residual volume (mL)").fill("abc")
    page.get_by_label("Volume added (mL)").fill("38")
    expect(page.locator("#preview-problems")).to_contain_text("Enter a volume in mL, e.g. 1.5", timeout=10_000)
    page.get_by_role("button", name="Save refill").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#id_extracted_volume_ml_error").inner_text() == "Enter a volume in mL, e.g. 1.5"
    field = page.get_by_label("Extracted residual volume (mL)")
    assert field.input_value() == "abc"
    assert field.get_attribute("aria-invalid") == "true"
    assert Refill.objects.filter(pump=pump).count() == 1
    accessible("the refused refill")
    screenshot("21-not-a-number")


def test_preview_of_a_negative_volume_shows_the_problem_not_a_computation(page, clinic_data, screenshot):
    open_refill(page, clinic_data)
    page.get_by_label("Volume added (mL)").fill("38")
    expect(page.locator("#preview-after")).to_have_text("38 mL of 40 mL", timeout=10_000)
    page.get_by_label("Extracted residual volume (mL)").fill("-19")
    problems = page.locator("#preview-problems")
    expect(problems).to_contain_text("Extracted residual volume (mL): Must be zero or more.", timeout=10_000)
    assert re.sub(r"\s+", " ", problems.inner_text()).startswith("Nothing computed: correct this value first.")
    preview = page.locator("#refill-preview").inner_text()
    assert "Flagged" not in preview and "Expected residual" not in preview and "New low-reservoir alarm" not in preview
    # correct it: the computation comes back
    page.get_by_label("Extracted residual volume (mL)").fill("19")
    expect(page.locator("#preview-discrepancy")).to_contain_text("Flagged", timeout=10_000)
    screenshot("22-preview-negative")


def test_acknowledging_a_critical_alert_asks_for_a_reason(page, clinic_data, screenshot, accessible):
    base = clinic_data["url"]
    alert = Alert.objects.get(pump=clinic_data["alarm"], kind="low_reservoir")
    sign_in(page, base, "nina", "/alerts/")
    row = page.locator(f"#alert-{alert.pk}")
    reason = row.get_by_label("Reason for acknowledging this critical alert")
    assert not reason.is_visible()  # one click is not enough: the reason comes first
    row.locator("summary").click()
    expect(reason).to_be_visible()
    accessible("the acknowledgement form")
    row.get_by_role("button", name="Confirm acknowledgement").click()
    error = page.locator(f"#ack-reason-{alert.pk}-error")
    expect(error).to_have_text("Give a reason to acknowledge a critical alert: what was done, or why it can wait.")
    alert.refresh_from_db()
    assert alert.acknowledged_at is None
    screenshot("23-ack-needs-reason")

    page.locator(f"#alert-{alert.pk}").get_by_label("Reason for acknowledging this critical alert").fill(
        "Patient reached by phone; refill today 14:00")
    page.locator(f"#alert-{alert.pk}").get_by_role("button", name="Confirm acknowledgement").click()
    expect(page.locator(f"#alert-{alert.pk}")).to_contain_text("Acknowledged by Nina Novak")
    assert page.locator(f"#alert-{alert.pk}").inner_text().endswith("“Patient reached by phone; refill today 14:00”")
    alert.refresh_from_db()
    assert (alert.acknowledged_by.username, alert.acknowledgement_reason) == (
        "nina", "Patient reached by phone; refill today 14:00")
    screenshot("24-ack-with-reason")

    # the pump page shows who, when and why on the alert, still open while the reservoir is low
    page.goto(f"{base}/pumps/{clinic_data['alarm'].pk}/")
    critical = page.locator("#pump-critical-alerts")
    expect(critical).to_contain_text("Critical: low reservoir")
    assert "acknowledged by Nina Novak" in critical.inner_text()
    assert "“Patient reached by phone; refill today 14:00”" in critical.inner_text()


def test_worklist_marks_a_pump_with_a_critical_alert(page, clinic_data, screenshot, accessible):
    sign_in(page, clinic_data["url"], "nina")
    marker = page.locator("tr[data-status=alarm] .alert-marker")
    expect(marker).to_be_visible()
    assert marker.inner_text() == "Critical: low reservoir"
    # no critical alert on the ok pump: at most its most severe other alert, beside its status
    assert page.locator("tr[data-status=ok] .alert-marker.sev-critical").count() == 0
    assert page.locator("tr[data-status=alarm]").get_attribute("class").endswith("needs-action")
    reason = page.locator("tr[data-status=alarm] .reason").inner_text()
    assert reason.startswith("At the low-reservoir alarm since ")
    assert re.search(r"\(\d+ (hour|day)s? ago\) \(worst case\)", reason), reason
    accessible("the worklist with alert markers")
    screenshot("25-worklist-marker")
