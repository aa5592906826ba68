# ruff: noqa: F811 - the fixtures of tests/test_alerts.py are imported and used by name
"""The refill planner's side of alerting (docs/clinical-rules.md §11.1, §11.6, §14): the
``refill_unbooked`` alert (digest only, resolved by booking) and the refill plan in the
daily digest."""

from datetime import datetime, timedelta
from decimal import Decimal as D

from pumps import services as s
from pumps.alerting.evaluate import evaluate_pump
from pumps.alerting.rules import describe, wanted_alerts
from pumps.emails import build_email
from pumps.models import Alert, Notification, Pump
from tests.conftest import CHICAGO
from tests.factories import make_patient, make_pump
from tests.test_alerts import T0, filled, recipients, sweep_and_send  # noqa: F401

WINDOW_OPENS = datetime(2026, 3, 27, 0, 30, tzinfo=CHICAGO)  # the worked example: due Fri 2026-04-10


def open_kinds(pump) -> list[str]:
    return sorted(Alert.objects.filter(pump=pump, resolved_at__isnull=True).values_list("kind", flat=True))


def test_refill_unbooked_is_digest_only_and_booking_resolves_it(filled, nurse):
    sweep_and_send(WINDOW_OPENS)
    unbooked = Alert.objects.get(kind="refill_unbooked")
    assert (unbooked.severity, unbooked.episode) == ("info", f"fill:{filled.refills.get().pk}")
    assert unbooked.message == "refill due on 2026-04-10; no refill appointment booked on or before it"
    assert unbooked.next_repeat_at is None
    assert not Notification.objects.filter(alert=unbooked).exists()  # never e-mailed, nor sent to a webhook
    assert describe(unbooked, WINDOW_OPENS) == (
        "The refill is due on 2026-04-10 (in 14 days) and no refill appointment is booked on or before that day.")

    booked_at = datetime(2026, 3, 30, 10, 0, tzinfo=CHICAGO)
    s.schedule_appointment(pump=filled, scheduled_for=datetime(2026, 4, 9, 10, tzinfo=CHICAGO),
                           actor=s.Actor(nurse), now=booked_at)
    unbooked.refresh_from_db()
    assert unbooked.resolved_at == booked_at
    assert unbooked.resolution == "a refill appointment is booked on or before the due date, or the due date moved"
    assert open_kinds(filled) == ["refill_due_soon"]  # the status stays until the refill


def test_a_refill_booked_after_the_due_date_does_not_count(filled, nurse):
    s.schedule_appointment(pump=filled, scheduled_for=datetime(2026, 4, 13, 10, tzinfo=CHICAGO),
                           actor=s.Actor(nurse), now=WINDOW_OPENS - timedelta(days=2))
    sweep_and_send(WINDOW_OPENS)
    assert open_kinds(filled) == ["refill_due_soon", "refill_unbooked"]


def test_a_visit_booked_earlier_today_and_not_yet_done_still_counts(filled, nurse):
    """The planner's test: a scheduled refill from the start of today (local) counts."""
    morning = datetime(2026, 4, 1, 8, 0, tzinfo=CHICAGO)
    s.schedule_appointment(pump=filled, scheduled_for=morning, actor=s.Actor(nurse), now=WINDOW_OPENS)
    evaluate_pump(filled, datetime(2026, 4, 1, 15, 0, tzinfo=CHICAGO))
    assert open_kinds(filled) == ["refill_due_soon"]
    evaluate_pump(filled, datetime(2026, 4, 2, 0, 5, tzinfo=CHICAGO))  # the next day: it is behind us
    assert open_kinds(filled) == ["refill_due_soon", "refill_unbooked"]


def test_appointments_read_by_the_caller_give_the_same_answer_as_the_query(filled, nurse):
    """The set-based refresh reads the appointments of many pumps at once and hands them
    to wanted_alerts: the rule is the same either way."""
    morning = datetime(2026, 4, 1, 8, 0, tzinfo=CHICAGO)
    s.schedule_appointment(pump=filled, scheduled_for=morning, actor=s.Actor(nurse), now=WINDOW_OPENS)
    for now, preloaded in (
        (datetime(2026, 4, 1, 15, 0, tzinfo=CHICAGO), [morning]),
        (datetime(2026, 4, 2, 0, 5, tzinfo=CHICAGO), [morning]),  # yesterday's visit is passed over
        (datetime(2026, 4, 1, 15, 0, tzinfo=CHICAGO), None),
    ):
        queried = sorted(w.kind for w in wanted_alerts(filled, now))
        assert sorted(w.kind for w in wanted_alerts(filled, now, refill_appointments=preloaded)) == queried
    assert "refill_unbooked" in [w.kind for w in wanted_alerts(
        filled, datetime(2026, 4, 1, 15, 0, tzinfo=CHICAGO), refill_appointments=[])]


def test_nothing_before_the_window_and_overdue_takes_over_after_the_due_date(filled):
    evaluate_pump(filled, WINDOW_OPENS - timedelta(hours=1))  # 15 days before the due date
    assert open_kinds(filled) == []
    evaluate_pump(filled, WINDOW_OPENS)
    assert open_kinds(filled) == ["refill_due_soon", "refill_unbooked"]
    evaluate_pump(filled, datetime(2026, 4, 10, 23, 0, tzinfo=CHICAGO))  # due today: still unbooked
    assert open_kinds(filled) == ["refill_due_soon", "refill_unbooked"]
    evaluate_pump(filled, datetime(2026, 4, 11, 9, 0, tzinfo=CHICAGO))
    assert open_kinds(filled) == ["refill_overdue"]
    unbooked = Alert.objects.get(kind="refill_unbooked")
    assert unbooked.resolution == "the due date has passed: the refill is overdue"


