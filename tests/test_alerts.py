"""Alerting (docs/clinical-rules.md, section 11): which alerts, exactly once, repeats, escalation, acknowledgement,
outbox retries, digest and heartbeat. E-mails are read from Django's test outbox here;
tests/test_alerts_smtp.py reads them from a real SMTP server."""

import re
from datetime import date, datetime, timedelta
from decimal import Decimal as D

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clinic.models import AlertRecipient, Membership
from pumps import outbox
from pumps import services as s
from pumps.alerting.acknowledge import acknowledge
from pumps.alerting.evaluate import create_alert, evaluate_pump, notify
from pumps.alerting.rules import Wanted
from pumps.alerting.stalled import raise_stalled
from pumps.alerting.sweep import due_pumps, sweep, sweep_pumps, sweep_pumps_one_by_one
from pumps.models import Alert, DeliveryAttempt, Notification, Program, SweepRun
from tests.conftest import CHICAGO
from tests.factories import make_patient, make_pump, make_user

T0 = datetime(2026, 2, 2, 9, 0, tzinfo=CHICAGO)
LRA = datetime(2026, 4, 18, 23, 20, tzinfo=CHICAGO)  # the worked example's worst-case LRA
WRITE_NOW = datetime(2026, 2, 2, 12, 0, tzinfo=CHICAGO)


@pytest.fixture
def recipients(clinic, nurse):
    AlertRecipient.objects.create(clinic=clinic, email="ward@clinic.example")
    AlertRecipient.objects.create(clinic=clinic, email="oncall@clinic.example", escalation=True)
    nurse.email = "nina@clinic.example"
    nurse.save()
    Membership.objects.filter(user=nurse).update(receives_alerts=True)
    return ["nina@clinic.example", "ward@clinic.example"]


@pytest.fixture
def second_prescriber(clinic):
    return make_user("dr_lee", clinic, "prescriber")


@pytest.fixture
def filled(pump, clinic, nurse, prescriber, recipients):
    """The worked-example pump: refill with program at T0 (a prescriber enters the
    program), program verified by a second prescriber. (Other test modules import this
    fixture: it asks only for fixtures of tests/conftest.py and ``recipients``.)"""
    second_prescriber = get_user_model().objects.filter(username="dr_lee").first() or make_user(
        "dr_lee", clinic, "prescriber")
    s.record_refill(
        pump=pump, performed_at=T0, added_volume_ml=D(36), concentration_mcg_per_ml=D(1000),
        actor=s.Actor(prescriber),
        program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)), now=WRITE_NOW,
    )
    s.verify_program(program=Program.objects.get(), actor=s.Actor(second_prescriber), now=WRITE_NOW)
    pump.refresh_from_db()
    return pump


def sweep_and_send(now):
    result = sweep(now)
    outbox.deliver_due(now)
    return result


def sent(kind):
    return [m for m in mail.outbox if m.extra_headers["X-Clinic-Alert-Kind"] == kind]


def test_nothing_before_the_due_soon_window(filled):
    result = sweep_and_send(datetime(2026, 3, 20, 12, tzinfo=CHICAGO))
    assert result.pumps_checked == 0
    assert Alert.objects.count() == 0
    assert [m.extra_headers["X-Clinic-Alert-Kind"] for m in mail.outbox] == ["digest", "digest"]


def test_due_soon_creates_info_alerts_for_the_digest_only(filled):
    """Due soon and nothing booked: the status (refill_due_soon) and the missing booking
    (refill_unbooked), both info, both about the fill, neither e-mailed on its own."""
    sweep_and_send(datetime(2026, 3, 27, 0, 30, tzinfo=CHICAGO))
    fill = f"fill:{filled.refills.get().pk}"
    assert sorted(Alert.objects.values_list("kind", "severity", "episode")) == [
        ("refill_due_soon", "info", fill), ("refill_unbooked", "info", fill)]
    assert mail.outbox == []  # before the 07:00 digest hour, and neither is ever e-mailed alone


def test_booked_refill_appointment_means_no_unbooked_alert(filled, nurse):
    s.schedule_appointment(pump=filled, scheduled_for=datetime(2026, 4, 9, 10, tzinfo=CHICAGO), actor=s.Actor(nurse),
                           now=WRITE_NOW)
    sweep_and_send(datetime(2026, 3, 27, 0, 30, tzinfo=CHICAGO))
    assert list(Alert.objects.values_list("kind", flat=True)) == ["refill_due_soon"]  # the status only


