"""The alerts inbox: the user's clinics only, critical first, acknowledge (htmx and plain
form) which stops repeats; viewers cannot acknowledge; another clinic's alert is 404."""

from datetime import datetime

import pytest

from pumps import services as s
from pumps.models import Alert
from tests.factories import make_patient, make_user
from tests.pages_support import CHICAGO, signed_in, text_of, travel, worked_example

IN_ALARM = datetime(2026, 3, 28, 12, 0, tzinfo=CHICAGO)


@pytest.fixture
def alarm(patient, nurse):
    """26 mL at 0.45 mL/day: worst-case alarm 2026-03-27 18:00 CDT, due Friday 03-20, empty 04-01 04:40 CDT."""
    pump = worked_example(patient, s.Actor(nurse), added="26")
    from pumps.alerts import evaluate_pump

    pump.refresh_from_db()
    evaluate_pump(pump, IN_ALARM)
    return pump


def test_inbox_lists_open_alerts_critical_first(alarm, nurse, other_clinic):
    other = worked_example(make_patient(other_clinic, mrn="Z1"), s.Actor(None, "t"), added="26", serial="Z")
    from pumps.alerts import evaluate_pump

    evaluate_pump(other, IN_ALARM)
    with travel(IN_ALARM):
        text = text_of(signed_in(nurse).get("/alerts/").content.decode())
    assert "3 alerts, critical first" in text
    assert text.index("critical Low reservoir") < text.index("warning Unverified program")
    assert "warning Refill overdue refill was due on 2026-03-20" in text
    assert "MRN MRN001 (AG)" in text
    assert "Z1" not in text


def test_acknowledge_with_htmx_swaps_the_row(alarm, nurse):
    alert = Alert.objects.get(pump=alarm, kind="low_reservoir")
    with travel(IN_ALARM):
        response = signed_in(nurse).post(f"/alerts/{alert.pk}/acknowledge/", headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith(f'<tr id="alert-{alert.pk}">')
    assert "Acknowledged by nina 2026-03-28 12:00 CDT" in text_of(html)
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.acknowledged_at, alert.next_repeat_at) == (nurse, IN_ALARM, None)


def test_acknowledge_from_the_pump_page_without_javascript(alarm, nurse):
    alert = Alert.objects.get(pump=alarm, kind="refill_overdue")
    with travel(IN_ALARM):
        client = signed_in(nurse)
        page = client.get(f"/pumps/{alarm.pk}/").content.decode()
        assert f'action="/alerts/{alert.pk}/acknowledge/"' in page
        response = client.post(f"/alerts/{alert.pk}/acknowledge/", {"next": f"/pumps/{alarm.pk}/"})
        assert response.status_code == 302
        assert response["Location"] == f"/pumps/{alarm.pk}/"
        unsafe = client.post(f"/alerts/{alert.pk}/acknowledge/", {"next": "https://evil.example/"})
    assert unsafe["Location"] == "/alerts/"
    alert.refresh_from_db()
    assert alert.acknowledged_by == nurse


def test_open_filter_hides_acknowledged_alerts(alarm, nurse):
    alert = Alert.objects.get(pump=alarm, kind="low_reservoir")
    with travel(IN_ALARM):
        client = signed_in(nurse)
        client.post(f"/alerts/{alert.pk}/acknowledge/")
        open_only = text_of(client.get("/alerts/").content.decode())
        everything = text_of(client.get("/alerts/?show=all&severity=critical").content.decode())
    assert "2 alerts, critical first" in open_only
    assert "Low reservoir" not in open_only
    assert "1 alert, critical first" in everything
    assert "Acknowledged by nina" in everything


def test_viewer_cannot_acknowledge(alarm, clinic):
    viewer = make_user("vera", clinic, "viewer")
    alert = Alert.objects.get(pump=alarm, kind="low_reservoir")
    with travel(IN_ALARM):
        client = signed_in(viewer)
        inbox = client.get("/alerts/").content.decode()
        denied = client.post(f"/alerts/{alert.pk}/acknowledge/")
    assert "Acknowledge</button>" not in inbox
    assert denied.status_code == 403
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_another_clinics_alert_is_not_found(alarm, other_clinic):
    outsider = make_user("otto", other_clinic, "nurse")
    alert = Alert.objects.get(pump=alarm, kind="low_reservoir")
    with travel(IN_ALARM):
        assert signed_in(outsider).post(f"/alerts/{alert.pk}/acknowledge/").status_code == 404
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_notifications_that_kept_failing_are_shown_to_staff_of_that_clinic_only(alarm, nurse, other_clinic):
    from pumps.models import Notification

    alert = Alert.objects.filter(pump=alarm, kind="low_reservoir").first()
    Notification.objects.create(
        alert=alert, clinic=alarm.clinic, kind="low_reservoir", recipient="gone@clinic.example", status="failed",
        attempts=10, last_error="SMTPRecipientsRefused: 550 no such user", next_attempt_at=IN_ALARM,
        created_at=IN_ALARM,
    )
    with travel(IN_ALARM):
        worklist = text_of(signed_in(nurse).get("/").content.decode())
        inbox = text_of(signed_in(nurse).get("/alerts/").content.decode())
        stranger = make_user("olga", other_clinic, "nurse")
        elsewhere = text_of(signed_in(stranger).get("/").content.decode())
    assert "1 alert notification could not be delivered." in worklist
    assert "Notifications that could not be delivered" in inbox
    assert "low_reservoir MRN MRN001 gone@clinic.example 10 SMTPRecipientsRefused: 550 no such user" in inbox
    assert "could not be delivered" not in elsewhere
