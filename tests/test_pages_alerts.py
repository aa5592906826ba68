"""The alerts inbox: the user's clinics only, critical first, acknowledge (htmx and plain
form) which stops repeats; a critical alert is acknowledged only with a reason, shown with
who and when in the inbox and on the pump page; viewers cannot acknowledge; another
clinic's alert is 404."""

from datetime import datetime

import pytest

from pumps import services as s
from pumps.models import Alert
from tests.factories import make_patient, make_user
from tests.pages_support import (
    CHICAGO,
    assert_no_inline_script,
    signed_in,
    text_of,
    travel,
    worked_example,
)

IN_ALARM = datetime(2026, 3, 28, 12, 0, tzinfo=CHICAGO)


@pytest.fixture
def alarm(patient, nurse):
    """26 mL at 0.45 mL/day: worst-case alarm 2026-03-27 18:00 CDT, due Friday 03-20, empty 04-01 04:40 CDT."""
    pump = worked_example(patient, s.Actor(nurse), added="26")
    from pumps.alerting.evaluate import evaluate_pump

    pump.refresh_from_db()
    evaluate_pump(pump, IN_ALARM)
    return pump


def test_inbox_lists_open_alerts_critical_first(alarm, nurse, other_clinic):
    other = worked_example(make_patient(other_clinic, mrn="Z1"), s.Actor(None, "t"), added="26", serial="Z")
    from pumps.alerting.evaluate import evaluate_pump

    evaluate_pump(other, IN_ALARM)
    with travel(IN_ALARM):
        text = text_of(signed_in(nurse).get("/alerts/").content.decode())
    assert "3 alerts, critical first" in text
    assert text.index("critical Low reservoir") < text.index("warning Unverified program")
    assert "warning Refill overdue refill was due on 2026-03-20" in text
    assert "MRN MRN001 (AG)" in text
    assert "Z1" not in text


def test_an_older_critical_alert_is_listed_before_newer_warnings_when_the_inbox_is_full(alarm, nurse, monkeypatch):
    """The inbox shows the most urgent alerts (``ALERT_INBOX_LIMIT``), ordered by the
    database: the critical alert raised first is not pushed out by newer warnings, and the
    caption says that more match."""
    from pumps import selectors

    critical = Alert.objects.get(pump=alarm, severity="critical")
    Alert.objects.filter(pk=critical.pk).update(created_at=datetime(2026, 3, 1, 9, 0, tzinfo=CHICAGO))
    monkeypatch.setattr(selectors, "ALERT_INBOX_LIMIT", 1)
    with travel(IN_ALARM):
        text = text_of(signed_in(nurse).get("/alerts/").content.decode())
    assert "The 1 most urgent alerts, critical first; more match: narrow them by severity or kind" in text
    assert "critical Low reservoir" in text
    assert "Unverified program" not in text and "Refill overdue" not in text


def test_acknowledge_with_htmx_swaps_the_row(alarm, nurse):
    alert = Alert.objects.get(pump=alarm, kind="refill_overdue")  # a warning: one click
    with travel(IN_ALARM):
        response = signed_in(nurse).post(f"/alerts/{alert.pk}/acknowledge/", {"layout": "row"},
                                         headers={"HX-Request": "true"})
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
        client.post(f"/alerts/{alert.pk}/acknowledge/", {"reason": "refill booked today"})
        open_only = text_of(client.get("/alerts/").content.decode())
        everything = text_of(client.get("/alerts/?show=all&severity=critical").content.decode())
    assert "2 alerts, critical first" in open_only
    assert "Low reservoir" not in open_only
    assert "1 alert, critical first" in everything
    assert "Acknowledged by nina 2026-03-28 12:00 CDT: “refill booked today”" in everything


REASON_LABEL = '<label for="ack-reason-{pk}">Reason for acknowledging this critical alert</label>'
MSG_ACK_REASON = "Give a reason to acknowledge a critical alert: what was done, or why it can wait."


def test_a_critical_alert_asks_for_a_reason_a_warning_takes_one_click(alarm, nurse):
    critical = Alert.objects.get(pump=alarm, kind="low_reservoir")
    warning = Alert.objects.get(pump=alarm, kind="refill_overdue")
    with travel(IN_ALARM):
        client = signed_in(nurse)
        inbox = client.get("/alerts/").content.decode()
        pump_page = client.get(f"/pumps/{alarm.pk}/").content.decode()
    for html in (inbox, pump_page):
        row = html[html.index(f'id="alert-{critical.pk}"'):]
        row = row[:row.index(f'id="alert-{warning.pk}"')] if f'id="alert-{warning.pk}"' in row else row
        assert REASON_LABEL.format(pk=critical.pk) in html
        assert (f'<textarea id="ack-reason-{critical.pk}" name="reason" rows="2" maxlength="500" required '
                f'aria-required="true"') in html
        assert "Confirm acknowledgement</button>" in row
        assert REASON_LABEL.format(pk=warning.pk) not in html
        assert 'aria-label="Acknowledge refill overdue alert for MRN MRN001">Acknowledge</button>' in html
        assert_no_inline_script(html)