def test_low_reservoir_email_exactly_once_per_recipient_however_many_sweeps(filled):
    now = LRA + timedelta(minutes=40)  # 2026-04-19 00:00 CDT
    for _ in range(3):
        sweep_and_send(now)
        evaluate_pump(filled, now)  # even a direct re-evaluation adds nothing
        sweep_and_send(now + timedelta(minutes=5))
    low = sent("low_reservoir")
    assert sorted(m.to[0] for m in low) == ["nina@clinic.example", "ward@clinic.example"]
    assert Alert.objects.filter(kind="low_reservoir").count() == 1


def test_low_reservoir_email_content_headers_and_least_patient_data(filled):
    sweep_and_send(LRA + timedelta(minutes=40))
    message = sent("low_reservoir")[0]
    alert = Alert.objects.get(kind="low_reservoir")
    assert message.subject == "[CRITICAL] Low reservoir: MRN MRN001 (AG)"
    assert message.extra_headers == {
        "X-Clinic-Alert-Kind": "low_reservoir",
        "X-Clinic-Alert-Severity": "critical",
        "X-Clinic-Alert-Id": str(alert.pk),
    }
    body = message.body
    assert body.splitlines() == [
        "CRITICAL: Low reservoir",
        "",
        "Clinic: North Spasticity Clinic",
        "Patient: MRN MRN001 (AG)",
        "Pump: Medtronic SynchroMed II 8637-40, serial SN-0001",
        "When: 2026-04-18 23:20 CDT (40 minutes ago)",
        "Detail: The reservoir has been at or below the alarm volume (worst case) since 2026-04-18 23:20 CDT"
        " (40 minutes ago).",
        "",
        "What to do: The reservoir is at or below the low-reservoir alarm volume (worst case). Refill now; "
        "confirm the patient is well and can reach the clinic.",
        "",
        f"Open the pump: https://pumps.example.org/pumps/{filled.pk}/#summary",
        "",
        f"Alert #{alert.pk}, raised 2026-04-19 00:00 CDT; this e-mail sent 2026-04-19 00:00 CDT. Times in America/Chicago.",
        "Acknowledge it in the clinic app to stop reminders (a critical alert needs a reason).",
        "",
    ]
    assert alert.message == "at or below the alarm volume (worst case) since 2026-04-18 23:20 CDT"
    html = message.alternatives[0]
    assert html[1] == "text/html"
    assert f'href="https://pumps.example.org/pumps/{filled.pk}/#summary"' in html[0]
    assert "<tr><th align=\"left\">When</th><td>2026-04-18 23:20 CDT (40 minutes ago)</td></tr>" in html[0]
    for text in (body, html[0]):
        assert "Garcia" not in text and "Ana" not in text  # never the full name


def test_overdue_and_low_reservoir_together(filled):
    sweep_and_send(LRA + timedelta(minutes=40))
    assert sorted(Alert.objects.values_list("kind", "severity")) == [
        ("low_reservoir", "critical"), ("refill_overdue", "warning"),
    ]
    assert len(sent("refill_overdue")) == 2


def test_low_reservoir_repeats_every_4_hours_and_escalates_after_4_hours(filled):
    start = LRA + timedelta(minutes=40)
    sweep_and_send(start)
    sweep_and_send(start + timedelta(hours=3, minutes=59))
    assert len(sent("low_reservoir")) == 2
    sweep_and_send(start + timedelta(hours=4))
    low = sent("low_reservoir")
    assert len(low) == 5  # 2 first, then 3: the escalation address joins
    assert sorted(m.to[0] for m in low[2:]) == ["nina@clinic.example", "oncall@clinic.example", "ward@clinic.example"]
    assert all(m.subject.endswith("(reminder 1)") for m in low[2:])
    assert "[escalated]" in low[-1].body


def test_acknowledging_stops_repeats(filled, nurse):
    start = LRA + timedelta(minutes=40)
    sweep_and_send(start)
    alert = Alert.objects.get(kind="low_reservoir")
    acknowledge(alert, user=nurse, reason="Refill booked for 08:00 today", now=start + timedelta(hours=1))
    sweep_and_send(start + timedelta(hours=8))
    assert len(sent("low_reservoir")) == 2
    alert.refresh_from_db()
    assert alert.acknowledged_by == nurse and alert.next_repeat_at is None
    assert alert.acknowledgement_reason == "Refill booked for 08:00 today"
    assert alert.resolved_at is None  # acknowledged, still open while the pump is at its alarm


