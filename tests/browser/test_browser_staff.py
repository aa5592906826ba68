"""The staff pages in real headless Chromium: sign-in, the worklist, a refill with a flagged
discrepancy shown before saving, a program change refused then accepted with an override,
acknowledging an alert, and a user of another clinic who cannot open the pump. Each page
passes axe-core with no serious violation; screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal as D

import pytest
from playwright.sync_api import expect

from pumps.models import Alert, Program, Refill
from tests.browser.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def sign_in(page, base, username, next_path="/"):
    page.goto(f"{base}{next_path}")
    assert "/accounts/login/" in page.url
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state("networkidle")


def local_input(moment, clinic) -> str:
    return moment.astimezone(clinic.tz).strftime("%Y-%m-%dT%H:%M")


def test_sign_in_and_the_worklist(page, clinic_data, screenshot, accessible):
    base = clinic_data["url"]
    page.goto(f"{base}/")
    assert page.url == f"{base}/accounts/login/?next=/"
    accessible("the sign-in page")
    screenshot("01-sign-in")
    page.get_by_label("Username").fill("nina")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    assert "Please enter a correct username and password" in page.inner_text("main")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")

    statuses = page.locator("tr[data-status]").evaluate_all("rows => rows.map(r => r.dataset.status)")
    assert statuses == ["alarm", "ok", "incomplete"]
    assert page.locator("tr[data-status=alarm] .status").inner_text() == "Low-reservoir alarm"
    assert page.locator("tr[data-status=alarm] .alert-marker").inner_text() == "Critical: low reservoir"
    assert "Zed" not in page.inner_text("main")
    assert page.get_by_role("alert").inner_text().startswith("Alerting is stalled.")
    accessible("the worklist")
    screenshot("02-worklist")

    # search as you type (htmx swaps the results in place)
    page.get_by_label("Search MRN, name or serial").fill("garc")
    expect(page.locator("tr[data-status]")).to_have_count(1)
    assert page.locator("tr[data-status] td").nth(1).inner_text().startswith("Garcia, Ana")
    assert "q=garc" in page.url
    screenshot("03-worklist-search")


def test_refill_with_a_flagged_discrepancy(page, clinic_data, screenshot, accessible):
    base, pump, clinic = clinic_data["url"], clinic_data["main"], clinic_data["clinic"]
    sign_in(page, base, "nina", f"/pumps/{pump.pk}/")
    assert page.get_by_role("heading", name="Reservoir now").is_visible()
    assert page.locator("#volume-chart").is_visible()
    accessible("the pump page")
    screenshot("04-pump")

    page.get_by_role("link", name="Record refill").click()
    page.wait_for_url(f"{base}/pumps/{pump.pk}/refill/")
    # exactly 30 days after the fill: 36 - 0.45 x 30 = 22.5 mL expected
    page.get_by_label("Performed at").fill(local_input(clinic_data["fill_at"] + timedelta(days=30), clinic))
    page.get_by_label("Extracted residual volume (mL)").fill("19")
    page.get_by_label("Volume added (mL)").fill("38")
    page.get_by_label("Lot number").fill("L77")
    # the page's CSP forbids eval, so waits use Playwright's locators, not wait_for_function
    # each field's change sends its own preview request: wait for the last field's answer
    expect(page.locator("#preview-discrepancy")).to_contain_text("Flagged", timeout=10_000)
    expect(page.locator("#preview-after")).to_have_text("38 mL of 40 mL", timeout=10_000)
    assert page.inner_text("#preview-expected") == "22.5 mL"
    assert re.sub(r"\s+", " ", page.inner_text("#preview-discrepancy")) == (
        "-3.5 mL (threshold ±2 mL): Flagged — less drug than expected remained: suggests over-infusion, a leak or "
        "an earlier pocket fill"
    )
    assert page.inner_text("#preview-after") == "38 mL of 40 mL"
    assert re.search(r" (CST|CDT) \(in \d+ days\)$", page.inner_text("#preview-lra"))
    assert Refill.objects.filter(pump=pump).count() == 1  # nothing saved yet
    accessible("the refill form")
    screenshot("05-refill-preview")

    page.get_by_role("button", name="Save refill").click()
    page.wait_for_url(f"{base}/pumps/{pump.pk}/#summary")
    assert "Refill recorded. Flagged: less drug than expected remained" in page.inner_text(".messages")
    refill = Refill.objects.latest("performed_at")
    assert (refill.discrepancy_ml, refill.discrepancy_flagged, refill.lot_number) == (D("-3.5"), True, "L77")
    assert page.locator("#discrepancy-chart").is_visible()
    accessible("the pump page after a refill")
    screenshot("06-refill-saved")


def test_program_change_refused_then_accepted_with_an_override(page, clinic_data, screenshot, accessible):
    base, pump = clinic_data["url"], clinic_data["main"]
    sign_in(page, base, "dr_pat", f"/pumps/{pump.pk}/")
    page.get_by_role("link", name="Change program").click()
    page.wait_for_url(f"{base}/pumps/{pump.pk}/program/")
    dose = page.get_by_label("Daily dose (mcg/day)")
    assert dose.input_value() == "450"
    dose.fill("600")
    expect(page.locator("#preview-ml-per-day")).to_have_text(re.compile(r"^0\.6 mL/day"))
    assert page.inner_text("#preview-titration").startswith("Above the limit.")
    accessible("the program form")
    screenshot("07-program-preview")

    page.get_by_role("button", name="Save program").click()
    error = page.locator("#id_override_reason_error")
    assert error.inner_text() == (
        "The basal daily dose rises from 450 to 600 mcg/day, above the titration limit of +30 % in 24 h (at most "
        "585 mcg/day); give an override reason to proceed"
    )
    assert page.get_by_label("Titration override reason").get_attribute("aria-invalid") == "true"
    assert Program.objects.filter(pump=pump).count() == 1
    accessible("the refused program")
    screenshot("08-program-refused")

    page.get_by_label("Titration override reason").fill("severe spasms; discussed with the patient")
    page.get_by_role("button", name="Save program").click()
    page.wait_for_url(f"{base}/pumps/{pump.pk}/#summary")
    assert "Program saved. A second clinician must verify it." in page.inner_text(".messages")
    program = Program.objects.latest("entered_at")
    assert (program.daily_dose_mcg, program.override_reason) == (D("600"), "severe spasms; discussed with the patient")
    screenshot("09-program-saved")


def test_acknowledge_an_alert(page, clinic_data, screenshot, accessible):
    """A warning takes one click; a critical alert asks for a reason (see test_browser_safety)."""
    base = clinic_data["url"]
    alert = Alert.objects.get(pump=clinic_data["alarm"], kind="refill_overdue")
    sign_in(page, base, "nina", "/alerts/")
    row = page.locator(f"#alert-{alert.pk}")
    assert "Refill overdue" in row.inner_text()
    accessible("the alerts inbox")
    screenshot("10-alerts")
    row.get_by_role("button", name=re.compile("^Acknowledge")).click()
    expect(page.locator(f"#alert-{alert.pk}")).to_contain_text("Acknowledged by")
    assert "Acknowledged by Nina Novak" in page.locator(f"#alert-{alert.pk}").inner_text()
    alert.refresh_from_db()
    assert alert.acknowledged_by.username == "nina"
    screenshot("11-alert-acknowledged")


def test_a_user_of_another_clinic_cannot_open_the_pump(page, clinic_data, screenshot, accessible):
    base, pump = clinic_data["url"], clinic_data["main"]
    sign_in(page, base, "otto")
    assert page.locator("tr[data-status]").count() == 1  # only the south clinic's pump
    response = page.goto(f"{base}/pumps/{pump.pk}/")
    assert response.status == 404
    assert page.get_by_role("heading", level=1).inner_text() == "Not found"
    assert "Garcia" not in page.content()
    accessible("the not-found page")
    screenshot("12-other-clinic-404")


def test_worksheet_prints_cleanly(page, clinic_data, screenshot, accessible):
    base, pump = clinic_data["url"], clinic_data["main"]
    sign_in(page, base, "nina", f"/pumps/{pump.pk}/worksheet/")
    assert page.get_by_role("heading", name="Refill worksheet").is_visible()
    accessible("the refill worksheet")
    page.emulate_media(media="print")
    assert not page.locator(".site-header").is_visible()
    screenshot("13-worksheet-print")
