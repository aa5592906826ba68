"""Every staff page at a desktop (1366×900), a ward tablet (768×1024) and a phone (390×844)
in real Chromium: nothing scrolls sideways, axe-core finds no serious or critical
violation, and the worklist shows at least 12 pumps above the fold on the desktop and the
first pump card on the phone's first screen. A screenshot of each goes to
test-artifacts/screenshots/layout-<page>-<width>.png."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.utils import timezone

from pumps import services as s
from pumps.alerting.sweep import sweep
from tests.browser.conftest import PASSWORD, SCREENSHOTS
from tests.factories import make_patient, make_pump, make_user

pytestmark = pytest.mark.django_db(transaction=True)

VIEWPORTS = [(1366, 900), (768, 1024), (390, 844)]
FAMILIES = ["Abbott", "Bauer", "Cruz", "Dunn", "Ellis", "Ford", "Gray", "Hale", "Ito", "Jones", "Khan", "Lund",
            "Moss", "Nash", "Ortiz", "Price"]


@pytest.fixture
def ward(clinic_data):
    """The shared clinic with sixteen more filled pumps (fills from 5 to 50 days ago: every
    status), an admin for the settings page, and one sweep so that alerts are open."""
    clinic = clinic_data["clinic"]
    now = timezone.now().replace(second=0, microsecond=0)
    make_user("ada", clinic, "admin", first_name="Ada", last_name="Admin")
    prescriber = s.Actor(clinic.memberships.get(role="prescriber").user)
    implanted = (now - timedelta(days=120)).astimezone(clinic.tz).date()
    for i, family in enumerate(FAMILIES):
        pump = make_pump(make_patient(clinic, mrn=f"MRN1{i:02d}", family_name=family, given_name="Sam",
                                      high_risk=i % 5 == 0), serial=f"SN-1{i:02d}", implanted_on=implanted)
        s.record_refill(pump=pump, performed_at=now - timedelta(days=5 + 3 * i), added_volume_ml=D("30"),
                        concentration_mcg_per_ml=D("1000"), actor=prescriber, now=now,
                        program=s.ProgramInput(concentration_mcg_per_ml=D("1000"), daily_dose_mcg=D("600")))
    sweep(now)
    pump = clinic_data["main"]
    s.schedule_appointment(pump=pump, scheduled_for=now + timedelta(days=3), actor=prescriber, now=now)
    return clinic_data


def sign_in(page, base, username):
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")


def pages_of(data) -> list[tuple[str, str, str]]:
    pump, clinic = data["main"], data["clinic"]
    return [
        ("worklist", "dr_pat", "/"),
        ("patient", "dr_pat", f"/patients/{pump.patient_id}/"),
        ("pump", "dr_pat", f"/pumps/{pump.pk}/"),
        ("refill", "dr_pat", f"/pumps/{pump.pk}/refill/"),
        ("program", "dr_pat", f"/pumps/{pump.pk}/program/"),
        ("reading", "dr_pat", f"/pumps/{pump.pk}/reading/"),
        ("alerts", "dr_pat", "/alerts/"),
        ("worksheet", "dr_pat", f"/pumps/{pump.pk}/worksheet/"),
        ("appointments", "dr_pat", f"/pumps/{pump.pk}/appointments/"),
        ("settings", "ada", f"/clinics/{clinic.code}/settings/"),
    ]


def no_sideways_scroll(page) -> tuple[int, int]:
    return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


def test_every_staff_page_fits_each_screen_and_passes_axe(page, ward, accessible):
    base = ward["url"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    signed_in_as = None
    problems = []
    for name, user, path in pages_of(ward):
        if user != signed_in_as:
            page.context.clear_cookies()
            sign_in(page, base, user)
            signed_in_as = user
        for width, height in VIEWPORTS:
            page.set_viewport_size({"width": width, "height": height})
            response = page.goto(f"{base}{path}")
            assert response.status == 200, (name, response.status)
            page.wait_for_load_state("networkidle")
            scroll_width, inner = no_sideways_scroll(page)
            if scroll_width > inner:
                problems.append(f"{name} at {width}px scrolls sideways: {scroll_width} > {inner}")
            accessible(f"the {name} page at {width}×{height}")
            page.screenshot(path=str(SCREENSHOTS / f"layout-{name}-{width}.png"), full_page=True)
    assert not problems, "\n".join(problems)


def rows_above_the_fold(page) -> int:
    return page.locator("tr[data-status]").evaluate_all(
        "rows => rows.filter(r => r.getBoundingClientRect().bottom <= window.innerHeight).length")


def test_the_worklist_shows_twelve_pumps_on_a_desktop_and_the_first_card_on_a_phone(page, ward):
    base = ward["url"]
    sign_in(page, base, "nina")
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{base}/")
    page.screenshot(path=str(SCREENSHOTS / "layout-worklist-1366-first-screen.png"))
    assert page.locator("tr[data-status]").count() >= 12
    assert rows_above_the_fold(page) >= 12
    # the first row needs action now and says why, in words
    first = page.locator("tr[data-status]").first
    assert first.get_attribute("class").endswith("needs-action")
    assert page.locator("#band-heading").inner_text().startswith("Needs action now")
    assert first.locator(".reason").inner_text()

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/")
    box = page.locator("tr[data-status]").first.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 844, box
    page.screenshot(path=str(SCREENSHOTS / "layout-worklist-390-first-screen.png"))


def test_save_is_reachable_without_scrolling_past_the_preview_on_a_phone(page, ward):
    base, pump = ward["url"], ward["main"]
    sign_in(page, base, "nina")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/pumps/{pump.pk}/refill/")
    page.get_by_label("Volume added (mL)").fill("20")
    save = page.get_by_role("button", name="Save refill")
    box = save.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 844  # sticky at the bottom of the screen
    # the preview follows the procedure and drug fields, before the notes
    order = page.evaluate(
        "[document.getElementById('refill-preview').getBoundingClientRect().top,"
        " document.getElementById('id_added_volume_ml').getBoundingClientRect().top,"
        " document.getElementById('id_notes').getBoundingClientRect().top]")
    assert order[1] < order[0] < order[2]