def test_withdrawal_risk_escalates_at_once_and_repeats_every_2_hours(filled):
    start = datetime(2026, 4, 20, 10, 0, tzinfo=CHICAGO)  # empty 04-23 10:00 minus 72 h
    sweep_and_send(start)
    first = sent("withdrawal_risk")
    assert sorted(m.to[0] for m in first) == [
        "nina@clinic.example", "oncall@clinic.example", "ward@clinic.example",
    ]
    sweep_and_send(start + timedelta(hours=2))
    assert len(sent("withdrawal_risk")) == 6


def test_new_refill_resolves_the_old_episode(filled, nurse):
    now = LRA + timedelta(minutes=40)
    sweep_and_send(now)
    s.record_refill(
        pump=filled, performed_at=now + timedelta(hours=9), extracted_volume_ml=D("1.5"), added_volume_ml=D(36),
        concentration_mcg_per_ml=D(1000), actor=s.Actor(nurse), now=now + timedelta(hours=9, minutes=5),
    )
    old = Alert.objects.filter(kind__in=["low_reservoir", "refill_overdue"])
    assert [(a.resolved_at is not None, a.resolution) for a in old] == [(True, "a new refill was recorded")] * 2
    sweep_and_send(now + timedelta(hours=20))
    assert len(sent("low_reservoir")) == 2  # no repeat of a resolved alert


def test_flagged_refill_raises_one_residual_discrepancy_alert(filled, nurse):
    refill = s.record_refill(
        pump=filled, performed_at=datetime(2026, 3, 28, 9, tzinfo=CHICAGO), extracted_volume_ml=D("9"),
        added_volume_ml=D(25), concentration_mcg_per_ml=D(1000), actor=s.Actor(nurse),
        now=datetime(2026, 3, 28, 12, tzinfo=CHICAGO),
    )
    alert = Alert.objects.get(kind="residual_discrepancy")
    assert alert.episode == f"refill:{refill.pk}" and alert.severity == "warning"
    assert alert.message.startswith("less drug than expected remained")
    outbox.deliver_due(datetime(2026, 3, 28, 12, tzinfo=CHICAGO))
    sweep_and_send(datetime(2026, 3, 30, 12, tzinfo=CHICAGO))
    assert len(sent("residual_discrepancy")) == 2
    assert "Detail: less drug than expected remained" in sent("residual_discrepancy")[0].body
    lines = sent("residual_discrepancy")[0].body.splitlines()
    assert lines[5:7] == [  # the volumes as the pages show them (mL, two decimals)
        "When: 2026-03-28 09:00 CDT (3 hours ago)",
        "Refill: 25 mL added; 9 mL extracted of 11.72 mL expected (discrepancy -2.72 mL)",
    ]


def test_mri_on_synchromed_needs_a_reading_after_it(filled, nurse):
    mri_at = datetime(2026, 3, 2, 8, tzinfo=CHICAGO)
    s.record_event(pump=filled, kind="mri", occurred_at=mri_at, actor=s.Actor(nurse), now=mri_at + timedelta(hours=2))
    alert = Alert.objects.get(kind="post_mri_check")
    assert alert.severity == "critical"
    s.record_reading(pump=filled, read_at=mri_at + timedelta(hours=3), reservoir_volume_ml=D("22"),
                     actor=s.Actor(nurse), now=mri_at + timedelta(hours=3))
    alert.refresh_from_db()
    assert alert.resolved_at is not None and alert.resolution == "condition cleared"


def test_unverified_program_after_24_hours(pump, prescriber, recipients):
    s.record_refill(
        pump=pump, performed_at=T0, added_volume_ml=D(36), concentration_mcg_per_ml=D(1000),
        actor=s.Actor(prescriber),
        program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)), now=WRITE_NOW,
    )
    sweep_and_send(WRITE_NOW + timedelta(hours=23, minutes=59))
    assert not Alert.objects.filter(kind="unverified_program").exists()
    sweep_and_send(WRITE_NOW + timedelta(hours=24))
    assert Alert.objects.get(kind="unverified_program").episode == f"program:{Program.objects.get().pk}"
    assert len(sent("unverified_program")) == 2


