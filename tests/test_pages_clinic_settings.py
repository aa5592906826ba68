"""Clinic settings for clinic administrators: policy (recomputes due dates), alert
addresses, closures (due dates move to the open day before)."""

from datetime import date

import pytest

from clinic.models import AlertRecipient, ClinicClosure
from pumps import services as s
from tests.factories import make_user
from tests.pages_support import DUE_SOON_AT, signed_in, text_of, travel, worked_example


@pytest.fixture
def admin(clinic):
    return make_user("ada", clinic, "admin")


@pytest.fixture
def filled(patient, nurse):
    return worked_example(patient, s.Actor(nurse))


def policy(**overrides):
    data = {
        "action": "policy", "name": "North Spasticity Clinic", "lead_days": "7", "high_risk_extra_days": "7",
        "due_soon_days": "14", "open_weekdays": ["0", "1", "2", "3", "4"], "discrepancy_threshold_small_ml": "1",
        "discrepancy_threshold_large_ml": "2", "titration_limit_spinal_pct": "30", "titration_limit_other_pct": "15",
        "withdrawal_window_hours": "72", "digest_hour": "7",
    }
    data.update(overrides)
    return data


def test_lead_days_change_recomputes_the_due_date(filled, admin):
    with travel(DUE_SOON_AT):
        client = signed_in(admin)
        assert client.get("/clinics/north/settings/").status_code == 200
        response = client.post("/clinics/north/settings/", policy(lead_days="10"))
    assert response.status_code == 302
    filled.refresh_from_db()
    # alarm 2026-04-18 - 10 days = Wednesday 04-08
    assert filled.refill_due_on == date(2026, 4, 8)
    assert filled.clinic.lead_days == 10
    assert filled.clinic.history.order_by("-history_id").first().history_user == admin


def test_saturday_opening_and_invalid_policy(filled, admin):
    with travel(DUE_SOON_AT):
        client = signed_in(admin)
        client.post("/clinics/north/settings/", policy(open_weekdays=["0", "1", "2", "3", "4", "5"]))
        bad = client.post("/clinics/north/settings/", policy(digest_hour="24", open_weekdays=[]))
    filled.refresh_from_db()
    assert filled.refill_due_on == date(2026, 4, 11)  # the Saturday itself
    assert bad.status_code == 400
    html = bad.content.decode()
    assert "Ensure this value is less than or equal to 23." in html
    assert '<ul class="errorlist" id="id_open_weekdays_error"><li>This field is required.</li></ul>' in html


def test_closure_moves_the_due_date_and_can_be_removed(filled, admin):
    with travel(DUE_SOON_AT):
        client = signed_in(admin)
        client.post("/clinics/north/settings/", {"action": "add_closure", "date": "2026-04-10", "reason": "Good Friday"})
        filled.refresh_from_db()
        assert filled.refill_due_on == date(2026, 4, 9)
        duplicate = client.post("/clinics/north/settings/", {"action": "add_closure", "date": "2026-04-10"})
        assert "This day is already marked closed." in duplicate.content.decode()
        page = text_of(client.get("/clinics/north/settings/").content.decode())
        assert "2026-04-10 (Fri) Good Friday" in page
        client.post("/clinics/north/settings/", {"action": "remove_closure", "id": ClinicClosure.objects.get().pk})
    filled.refresh_from_db()
    assert filled.refill_due_on == date(2026, 4, 10)


def test_alert_addresses(admin, clinic):
    with travel(DUE_SOON_AT):
        client = signed_in(admin)
        client.post("/clinics/north/settings/", {"action": "add_recipient", "email": "Pumps@North.example.org"})
        again = client.post("/clinics/north/settings/", {"action": "add_recipient", "email": "pumps@north.example.org"})
        assert "This address is already on the list." in again.content.decode()
        client.post("/clinics/north/settings/", {"action": "add_recipient", "email": "oncall@north.example.org",
                                                 "escalation": "on"})
        assert sorted(AlertRecipient.objects.values_list("email", "escalation")) == [
            ("oncall@north.example.org", True), ("pumps@north.example.org", False)]
        target = AlertRecipient.objects.get(escalation=True)
        client.post("/clinics/north/settings/", {"action": "remove_recipient", "id": target.pk})
    assert list(AlertRecipient.objects.values_list("email", flat=True)) == ["pumps@north.example.org"]


def test_only_clinic_admins(filled, nurse, clinic):
    with travel(DUE_SOON_AT):
        client = signed_in(nurse)
        assert client.get("/clinics/north/settings/").status_code == 403
        denied = client.post("/clinics/north/settings/", policy(lead_days="1"))
        assert "Settings: north" not in client.get("/").content.decode()
    assert denied.status_code == 403
    assert "Only a clinic administrator changes the clinic&#x27;s settings." in denied.content.decode()
    clinic.refresh_from_db()
    assert clinic.lead_days == 7
