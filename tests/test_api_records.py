"""``/api/v1/events/``, ``/api/v1/appointments/`` and ``/api/v1/pumps/{id}/history/``."""

from datetime import datetime

import pytest

from pumps.models import Alert, Appointment, Event
from tests.api_support import API, session_client, token_client, travel
from tests.conftest import CHICAGO
from tests.factories import make_clinic

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=CHICAGO)


@pytest.fixture
def api(clinic):
    client, _ = token_client(clinic, write=True, name="EHR")
    return client


def test_record_an_mri_event_raises_the_post_mri_check(api, pump):
    with travel(NOW):
        response = api.post(f"{API}/events/", {"pump": pump.pk, "kind": "mri", "occurred_at": "2026-03-02T08:00:00Z"},
                            format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["kind"] == "mri"
    assert body["occurred_at"] == "2026-03-02T02:00:00-06:00"
    assert Alert.objects.get(kind="post_mri_check").episode == f"mri:{body['id']}"
    assert api.get(f"{API}/events/?kind=mri").json()["count"] == 1


def test_event_validation_messages(api, pump):
    with travel(NOW):
        response = api.post(f"{API}/events/", {"pump": pump.pk, "kind": "party", "occurred_at": "2026-03-02T08:00:00"},
                            format="json")
    assert response.status_code == 400
    assert response.json() == {
        "kind": ['"party" is not a valid choice.'],
        "occurred_at": ["Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z)."],
    }
    assert Event.objects.count() == 0


def test_book_reschedule_and_complete_an_appointment(api, pump):
    with travel(NOW):
        created = api.post(f"{API}/appointments/", {"pump": pump.pk, "scheduled_for": "2026-04-09T10:30:00-05:00"},
                           format="json")
        assert created.status_code == 201
        appointment_id = created.json()["id"]
        assert created.json()["kind"] == "refill" and created.json()["status"] == "scheduled"
        moved = api.patch(f"{API}/appointments/{appointment_id}/", {"scheduled_for": "2026-04-08T09:00:00-05:00"},
                          format="json")
        assert moved.status_code == 200 and moved.json()["scheduled_for"] == "2026-04-08T09:00:00-05:00"
        done = api.patch(f"{API}/appointments/{appointment_id}/", {"status": "done"}, format="json")
    assert done.json()["status"] == "done"
    assert Appointment.objects.get().history.count() == 3
    assert api.get(f"{API}/appointments/?status=done").json()["count"] == 1


def test_appointment_icalendar_download(api, pump):
    from icalendar import Calendar

    with travel(NOW):
        appointment_id = api.post(
            f"{API}/appointments/", {"pump": pump.pk, "scheduled_for": "2026-04-09T10:30:00-05:00"}, format="json"
        ).json()["id"]
    response = api.get(f"{API}/appointments/{appointment_id}/ics/")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/calendar; charset=utf-8"
    event = Calendar.from_ical(response.content).walk("VEVENT")[0]
    assert event.decoded("dtstart") == datetime(2026, 4, 9, 10, 30, tzinfo=CHICAGO)
    assert str(event["summary"]) == "Pump refill: MRN MRN001 (AG)"


def test_other_clinic_cannot_see_or_book(pump):
    other = make_clinic(code="south", timezone="Australia/Sydney")
    api, _ = token_client(other, write=True)
    response = api.post(f"{API}/appointments/", {"pump": pump.pk, "scheduled_for": "2026-04-09T10:30:00-05:00"},
                        format="json")
    assert response.status_code == 400
    assert response.json() == {"pump": [f'Invalid pk "{pump.pk}" - object does not exist.']}


def test_viewer_cannot_record_events(clinic, pump):
    from tests.factories import make_user

    viewer = session_client(make_user("vic", clinic, "viewer"))
    with travel(NOW):
        response = viewer.post(f"{API}/events/", {"pump": pump.pk, "kind": "mri", "occurred_at": "2026-03-02T08:00:00Z"},
                               format="json")
    assert response.status_code == 403


def test_pump_history_lists_changes_with_old_and_new_values(api, pump, nurse):
    appointment_id = api.post(
        f"{API}/appointments/", {"pump": pump.pk, "scheduled_for": "2026-12-09T10:30:00-06:00"}, format="json"
    ).json()["id"]
    api.patch(f"{API}/appointments/{appointment_id}/", {"status": "cancelled"}, format="json")
    history = api.get(f"{API}/pumps/{pump.pk}/history/").json()
    latest = history[0]
    assert (latest["record"], latest["record_id"], latest["change"]) == ("appointment", appointment_id, "changed")
    assert latest["changes"]["status"] == ["scheduled", "cancelled"]
    assert latest["reason"] == "api client EHR"
    assert [h["record"] for h in history].count("pump") >= 1
    other = make_clinic(code="south", timezone="Australia/Sydney")
    stranger, _ = token_client(other)
    assert stranger.get(f"{API}/pumps/{pump.pk}/history/").status_code == 404


def test_appointment_assignee_by_username(api, pump, clinic, nurse):
    from tests.factories import make_user

    make_user("vic", clinic, "viewer")
    make_user("otto", make_clinic(code="south", timezone="Australia/Sydney"), "nurse")
    with travel(NOW):
        created = api.post(f"{API}/appointments/", {"pump": pump.pk, "scheduled_for": "2026-04-09T10:30:00-05:00",
                                                    "assigned_to": "nina"}, format="json")
        assert created.status_code == 201 and created.json()["assigned_to"] == "nina"
        appointment_id = created.json()["id"]
        for name in ("vic", "otto"):
            refused = api.post(f"{API}/appointments/", {"pump": pump.pk, "assigned_to": name,
                                                        "scheduled_for": "2026-04-10T10:30:00-05:00"}, format="json")
            assert refused.status_code == 400
            assert refused.json() == {"assigned_to": [
                f"{name} is not a nurse, pharmacist, prescriber or clinic administrator of this clinic: "
                "assign the appointment to one, or to nobody."]}
        assert api.patch(f"{API}/appointments/{appointment_id}/", {"assigned_to": "vic"},
                         format="json").status_code == 400
        kept = api.patch(f"{API}/appointments/{appointment_id}/", {"status": "done"}, format="json")
        assert kept.json()["assigned_to"] == "nina"
        assert api.get(f"{API}/appointments/?assigned_to=nina").json()["count"] == 1
        cleared = api.patch(f"{API}/appointments/{appointment_id}/", {"assigned_to": None}, format="json")
        assert cleared.status_code == 200 and cleared.json()["assigned_to"] is None
        unassigned = api.post(f"{API}/appointments/", {"pump": pump.pk, "scheduled_for": "2026-04-10T10:30:00-05:00"},
                              format="json")
    assert unassigned.json()["assigned_to"] is None
    assert Appointment.objects.filter(assigned_to__isnull=False).count() == 0
    history = api.get(f"{API}/pumps/{pump.pk}/history/").json()
    changes = [h["changes"]["assigned_to"] for h in history if "assigned_to" in h["changes"]]
    assert changes == [["nina", None]]  # audited, by username


def test_pump_history_includes_the_patients_co_medication_and_the_pumps_assessments(api, pump):
    """The audit of safety-relevant dose-and-response records reaches integrators too."""
    with travel(NOW):
        med = api.post(f"{API}/comedications/", {"patient": pump.patient_id, "name": "oxycodone 10 mg twice a day",
                                                  "category": "opioid", "started_on": "2026-03-01"}, format="json")
        assert med.status_code == 201, med.json()
        stopped = api.patch(f"{API}/comedications/{med.json()['id']}/", {"stopped_on": "2026-03-02"}, format="json")
        assert stopped.status_code == 200, stopped.json()
        history = api.get(f"{API}/pumps/{pump.pk}/history/").json()
    entries = [h for h in history if h["record"] == "comedication"]
    assert sorted((h["record_id"], h["change"]) for h in entries) == [(med.json()["id"], "changed"),
                                                                      (med.json()["id"], "created")]
    changed = next(h for h in entries if h["change"] == "changed")
    assert changed["changes"]["stopped_on"] == [None, "2026-03-02"]