def test_battery_alerts_180_and_90_days_before_end_of_service(filled):
    # 8637-40 implanted 2026-01-15: expected end of service 2033-01-15
    filled.expected_end_of_service = date(2026, 9, 30)
    filled.save()
    s.store_projection(filled, now=datetime(2026, 3, 1, tzinfo=CHICAGO))
    filled.refresh_from_db()
    assert filled.next_change_at == datetime(2026, 3, 27, 0, 0, tzinfo=CHICAGO)  # due-soon window first
    evaluate_pump(filled, datetime(2026, 4, 3, 12, tzinfo=CHICAGO))  # 180 days before: 04-03
    assert list(Alert.objects.filter(kind="battery_replacement").values_list("episode", "severity")) == [
        ("eos-180:2026-09-30", "info")
    ]


def test_failing_smtp_is_retried_with_backoff_and_logged(filled, settings, monkeypatch):
    now = LRA + timedelta(minutes=40)
    calls = {"n": 0}

    def broken_send(self, fail_silently=False):
        calls["n"] += 1
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    monkeypatch.setattr("django.core.mail.EmailMultiAlternatives.send", broken_send)
    sweep_and_send(now)
    note = Notification.objects.filter(kind="low_reservoir").order_by("recipient").first()
    assert (note.status, note.attempts) == ("pending", 1)
    assert note.next_attempt_at == now + timedelta(seconds=15)  # critical: after 15 s, then every 30 s
    assert note.last_error == "ConnectionRefusedError: [Errno 111] Connection refused"
    overdue = Notification.objects.filter(kind="refill_overdue").order_by("recipient").first()
    assert overdue.next_attempt_at == now + timedelta(minutes=1)  # others: after 1, 2, 4 ... minutes
    outbox.deliver_due(now + timedelta(seconds=10))  # not yet due again
    note.refresh_from_db()
    assert note.attempts == 1
    outbox.deliver_due(now + timedelta(seconds=15))
    note.refresh_from_db()
    assert note.attempts == 2 and note.next_attempt_at == now + timedelta(seconds=45)
    assert list(DeliveryAttempt.objects.filter(notification=note).values_list("ok", flat=True)) == [False, False]
    monkeypatch.undo()
    outbox.deliver_due(now + timedelta(seconds=45))
    note.refresh_from_db()
    assert note.status == "sent"
    assert len(sent("low_reservoir")) == 2  # nothing lost


def test_notification_failing_ten_times_is_marked_failed(filled, monkeypatch):
    now = LRA + timedelta(minutes=40)
    monkeypatch.setattr(
        "django.core.mail.EmailMultiAlternatives.send",
        lambda self, fail_silently=False: (_ for _ in ()).throw(OSError("smtp down")),
    )
    sweep_and_send(now)
    moment = now
    for _ in range(12):
        moment += timedelta(hours=1)
        outbox.deliver_due(moment)
    notes = Notification.objects.filter(kind="low_reservoir")
    assert {n.status for n in notes} == {"failed"}
    assert {n.attempts for n in notes} == {10}


def test_worker_killed_after_claim_is_resent_at_least_once(filled):
    now = LRA + timedelta(minutes=40)
    sweep(now)
    note = Notification.objects.filter(kind="low_reservoir").first()
    assert outbox.claim(note.pk, now)  # a worker claimed it, then died before recording
    assert not outbox.claim(note.pk, now + timedelta(seconds=59))  # the claim still stands
    outbox.deliver_due(now + timedelta(seconds=30))
    assert note.recipient not in [m.to[0] for m in sent("low_reservoir")]
    outbox.deliver_due(now + timedelta(seconds=61))  # stale claim (after 60 s): delivered again
    assert note.recipient in [m.to[0] for m in sent("low_reservoir")]


def test_a_claimed_notification_cannot_be_claimed_twice(filled):
    now = LRA + timedelta(minutes=40)
    sweep(now)
    note = Notification.objects.first()
    assert outbox.claim(note.pk, now) is True
    assert outbox.claim(note.pk, now) is False


