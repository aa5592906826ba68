"""``/api/v1/alerts/``: list, filter, read and acknowledge; scoped to the caller's clinic."""

from datetime import datetime, timedelta
from decimal import Decimal as D

import pytest

from pumps import services as s
from pumps.alerting.sweep import sweep
from pumps.models import Alert, Notification, Program
from tests.api_support import API, session_client, token_client, travel
from tests.conftest import CHICAGO
from tests.factories import make_clinic, make_patient, make_pump, make_user

LRA = datetime(2026, 4, 18, 23, 20, tzinfo=CHICAGO)


@pytest.fixture
def alarm(pump, nurse, prescriber):
    """The worked example's pump swept after its worst-case LRA: low_reservoir and refill_overdue."""
    s.record_refill(
        pump=pump, performed_at=datetime(2026, 2, 2, 9, tzinfo=CHICAGO), added_volume_ml=D(36),
        concentration_mcg_per_ml=D(1000), actor=s.Actor.system("test"), performed_by="nina",
        now=datetime(2026, 2, 2, 10, tzinfo=CHICAGO),
        program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450), entered_by="dr_pat"),
    )
    second = make_user("dr_two", pump.clinic, "prescriber")
    s.verify_program(program=Program.objects.get(), actor=s.Actor(second), now=datetime(2026, 2, 2, 11, tzinfo=CHICAGO))
    pump.clinic.alert_recipients.create(email="ward@clinic.example")
    sweep(LRA + timedelta(minutes=40))
    return Alert.objects.get(kind="low_reservoir")


def test_list_alerts_with_state_and_kind_filters(alarm, clinic):
    api, _ = token_client(clinic, write=False)
    body = api.get(f"{API}/alerts/").json()
    assert body["count"] == 2
    assert [a["kind"] for a in api.get(f"{API}/alerts/?kind=low_reservoir").json()["results"]] == ["low_reservoir"]
    item = api.get(f"{API}/alerts/{alarm.pk}/").json()
    assert item["state"] == "open"
    assert item["severity"] == "critical"
    assert item["due_at"] == "2026-04-18T23:20:00-05:00"
    assert item["patient"] == alarm.pump.patient_id
    assert api.get(f"{API}/alerts/?state=acknowledged").json()["count"] == 0
    assert api.get(f"{API}/alerts/?kind=nonsense").status_code == 400


def test_acknowledge_over_the_api_stops_repeats(alarm, clinic):
    api, _ = token_client(clinic, write=True, name="EHR")
    with travel(LRA + timedelta(hours=1)):
        response = api.post(
            f"{API}/alerts/{alarm.pk}/acknowledge/",
            {"acknowledged_by": "NPI:1234567893", "reason": "Refill booked for 08:00; patient called, well."},
            format="json",
        )
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "acknowledged"
    assert body["acknowledged_by"] == "NPI:1234567893"
    assert body["acknowledged_at"] == "2026-04-19T00:20:00-05:00"
    assert body["acknowledgement_reason"] == "Refill booked for 08:00; patient called, well."
    alarm.refresh_from_db()
    assert (alarm.acknowledged_by_id, alarm.acknowledged_by_external, alarm.acknowledgement_reason) == (
        None, "NPI:1234567893", "Refill booked for 08:00; patient called, well.",
    )
    sweep(LRA + timedelta(hours=9))
    assert Notification.objects.filter(alert=alarm, repeat_number__gt=0).count() == 0
    assert api.get(f"{API}/alerts/?state=acknowledged").json()["count"] == 1


def test_a_critical_alert_needs_a_reason(alarm, clinic):
    api, _ = token_client(clinic, write=True)
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        response = api.post(f"{API}/alerts/{alarm.pk}/acknowledge/", body, format="json")
        assert response.status_code == 400
        assert response.json() == {
            "reason": ["Give a reason to acknowledge a critical alert: what was done, or why it can wait."]
        }
    response = api.post(f"{API}/alerts/{alarm.pk}/acknowledge/", {"reason": "x" * 501}, format="json")
    assert response.status_code == 400
    assert response.json() == {"reason": ["Ensure this field has no more than 500 characters."]}
    alarm.refresh_from_db()
    assert alarm.acknowledged_at is None