def test_an_explanted_pump_has_no_unbooked_alert(filled, nurse):
    sweep_and_send(WINDOW_OPENS)
    s.explant_pump(pump=filled, explanted_on=datetime(2026, 3, 28).date(), actor=s.Actor(nurse),
                   now=datetime(2026, 3, 28, 12, tzinfo=CHICAGO))
    assert open_kinds(filled) == []


# --------------------------------------------------------------------- the digest


def _another_pump(clinic, prescriber, *, mrn: str, given: str, family: str, serial: str, filled_at: datetime) -> Pump:
    """A pump like the worked example's, filled at ``filled_at``: due 68 days later."""
    patient = make_patient(clinic, mrn=mrn, given_name=given, family_name=family)
    pump = make_pump(patient, serial=serial)
    s.record_refill(
        pump=pump, performed_at=filled_at, added_volume_ml=D(36), concentration_mcg_per_ml=D(1000),
        actor=s.Actor(prescriber), program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)),
        now=filled_at + timedelta(hours=3),
    )
    pump.refresh_from_db()
    return pump


def test_the_digest_lists_the_plans_shortfalls_and_the_pumps_due_soon_with_nothing_booked(
        filled, clinic, prescriber):
    # One refill slot a day, and a refill only on its due date: two pumps due the same day
    # cannot both be booked in time.
    clinic.refill_slots_per_day = 1
    clinic.refill_earliest_days = 0
    clinic.save()
    booked = _another_pump(clinic, prescriber, mrn="MRN002", given="Ben", family="Khan", serial="SN-0002",
                           filled_at=T0 + timedelta(days=7))
    crowded = _another_pump(clinic, prescriber, mrn="MRN003", given="Cleo", family="Diaz", serial="SN-0003",
                            filled_at=T0 + timedelta(days=7, hours=1))
    later = _another_pump(clinic, prescriber, mrn="MRN004", given="Dev", family="Roy", serial="SN-0004",
                          filled_at=T0 + timedelta(days=35))
    assert [p.refill_due_on.isoformat() for p in (filled, booked, crowded, later)] == [
        "2026-04-10", "2026-04-17", "2026-04-17", "2026-05-15"]

    now = datetime(2026, 4, 11, 7, 0, tzinfo=CHICAGO)  # Saturday, the digest hour
    note = Notification(clinic=clinic, kind="digest", recipient="ward@clinic.example", digest_on=now.date())
    message = build_email(note, now)
    lines = message.body.splitlines()
    site = "https://pumps.example.org"
    start = lines.index(f"Refill plan: {site}/clinics/north/planning/")
    assert lines[start:start + 8] == [
        f"Refill plan: {site}/clinics/north/planning/",
        "Cannot be booked on or before the due date (2)",
        "- MRN MRN001 (AG): due 2026-04-10 (Fri); the due date has passed; suggested day 2026-04-13 (Mon)"
        f" — {site}/pumps/{filled.pk}/#summary",
        "- MRN MRN003 (CD): due 2026-04-17 (Fri); every slot of its window is taken; suggested day 2026-04-16 (Thu)"
        f" — {site}/pumps/{crowded.pk}/#summary",
        "",
        "Due within 14 days, no refill booked (1)",
        f"- MRN MRN002 (BK): due 2026-04-17 (Fri); proposed day 2026-04-17 (Fri) — {site}/pumps/{booked.pk}/#summary",
        "1 more due by 2026-06-06 (Sat) with a proposed day: see the refill plan.",
    ]
    assert lines[start + 8:start + 10] == ["", "Drug past its stability date (0)"]
    html = message.alternatives[0][0]
    assert f'<a href="{site}/clinics/north/planning/">Open the refill plan</a>' in html
    assert "Cannot be booked on or before the due date (2)" in html
    assert "due 2026-04-17 (Fri); every slot of its window is taken; suggested day 2026-04-16 (Thu)" in html
    assert f'<a href="{site}/pumps/{crowded.pk}/#summary">MRN MRN003 (CD)</a>' in html
    for text in (message.body, html):
        assert "Garcia" not in text and "Khan" not in text and "Diaz" not in text  # never the full name


def test_a_digest_with_nothing_to_plan_says_none(clinic, recipients):
    now = datetime(2026, 4, 11, 7, 0, tzinfo=CHICAGO)
    note = Notification(clinic=clinic, kind="digest", recipient="ward@clinic.example", digest_on=now.date())
    lines = build_email(note, now).body.splitlines()
    start = lines.index("Refill plan: https://pumps.example.org/clinics/north/planning/")
    assert lines[start + 1:start + 6] == [
        "Cannot be booked on or before the due date (0)",
        "- none",
        "",
        "Due within 14 days, no refill booked (0)",
        "- none",
    ]
    assert lines[start + 6:start + 8] == ["", "Drug past its stability date (0)"]