def test_daily_digest_once_per_recipient_at_the_digest_hour(filled):
    sweep(datetime(2026, 3, 30, 6, 59, tzinfo=CHICAGO))
    assert not Notification.objects.filter(kind="digest").exists()
    for minute in (0, 5, 10):
        sweep_and_send(datetime(2026, 3, 30, 7, minute, tzinfo=CHICAGO))
    digests = sent("digest")
    assert sorted(m.to[0] for m in digests) == ["nina@clinic.example", "ward@clinic.example"]
    message = digests[0]
    assert message.subject == "[north] Daily pump digest 2026-03-30"
    assert message.body.splitlines()[:2] == [
        "Daily pump digest — North Spasticity Clinic — 2026-03-30 (Mon)",
        "Times in America/Chicago; as of 2026-03-30 07:00 CDT.",
    ]
    assert "Refill due soon (1)" in message.body
    assert (
        f"- MRN MRN001 (AG), 8637-40 #SN-0001: due soon: refill due on 2026-04-10 (in 11 days); low-reservoir "
        f"alarm 2026-04-18 23:20 CDT (in 19 days) — https://pumps.example.org/pumps/{filled.pk}/#summary"
    ) in message.body.splitlines()
    assert "Garcia" not in message.body


def test_sweep_records_a_heartbeat_and_run_alert_sweep_command_uses_it(filled, capsys):
    call_command("run_alert_sweep")
    run = SweepRun.objects.get()
    assert run.finished_at >= run.started_at
    assert "checked" in capsys.readouterr().out


def test_sweep_reads_only_pumps_due_by_now(filled, django_assert_num_queries):
    # one indexed query for the due set; nothing else touches pumps when none is due
    assert list(due_pumps(datetime(2026, 3, 1, tzinfo=CHICAGO))) == []
    assert list(due_pumps(datetime(2026, 3, 27, 0, 0, tzinfo=CHICAGO))) == [filled]


def _query_shape(sql: str) -> str:
    if sql.startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):
        return sql.rsplit(" ", 1)[0]
    verb = sql.lstrip("(").split(" ", 1)[0]
    table = re.search(r'(?:FROM|INTO|UPDATE) "(\w+)"', sql).group(1)
    return f"{verb} {table}"


def _sweep_in_alarm(filled, path):
    in_alarm = datetime(2026, 4, 19, 0, 0, tzinfo=CHICAGO)
    with CaptureQueriesContext(connection) as queries:
        result = path([filled.pk], in_alarm)
    assert (result.pumps_checked, result.alerts_created) == (1, 2)
    assert sorted(Alert.objects.values_list("kind", flat=True)) == ["low_reservoir", "refill_overdue"]
    return [_query_shape(q["sql"]) for q in queries.captured_queries]


@pytest.mark.postgres
def test_sweep_reads_a_due_pumps_records_once(filled):
    """The sweep's set-based path: the projection and the alert plan share one read of the
    refills, readings and programs; a chunk of due pumps costs a fixed list of statements,
    whatever their histories and however many alerts they raise."""
    assert _sweep_in_alarm(filled, sweep_pumps) == [
        "SAVEPOINT",  # the chunk's transaction (BEGIN outside a test)
        "SELECT pumps_pump",  # the chunk's due pumps, locked (SKIP LOCKED)
        "SELECT pumps_refill", "SELECT pumps_reading", "SELECT pumps_program",  # their records, once
        "SELECT clinic_clinicclosure",  # their clinics' closures, once
        "UPDATE pumps_pump",  # the stored projections, one statement
        "SELECT pumps_event",  # MRIs (this model stalls in an MRI)
        "SELECT pumps_appointment",  # booked refills (the rule of refill_unbooked)
        "SELECT pumps_alert",  # their alerts, once
        "INSERT pumps_alert", "INSERT pumps_historicalalert",  # the new alerts and their audit rows
        "SELECT clinic_alertrecipient", "SELECT clinic_apiclient",  # who is told, once per clinic
        "INSERT pumps_notification",  # the outbox rows of every new alert
        "RELEASE SAVEPOINT",  # COMMIT
    ]


