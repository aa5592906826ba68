"""The refill planning page in real headless Chromium: a nurse books a day's proposals
and sees the booked refill on the pump's page; the page passes axe-core."""

from __future__ import annotations

import pytest

from pumps.models import Appointment
from tests.browser.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def test_book_a_days_proposals_and_see_them_on_the_pump_page(page, clinic_data, screenshot, accessible):
    base, main = clinic_data["url"], clinic_data["main"]
    main.refresh_from_db()
    page.goto(f"{base}/planning/")
    page.get_by_label("Username").fill("nina")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/clinics/north/planning/")
    day = page.locator(f"section.plan-day:has(tr[data-pump='{main.pk}'])")
    when = day.get_attribute("data-day")
    assert when == main.refill_due_on.isoformat()  # as late as the window allows
    assert "MRN002" in page.locator("table.shortfalls").inner_text()  # the pump in alarm: overdue
    accessible("the planning page")
    screenshot("planning-01-proposals")
    day.get_by_role("button", name="Book this day's 1 proposal").click()
    page.wait_for_load_state("networkidle")
    assert "Booked 1 refill: MRN MRN001 (AG)" in page.get_by_role("status").first.inner_text()
    booked = Appointment.objects.get(pump=main)
    assert booked.kind == "refill"
    page.goto(f"{base}/pumps/{main.pk}/")
    assert f"{when} 09:00" in page.inner_text("main")
    screenshot("planning-02-pump-page")