def test_a_warning_is_acknowledged_without_a_reason_by_the_api_client_itself(alarm, clinic):
    overdue = Alert.objects.get(kind="refill_overdue")
    api, _ = token_client(clinic, write=True, name="EHR")
    response = api.post(f"{API}/alerts/{overdue.pk}/acknowledge/", {}, format="json")
    assert response.status_code == 200
    assert (response.json()["acknowledged_by"], response.json()["acknowledgement_reason"]) == ("api client EHR", "")


def test_staff_session_acknowledges_as_themselves(alarm, nurse):
    api = session_client(nurse)
    response = api.post(f"{API}/alerts/{alarm.pk}/acknowledge/", {"reason": "Refilled at the bedside."}, format="json")
    assert response.status_code == 200
    assert response.json()["acknowledged_by"] == "nina"
    assert response.json()["acknowledgement_reason"] == "Refilled at the bedside."
    alarm.refresh_from_db()
    assert alarm.acknowledged_by == nurse
    assert alarm.history.first().history_user == nurse


def test_staff_session_naming_someone_else_is_400(alarm, nurse, prescriber):
    api = session_client(nurse)
    response = api.post(
        f"{API}/alerts/{alarm.pk}/acknowledge/", {"acknowledged_by": "dr_pat", "reason": "Seen."}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"acknowledged_by": [
        "You are signed in as nina: this is recorded as yours. Leave acknowledged_by empty (only an integration "
        "names another clinician)."
    ]}
    alarm.refresh_from_db()
    assert alarm.acknowledged_at is None


def test_read_only_token_and_viewer_cannot_acknowledge(alarm, clinic):
    api, _ = token_client(clinic, write=False)
    body = {"reason": "Seen."}
    response = api.post(f"{API}/alerts/{alarm.pk}/acknowledge/", body, format="json")
    assert (response.status_code, response.json()) == (
        403, {"detail": "This token is read-only.", "code": "permission_denied"}
    )
    viewer = make_user("vic", clinic, "viewer")
    response = session_client(viewer).post(f"{API}/alerts/{alarm.pk}/acknowledge/", body, format="json")
    assert (response.status_code, response.json()) == (
        403, {"detail": "Your role in this clinic does not allow changes.", "code": "permission_denied"}
    )
    alarm.refresh_from_db()
    assert alarm.acknowledged_at is None


def test_another_clinics_alert_is_404(alarm):
    other = make_clinic(code="south", timezone="Australia/Sydney")
    api, _ = token_client(other, write=True)
    assert api.get(f"{API}/alerts/{alarm.pk}/").status_code == 404
    assert api.post(f"{API}/alerts/{alarm.pk}/acknowledge/", {}, format="json").status_code == 404
    assert api.get(f"{API}/alerts/").json()["count"] == 0


def test_alert_list_query_count_does_not_grow(alarm, clinic, django_assert_max_num_queries):
    api, _ = token_client(clinic, write=False)
    with travel(LRA + timedelta(hours=2)):
        api.get(f"{API}/alerts/")  # stamps last_used_at once
        with django_assert_max_num_queries(4):
            api.get(f"{API}/alerts/")
        for i in range(5):
            p = make_pump(make_patient(clinic, mrn=f"X{i}"), serial=f"S{i}")
            Alert.objects.create(clinic=clinic, pump=p, kind="battery_replacement", episode=f"e{i}",
                                 severity="info", created_at=LRA)
        with django_assert_max_num_queries(4):
            assert api.get(f"{API}/alerts/").json()["count"] == 7