def test_the_pump_by_pump_path_reads_a_due_pumps_records_once(filled):
    """The pump-by-pump path (other databases, a chunk that failed): one read of the
    pump's records for the projection and the alert plan, the same plan as a chunk's."""
    if connection.vendor == "postgresql":  # INSERT … ON CONFLICT DO NOTHING RETURNING, and their audit rows
        inserts = ["INSERT pumps_alert", "INSERT pumps_historicalalert"]
    else:  # one savepoint per alert
        inserts = ["SAVEPOINT", "INSERT pumps_alert", "INSERT pumps_historicalalert", "RELEASE SAVEPOINT"] * 2
    assert _sweep_in_alarm(filled, sweep_pumps_one_by_one) == [
        "SAVEPOINT",  # the pump's transaction (BEGIN outside a test)
        "SELECT pumps_pump",  # locked
        "SELECT pumps_refill", "SELECT pumps_reading", "SELECT pumps_program",  # its records, once
        "SELECT clinic_clinicclosure",
        "UPDATE pumps_pump",  # the stored projection
        "SELECT pumps_alert",  # its alerts, once
        "SELECT pumps_event",  # MRIs (this model stalls in an MRI)
        *inserts,
        "SELECT clinic_alertrecipient", "SELECT clinic_apiclient",  # who is told
        "INSERT pumps_notification",  # the outbox rows of both alerts
        "RELEASE SAVEPOINT",  # COMMIT
    ]


def test_health_is_503_when_last_sweep_older_than_three_intervals(client, db):
    from django.utils import timezone

    now = timezone.now()
    SweepRun.objects.create(started_at=now - timedelta(minutes=16), finished_at=now - timedelta(minutes=15, seconds=1))
    assert client.get("/health/").status_code == 503
    SweepRun.objects.create(started_at=now - timedelta(minutes=15), finished_at=now - timedelta(minutes=14))
    assert client.get("/health/").status_code == 200


def test_alert_email_carries_the_booked_refill_appointment_as_icalendar(filled, nurse):
    from icalendar import Calendar

    when = LRA + timedelta(hours=10)
    appointment = s.schedule_appointment(pump=filled, scheduled_for=when, actor=s.Actor(nurse), now=WRITE_NOW)
    sweep_and_send(LRA + timedelta(minutes=40))
    message = sent("low_reservoir")[0]
    name, content, mimetype = message.attachments[0]
    assert (name, mimetype) == (f"refill-appointment-{appointment.pk}.ics", "text/calendar")
    event = Calendar.from_ical(content).walk("VEVENT")[0]
    assert event.decoded("dtstart") == when
    assert str(event["summary"]) == "Pump refill: MRN MRN001 (AG)"
    assert "Garcia" not in str(content)


def test_digest_lists_notifications_that_could_not_be_delivered(filled, recipients):
    from clinic.models import Clinic

    Notification.objects.create(
        clinic=Clinic.objects.get(code="north"), kind="low_reservoir", recipient="gone@clinic.example",
        status="failed", attempts=10, last_error="SMTPRecipientsRefused: 550 no such user",
        next_attempt_at=WRITE_NOW, created_at=WRITE_NOW,
    )
    sweep_and_send(datetime(2026, 3, 30, 7, 0, tzinfo=CHICAGO))
    digest = sent("digest")[0]
    assert "Notifications that could not be delivered (1)" in digest.body
    assert "- low_reservoir to gone@clinic.example: SMTPRecipientsRefused: 550 no such user" in digest.body


def test_explant_resolves_the_pumps_open_alerts(filled, nurse):
    now = LRA + timedelta(minutes=40)
    sweep_and_send(now)
    s.explant_pump(withdrawal_plan="taper_completed", pump=filled, explanted_on=date(2026, 4, 19), actor=s.Actor(nurse), now=now + timedelta(hours=1))
    assert set(Alert.objects.values_list("resolution", flat=True)) == {"pump explanted"}
    sweep_and_send(now + timedelta(hours=8))
    assert len(sent("low_reservoir")) == 2


@pytest.mark.django_db(transaction=True)
def test_a_sweep_of_many_pumps_queues_one_delivery_trigger(clinic, prescriber, monkeypatch):
    """Each due pump is its own committed transaction; the delivery is triggered once, at
    the end of the sweep, not once per pump (a burst of 378 reminders had queued ~380)."""
    for n in (1, 2, 3):
        other = make_pump(make_patient(clinic, mrn=f"MRN10{n}"), serial=f"SN-010{n}")
        s.record_refill(
            pump=other, performed_at=T0, added_volume_ml=D(36), concentration_mcg_per_ml=D(1000),
            actor=s.Actor(prescriber), now=WRITE_NOW,
            program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)),
        )
    AlertRecipient.objects.create(clinic=clinic, email="pumps@clinic.example")
    queued = []
    monkeypatch.setattr("pumps.tasks.deliver_pending.delay", lambda: queued.append(1))
    result = sweep(LRA + timedelta(minutes=40))
    assert result.pumps_checked == 3
    assert Notification.objects.filter(kind="low_reservoir").count() == 3
    assert queued == [1]