def test_a_critical_alert_without_a_reason_shows_the_services_message(alarm, nurse):
    alert = Alert.objects.get(pump=alarm, kind="low_reservoir")
    with travel(IN_ALARM):
        client = signed_in(nurse)
        swapped = client.post(f"/alerts/{alert.pk}/acknowledge/", {"layout": "row", "reason": "  ", "next": "/alerts/"},
                              headers={"HX-Request": "true"})
        plain = client.post(f"/alerts/{alert.pk}/acknowledge/", {"layout": "item", "next": f"/pumps/{alarm.pk}/"})
    fragment = swapped.content.decode()
    assert swapped.status_code == 200  # htmx swaps only a 2xx answer: the row comes back with the message
    assert fragment.lstrip().startswith(f'<tr id="alert-{alert.pk}">')
    assert (f'<ul class="errorlist" id="ack-reason-{alert.pk}-error"><li>{MSG_ACK_REASON}</li></ul>') in fragment
    assert 'aria-invalid="true"' in fragment
    assert '<details class="ack-confirm" open>' in fragment
    page = plain.content.decode()
    assert plain.status_code == 400
    assert "Acknowledge a critical alert" in text_of(page)
    assert f"<li>{MSG_ACK_REASON}</li>" in page
    assert f'<input type="hidden" name="next" value="/pumps/{alarm.pk}/">' in page
    alert.refresh_from_db()
    assert (alert.acknowledged_at, alert.acknowledgement_reason) == (None, "")


def test_a_critical_alert_acknowledged_with_a_reason_shows_who_when_and_why(alarm, nurse):
    alert = Alert.objects.get(pump=alarm, kind="low_reservoir")
    reason = "Patient reached by phone; refill today 14:00"
    with travel(IN_ALARM):
        client = signed_in(nurse)
        swapped = client.post(f"/alerts/{alert.pk}/acknowledge/", {"layout": "row", "reason": reason},
                              headers={"HX-Request": "true"})
        inbox = text_of(client.get("/alerts/?show=all").content.decode())
        pump_page = text_of(client.get(f"/pumps/{alarm.pk}/").content.decode())
        worklist = text_of(client.get("/").content.decode())
    done = f"Acknowledged by nina 2026-03-28 12:00 CDT: “{reason}”"
    assert swapped.status_code == 200
    assert done in text_of(swapped.content.decode())
    assert done in inbox
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.acknowledged_at, alert.acknowledgement_reason) == (nurse, IN_ALARM, reason)
    # the pump page: still open (the reservoir is still low), with who, when and why
    assert done in pump_page
    assert (f"Critical: low reservoir — {alert.message} (raised 2026-03-28 12:00 CDT (now); acknowledged by nina "
            f"2026-03-28 12:00 CDT (now): “{reason}”)") in pump_page
    assert f"acknowledged by nina 2026-03-28 12:00 CDT: “{reason}”" in pump_page  # alert history
    assert (f"2026-03-28 12:00 CDT nina Alert #{alert.pk} changed acknowledged at: — → 2026-03-28T12:00-05:00 "
            f"acknowledged by: — → nina acknowledgement reason: — → {reason}") in pump_page  # audit history
    # the worklist names who acknowledged it
    assert "Critical: low reservoir acknowledged by nina; +2 open" in worklist


def test_viewer_cannot_acknowledge(alarm, clinic):
    viewer = make_user("vera", clinic, "viewer")
    alert = Alert.objects.get(pump=alarm, kind="low_reservoir")
    with travel(IN_ALARM):
        client = signed_in(viewer)
        inbox = client.get("/alerts/").content.decode()
        denied = client.post(f"/alerts/{alert.pk}/acknowledge/")
    assert "Acknowledge</button>" not in inbox and "Confirm acknowledgement" not in inbox
    assert denied.status_code == 403
    assert "Your role in this clinic does not allow acknowledging alerts." in denied.content.decode()
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


def test_undelivered_notifications_newest_first_and_one_narrow_query_when_there_are_none(alarm, nurse):
    from datetime import timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from pumps import selectors
    from pumps.models import Notification

    with CaptureQueriesContext(connection) as queries:
        assert selectors.undelivered_notifications(nurse) == []
    assert len(queries) == 1  # the ids only: the wide join is read when some kept failing
    alert = Alert.objects.filter(pump=alarm, kind="low_reservoir").first()
    for recipient, created in (("older@clinic.example", IN_ALARM - timedelta(hours=1)),
                               ("newer@clinic.example", IN_ALARM)):
        Notification.objects.create(alert=alert, clinic=alarm.clinic, kind="low_reservoir", recipient=recipient,
                                    status="failed", attempts=10, next_attempt_at=created, created_at=created)
    assert [n.recipient for n in selectors.undelivered_notifications(nurse)] == [
        "newer@clinic.example", "older@clinic.example"]
    assert [n.recipient for n in selectors.undelivered_notifications(nurse, limit=1)] == ["newer@clinic.example"]
    shown = selectors.undelivered_notifications(nurse)[0]
    with CaptureQueriesContext(connection) as queries:
        assert shown.alert.pump.patient.mrn == "MRN001"
    assert len(queries) == 0  # read with its alert, pump and patient