def test_one_delivery_task_per_transaction(filled, monkeypatch, django_capture_on_commit_callbacks):
    queued = []
    monkeypatch.setattr("pumps.tasks.deliver_pending.delay", lambda: queued.append(1))
    with django_capture_on_commit_callbacks(execute=True):
        from django.db import transaction

        with transaction.atomic():
            sweep(LRA + timedelta(minutes=40))
    assert Notification.objects.count() >= 4
    assert queued == [1]


# ---------------------------------------------------------------- review findings


def test_alarm_cleared_by_a_reading_and_reached_again_alerts_again(filled, nurse):
    first = LRA + timedelta(minutes=40)
    sweep_and_send(first)
    # a reading of 6 mL clears the alarm (same fill)...
    s.record_reading(pump=filled, read_at=first + timedelta(hours=1), reservoir_volume_ml=D("6"),
                     actor=s.Actor(nurse), now=first + timedelta(hours=1))
    alert = Alert.objects.get(kind="low_reservoir")
    assert alert.resolution == "condition cleared"
    # ...then (6 - 2) / 0.45 = 8.9 days later the alarm volume is reached again
    again = first + timedelta(hours=1, days=9)
    sweep_and_send(again)
    alert.refresh_from_db()
    assert alert.resolved_at is None and alert.repeat_count == 1
    low = sent("low_reservoir")
    assert len(low) == 4
    assert all(m.subject.endswith("(reminder 1)") for m in low[2:])


def test_voiding_the_refill_that_resolved_the_alarm_reopens_it(filled, nurse):
    now = LRA + timedelta(minutes=40)
    sweep_and_send(now)
    refill = s.record_refill(
        pump=filled, performed_at=now + timedelta(hours=1), extracted_volume_ml=D("1.5"), added_volume_ml=D(36),
        concentration_mcg_per_ml=D(1000), actor=s.Actor(nurse), now=now + timedelta(hours=1),
    )
    assert Alert.objects.get(kind="low_reservoir").resolved_at is not None
    s.void_record(record=refill, reason="recorded on the wrong pump", actor=s.Actor(nurse), now=now + timedelta(hours=2))
    alert = Alert.objects.get(kind="low_reservoir")
    assert alert.resolved_at is None and alert.repeat_count == 1
    outbox.deliver_due(now + timedelta(hours=2))
    assert len(sent("low_reservoir")) == 4


def test_marking_the_patient_high_risk_raises_the_overdue_alert_at_once(filled, nurse):
    now = datetime(2026, 4, 5, 12, tzinfo=CHICAGO)  # due 04-10 normally, 04-03 when high risk
    s.update_patient(patient=filled.patient, actor=s.Actor(nurse), withdrawal_high_risk=True, now=now)
    assert Alert.objects.filter(kind="refill_overdue").count() == 1


def test_deceased_patient_resolves_alerts_and_stops_reminders(filled, nurse):
    now = LRA + timedelta(minutes=40)
    sweep_and_send(now)
    s.update_patient(patient=filled.patient, actor=s.Actor(nurse), status="deceased", now=now + timedelta(hours=1))
    assert set(Alert.objects.values_list("resolution", flat=True)) == {"patient not active"}
    sweep_and_send(now + timedelta(hours=8))
    assert len(sent("low_reservoir")) == 2


def test_mri_entered_minutes_ahead_of_the_clock_still_needs_its_check(filled, nurse):
    now = datetime(2026, 3, 2, 8, tzinfo=CHICAGO)
    s.record_event(pump=filled, kind="mri", occurred_at=now + timedelta(minutes=3), actor=s.Actor(nurse), now=now)
    assert Alert.objects.filter(kind="post_mri_check").count() == 1


@pytest.mark.parametrize("broken_in", ["projection", "alert rules"])
def test_one_broken_pump_does_not_stop_the_sweep(filled, clinic, prescriber, monkeypatch, broken_in):
    """A pump whose projection fails is left out of its chunk (set-based); a pump whose
    alert rules fail fails its whole chunk, which is done again pump by pump. Either way
    the other pump of the chunk is refreshed and alerted, the broken one stays due for the
    next sweep, and the sweep completes."""
    from pumps import history
    from pumps.alerting import evaluate

    other = make_pump(make_patient(clinic, mrn="MRN002"), serial="SN-0002")
    s.record_refill(
        pump=other, performed_at=T0, added_volume_ml=D(36), concentration_mcg_per_ml=D(1000),
        actor=s.Actor(prescriber),
        program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)), now=WRITE_NOW,
    )
    module, name = (history, "projection_values") if broken_in == "projection" else (evaluate, "wanted_alerts")
    real = getattr(module, name)

    def broken(pump, *args, **kwargs):
        if pump.pk == filled.pk:
            raise ValueError("corrupt history")
        return real(pump, *args, **kwargs)

    monkeypatch.setattr(module, name, broken)
    now = LRA + timedelta(minutes=40)
    result = sweep(now)
    assert (result.pumps_failed, result.pumps_checked) == (1, 1)
    assert SweepRun.objects.count() == 1
    assert Alert.objects.filter(pump=other, kind="low_reservoir").exists()
    assert not Alert.objects.filter(pump=filled).exists()
    assert list(due_pumps(now)) == [filled]  # retried by the next sweep


def test_stalled_alerting_emails_admins_from_the_watchdog_and_repeats_hourly(clinic):
    from django.utils import timezone as tz

    from pumps import tasks

    make_user("ada", clinic, "admin", email="ada@clinic.example")
    assert tasks.watchdog() == 1
    stalled = [m for m in mail.outbox if m.extra_headers["X-Clinic-Alert-Kind"] == "alerting_stalled"]
    assert [m.to for m in stalled] == [["ada@clinic.example"]]
    assert stalled[0].subject == "[CRITICAL] Alerting stalled"
    raise_stalled(tz.now() + timedelta(minutes=59))
    raise_stalled(tz.now() + timedelta(hours=1, minutes=1))
    outbox.deliver_due(tz.now() + timedelta(hours=1, minutes=1), kind="alerting_stalled")
    assert len([m for m in mail.outbox if m.extra_headers["X-Clinic-Alert-Kind"] == "alerting_stalled"]) == 2


def test_a_large_due_set_fans_out_into_chunk_tasks_with_the_same_result(filled, clinic, prescriber, monkeypatch):
    from tests.factories import make_patient, make_pump

    for n in (2, 3):
        other = make_pump(make_patient(clinic, mrn=f"MRN00{n}"), serial=f"SN-000{n}")
        s.record_refill(
            pump=other, performed_at=T0, added_volume_ml=D(36), concentration_mcg_per_ml=D(1000),
            actor=s.Actor(prescriber), now=WRITE_NOW,
            program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)),
        )
    monkeypatch.setattr("pumps.alerting.sweep.CHUNK", 2)
    queued = []
    from pumps import tasks

    real_delay = tasks.sweep_chunk.delay
    monkeypatch.setattr(tasks.sweep_chunk, "delay", lambda ids, at: (queued.append(list(ids)), real_delay(ids, at)))
    now = LRA + timedelta(minutes=40)
    result = sweep(now, fan_out=tasks.queue_sweep_chunk)
    assert result.chunks_queued == 2
    assert sorted(len(chunk) for chunk in queued) == [1, 2]
    # the chunks ran (eagerly here, on any worker in production): one alert per pump
    assert Alert.objects.filter(kind="low_reservoir").count() == 3
    assert sweep(now, fan_out=tasks.queue_sweep_chunk).chunks_queued == 0  # nothing due any more


def test_notify_queues_every_recipient_once_even_when_one_was_queued_already(filled, clinic, recipients):
    now = datetime(2026, 4, 19, 8, tzinfo=CHICAGO)
    alert = create_alert(clinic, filled, Wanted("low_reservoir", "fill:test", now, "test"), now)
    assert notify(alert, 0, now) == 2  # one INSERT for both recipients
    assert notify(alert, 0, now) == 0  # both there already
    Notification.objects.filter(alert=alert, recipient="ward@clinic.example").delete()
    assert notify(alert, 0, now) == 1  # the one missing, one by one
    assert sorted(Notification.objects.filter(alert=alert).values_list("recipient", "repeat_number")) == [
        ("nina@clinic.example", 0), ("ward@clinic.example", 0)]
