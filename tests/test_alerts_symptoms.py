# ruff: noqa: F811 - the fixtures of tests/test_alerts.py are imported and used by name
"""The dose-and-response alerts (docs/clinical-rules.md §11.8, §15): a withdrawal or
overdose sign on a symptom screen, and a stop of delivery without a plan. Critical, to the
escalation list at once, exactly once per assessment (or stop), every 2 hours until
acknowledged with a reason; exact e-mails; when each one ends."""

from datetime import date, datetime, timedelta
from decimal import Decimal as D

import pytest
from django.core import mail

from pumps import outbox
from pumps import services as s
from pumps.alerting.acknowledge import acknowledge
from pumps.alerting.evaluate import evaluate_pump
from pumps.errors import ServiceValidationError
from pumps.models import Alert, Notification, Pump, WithdrawalPlan
from tests.conftest import CHICAGO
from tests.test_alerts import filled, recipients, sent, sweep_and_send  # noqa: F401 - fixtures

RAISED = datetime(2026, 2, 10, 9, 0, tzinfo=CHICAGO)  # 450 -> 540 mcg/day
VISIT = datetime(2026, 2, 12, 10, 0, tzinfo=CHICAGO)
RECORDED = VISIT + timedelta(minutes=20)
SENT = VISIT + timedelta(minutes=30)
EVERYONE = ["nina@clinic.example", "oncall@clinic.example", "ward@clinic.example"]  # with the escalation list


def screen(pump, nurse, at=VISIT, now=RECORDED, **signs):
    return s.record_assessment(pump=pump, assessed_at=at, data=s.AssessmentInput(signs=signs), actor=s.Actor(nurse),
                               now=now)


def raise_dose(pump, prescriber, daily=540, at=RAISED):
    return s.record_program(pump=pump, effective_at=at, actor=s.Actor(prescriber), now=at,
                            data=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(daily)))


def own(kind):
    return Alert.objects.filter(kind=kind).exclude(episode__startswith="fill:")


def test_a_withdrawal_sign_emails_the_escalation_list_at_once_exactly(filled, nurse):
    made = screen(filled, nurse, withdrawal_pruritus=True, withdrawal_high_fever=True)
    alert = Alert.objects.get(kind="withdrawal_symptoms")
    assert (alert.episode, alert.severity, alert.due_at, alert.created_at, alert.escalated_at, alert.next_repeat_at) \
        == (f"assessment:{made.pk}", "critical", VISIT, RECORDED, RECORDED, RECORDED + timedelta(hours=2))
    assert alert.message == "Withdrawal signs recorded at 2026-02-12 10:00 CST: pruritus (itching), high fever."
    outbox.deliver_due(SENT)
    messages = sent("withdrawal_symptoms")
    assert sorted(m.to[0] for m in messages) == EVERYONE
    message = next(m for m in messages if m.to == ["nina@clinic.example"])
    assert message.subject == "[CRITICAL] Withdrawal symptoms: MRN MRN001 (AG)"
    assert message.extra_headers == {"X-Clinic-Alert-Kind": "withdrawal_symptoms",
                                     "X-Clinic-Alert-Severity": "critical", "X-Clinic-Alert-Id": str(alert.pk)}
    assert message.body.splitlines() == [
        "CRITICAL: Withdrawal symptoms [escalated]",
        "",
        "Clinic: North Spasticity Clinic",
        "Patient: MRN MRN001 (AG)",
        "Pump: Medtronic SynchroMed II 8637-40, serial SN-0001",
        "When: 2026-02-12 10:00 CST (30 minutes ago)",
        "Detail: Withdrawal signs recorded at 2026-02-12 10:00 CST: pruritus (itching), high fever.",
        "",
        "What to do: Signs of baclofen withdrawal were recorded: see the patient at once, check the pump, the "
        "catheter and the reservoir, and treat withdrawal as an emergency (restore intrathecal delivery).",
        "",
        f"Open the pump: https://pumps.example.org/pumps/{filled.pk}/#summary",
        "",
        f"Alert #{alert.pk}, raised 2026-02-12 10:20 CST (10 minutes ago); this e-mail sent 2026-02-12 10:30 CST. "
        "Times in America/Chicago.",
        "Acknowledge it in the clinic app to stop reminders (a critical alert needs a reason).",
        "",
    ]
    assert "Garcia" not in message.body and "Ana" not in message.body
    assert not own("overdose_symptoms").exists()


def test_an_overdose_sign_after_a_dose_increase_names_the_increase_exactly(filled, nurse, prescriber):
    raise_dose(filled, prescriber)
    screen(filled, nurse, overdose_somnolence=True, overdose_respiratory_depression=True)
    outbox.deliver_due(SENT)
    alert = Alert.objects.get(kind="overdose_symptoms")
    messages = sent("overdose_symptoms")
    assert sorted(m.to[0] for m in messages) == EVERYONE
    message = next(m for m in messages if m.to == ["oncall@clinic.example"])
    assert message.subject == "[CRITICAL] Overdose symptoms: MRN MRN001 (AG)"
    assert message.body.splitlines() == [
        "CRITICAL: Overdose symptoms [escalated]",
        "",
        "Clinic: North Spasticity Clinic",
        "Patient: MRN MRN001 (AG)",
        "Pump: Medtronic SynchroMed II 8637-40, serial SN-0001",
        "When: 2026-02-12 10:00 CST (30 minutes ago)",
        "Detail: Overdose signs recorded at 2026-02-12 10:00 CST: somnolence, respiratory depression. The daily "
        "dose was increased from 450 to 540 mcg/day at 2026-02-10 09:00 CST.",
        "",
        "What to do: Signs of baclofen overdose were recorded: assess the patient at once (breathing, "
        "consciousness), consider stopping or reducing delivery, and review recent dose changes and CNS depressants.",
        "",
        f"Open the pump: https://pumps.example.org/pumps/{filled.pk}/#summary",
        "",
        f"Alert #{alert.pk}, raised 2026-02-12 10:20 CST (10 minutes ago); this e-mail sent 2026-02-12 10:30 CST. "
        "Times in America/Chicago.",
        "Acknowledge it in the clinic app to stop reminders (a critical alert needs a reason).",
        "",
    ]


@pytest.mark.parametrize(("raised_at", "named"), [
    (VISIT - timedelta(hours=72), True),  # exactly 72 hours before: within
    (VISIT - timedelta(hours=72, minutes=1), False),  # a minute earlier: not
])
def test_the_increase_is_named_within_72_hours_only(filled, nurse, prescriber, raised_at, named):
    raise_dose(filled, prescriber, at=raised_at)
    screen(filled, nurse, overdose_dizziness=True)
    message = Alert.objects.get(kind="overdose_symptoms").message
    assert ("The daily dose was increased from 450 to 540 mcg/day" in message) is named


def test_a_decrease_or_a_voided_increase_is_not_named(filled, nurse, prescriber):
    lower = raise_dose(filled, prescriber, daily=400)
    higher = raise_dose(filled, prescriber, daily=500, at=RAISED + timedelta(hours=1))  # 400 -> 500: named
    s.void_record(record=higher, reason="entered in error", actor=s.Actor(prescriber), now=RAISED + timedelta(hours=2))
    screen(filled, nurse, overdose_seizures=True)
    assert Alert.objects.get(kind="overdose_symptoms").message == (
        "Overdose signs recorded at 2026-02-12 10:00 CST: seizures.")
    assert lower.daily_dose_mcg == D(400)


def test_exactly_once_per_assessment_however_often_the_pump_is_evaluated(filled, nurse):
    first = screen(filled, nurse, withdrawal_muscle_rigidity=True, overdose_drowsiness=True)
    for minutes in (5, 10):
        evaluate_pump(filled, RECORDED + timedelta(minutes=minutes))
        sweep_and_send(RECORDED + timedelta(minutes=minutes))
    assert sorted(own("withdrawal_symptoms").values_list("episode", flat=True)) == [f"assessment:{first.pk}"]
    assert Notification.objects.filter(kind="withdrawal_symptoms").count() == 3
    assert Notification.objects.filter(kind="overdose_symptoms").count() == 3
    second = screen(filled, nurse, at=VISIT + timedelta(hours=1), now=RECORDED + timedelta(hours=1),
                    withdrawal_muscle_rigidity=True)
    assert sorted(own("withdrawal_symptoms").values_list("episode", flat=True)) == [
        f"assessment:{first.pk}", f"assessment:{second.pk}"]


def test_it_repeats_every_two_hours_until_acknowledged_with_a_reason(filled, nurse):
    screen(filled, nurse, withdrawal_altered_mental_status=True)
    alert = Alert.objects.get(kind="withdrawal_symptoms")
    sweep_and_send(RECORDED + timedelta(hours=2))
    assert sorted(Notification.objects.filter(alert=alert).values_list("repeat_number", flat=True)) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ServiceValidationError) as caught:
        acknowledge(alert, user=nurse, reason=" ", now=RECORDED + timedelta(hours=3))
    assert caught.value.message_dict == {
        "reason": ["Give a reason to acknowledge a critical alert: what was done, or why it can wait."]}
    acknowledge(alert, user=nurse, reason="Seen in clinic, pump refilled", now=RECORDED + timedelta(hours=3))
    sweep_and_send(RECORDED + timedelta(hours=6))
    alert.refresh_from_db()
    assert (alert.repeat_count, alert.resolved_at, alert.next_repeat_at) == (1, None, None)  # open, quiet


def test_a_later_negative_screen_ends_an_acknowledged_alert_never_an_unacknowledged_one(filled, nurse):
    screen(filled, nurse, withdrawal_hypotension=True)
    alert = Alert.objects.get(kind="withdrawal_symptoms")
    later = VISIT + timedelta(days=1)
    screen(filled, nurse, at=later, now=later, overdose_lightheadedness=True)  # negative for withdrawal
    alert.refresh_from_db()
    assert (alert.resolved_at, alert.resolution) == (None, "")  # unacknowledged: stays open, repeating
    assert alert.next_repeat_at is not None
    acked = acknowledge(alert, user=nurse, reason="Blood pressure back to normal", now=later + timedelta(hours=1))
    assert (acked.resolved_at, acked.resolution) == (
        later + timedelta(hours=1),
        "acknowledged, and a later assessment at 2026-02-13 10:00 CST screened negative for withdrawal signs")
    assert Alert.objects.get(kind="overdose_symptoms").resolved_at is None  # the later screen's own alert


def test_acknowledged_first_then_a_negative_screen_resolves_at_once_and_its_void_reopens(filled, nurse):
    screen(filled, nurse, overdose_loss_of_consciousness=True)
    alert = Alert.objects.get(kind="overdose_symptoms")
    acknowledge(alert, user=nurse, reason="Admitted; dose reduced", now=RECORDED + timedelta(hours=1))
    later = VISIT + timedelta(days=2)
    negative = screen(filled, nurse, at=later, now=later)
    alert.refresh_from_db()
    assert (alert.resolved_at, alert.resolution) == (
        later, "acknowledged, and a later assessment at 2026-02-14 10:00 CST screened negative for overdose signs")
    mail.outbox.clear()
    s.void_record(record=negative, reason="wrong patient", actor=s.Actor(nurse), now=later + timedelta(hours=1))
    alert.refresh_from_db()
    assert (alert.resolved_at, alert.acknowledged_at, alert.repeat_count) == (None, None, 1)  # open and told again
    outbox.deliver_due(later + timedelta(hours=1))
    assert sorted(m.subject for m in sent("overdose_symptoms")) == [
        "[CRITICAL] Overdose symptoms: MRN MRN001 (AG) (reminder 1)"] * 3


def test_voiding_the_assessment_resolves_its_alerts_and_cancels_what_was_not_sent(filled, nurse):
    made = screen(filled, nurse, withdrawal_paresthesias=True, overdose_rostral_hypotonia=True)
    s.void_record(record=made, reason="entered on the wrong patient", actor=s.Actor(nurse), now=RECORDED)
    assert sorted(Alert.objects.filter(kind__in=["withdrawal_symptoms", "overdose_symptoms"]).values_list(
        "kind", "resolution")) == [("overdose_symptoms", "the assessment was voided"),
                                   ("withdrawal_symptoms", "the assessment was voided")]
    assert set(Notification.objects.filter(kind__in=["withdrawal_symptoms", "overdose_symptoms"]).values_list(
        "status", flat=True)) == {"cancelled"}
    outbox.deliver_due(SENT)
    assert sent("withdrawal_symptoms") == [] and sent("overdose_symptoms") == []


def test_an_explant_does_not_end_a_symptom_alert(filled, nurse):
    screen(filled, nurse, withdrawal_rebound_spasticity=True)
    s.explant_pump(pump=filled, explanted_on=date(2026, 2, 12), withdrawal_plan="taper_completed",
                   actor=s.Actor(nurse), now=RECORDED + timedelta(hours=1))
    alert = Alert.objects.get(kind="withdrawal_symptoms")
    assert alert.resolved_at is None
    sweep_and_send(RECORDED + timedelta(hours=2))
    assert Notification.objects.filter(alert=alert, repeat_number=1).count() == 3  # still reminding


# --------------------------------------------------------------------- stop alerts


STOP_DAY = date(2026, 2, 13)
EXPLANT_RECORDED = datetime(2026, 2, 13, 15, 0, tzinfo=CHICAGO)
WINDOW_END = EXPLANT_RECORDED + timedelta(hours=72)  # recorded after the stop: the watch counts from then


def explant_without_plan(pump, nurse):
    s.explant_pump(pump=pump, explanted_on=STOP_DAY, withdrawal_plan="none", reason="infection",
                   withdrawal_plan_reason="emergency removal, no time to taper", actor=s.Actor(nurse),
                   now=EXPLANT_RECORDED)
    return WithdrawalPlan.objects.get()


def test_an_explant_without_a_plan_opens_a_critical_withdrawal_risk_e_mailed_exactly(filled, nurse):
    plan = explant_without_plan(filled, nurse)
    alert = Alert.objects.get(episode=f"stop:{plan.pk}")
    assert (alert.kind, alert.severity, alert.due_at, alert.escalated_at, alert.resolved_at) == (
        "withdrawal_risk", "critical", WINDOW_END, EXPLANT_RECORDED, None)
    outbox.deliver_due(EXPLANT_RECORDED + timedelta(minutes=5))
    messages = sent("withdrawal_risk")
    assert sorted(m.to[0] for m in messages) == EVERYONE
    message = next(m for m in messages if m.to == ["ward@clinic.example"])
    assert message.subject == "[CRITICAL] Withdrawal risk (delivery stopped): MRN MRN001 (AG)"
    assert message.body.splitlines() == [
        "CRITICAL: Withdrawal risk (delivery stopped) [escalated]",
        "",
        "Clinic: North Spasticity Clinic",
        "Patient: MRN MRN001 (AG)",
        "Pump: Medtronic SynchroMed II 8637-40, serial SN-0001",
        "When: 2026-02-16 15:00 CST (in 2 days)",
        "Detail: Intrathecal baclofen stopped at 2026-02-13 00:00 CST (the pump was explanted) with no plan "
        "against withdrawal; watch for withdrawal until 2026-02-16 15:00 CST.",
        "",
        "What to do: Intrathecal baclofen was stopped with no plan against withdrawal (no taper, no oral bridge). "
        "Watch the patient for withdrawal through the window (itching, low blood pressure, paresthesias, fever, "
        "altered mental status, rebound spasticity, muscle rigidity) and treat signs of withdrawal as an emergency.",
        "",
        f"Open the pump: https://pumps.example.org/pumps/{filled.pk}/#summary",
        "",
        f"Alert #{alert.pk}, raised 2026-02-13 15:00 CST (5 minutes ago); this e-mail sent 2026-02-13 15:05 CST. "
        "Times in America/Chicago.",
        "Acknowledge it in the clinic app to stop reminders (a critical alert needs a reason).",
        "",
    ]
    assert "emergency removal" not in message.body  # the reason stays in the record


def test_an_unacknowledged_stop_alert_outlives_its_window_and_goes_on_reminding(filled, nurse):
    plan = explant_without_plan(filled, nurse)
    after = WINDOW_END + timedelta(hours=1)
    sweep_and_send(after)
    alert = Alert.objects.get(episode=f"stop:{plan.pk}")
    assert (alert.resolved_at, alert.repeat_count) == (None, 1)  # one reminder: the first repeat due since 17:00
    acked = acknowledge(alert, user=nurse, reason="Patient seen, no withdrawal", now=after)
    assert (acked.resolved_at, acked.resolution) == (
        after, "acknowledged, and the withdrawal window after the stop has passed")


def test_an_acknowledged_stop_alert_stays_open_to_the_end_of_the_window(filled, nurse):
    plan = explant_without_plan(filled, nurse)
    alert = Alert.objects.get(episode=f"stop:{plan.pk}")
    acknowledge(alert, user=nurse, reason="Oral baclofen started by the ward",
                       now=EXPLANT_RECORDED + timedelta(hours=1))
    sweep_and_send(WINDOW_END - timedelta(minutes=1))
    alert.refresh_from_db()
    assert alert.resolved_at is None
    sweep_and_send(WINDOW_END)
    alert.refresh_from_db()
    assert (alert.resolved_at, alert.resolution) == (
        WINDOW_END, "acknowledged, and the withdrawal window after the stop has passed")


def test_a_program_that_stops_delivery_without_a_plan_and_its_void(filled, prescriber):
    at = datetime(2026, 3, 1, 9, 0, tzinfo=CHICAGO)
    program = s.record_program(
        pump=filled, effective_at=at, actor=s.Actor(prescriber), now=at,
        data=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(0), withdrawal_plan="none",
                            withdrawal_plan_reason="trial off intrathecal therapy"),
    )
    plan = program.withdrawal_plan
    alert = Alert.objects.get(episode=f"stop:{plan.pk}")
    assert (alert.due_at, alert.message) == (
        at + timedelta(hours=72),
        "Intrathecal baclofen stopped at 2026-03-01 09:00 CST (a program stops delivery) with no plan against "
        "withdrawal; watch for withdrawal until 2026-03-04 09:00 CST.")
    evaluate_pump(filled, at + timedelta(hours=1))  # the pump's own alerts leave it alone
    alert.refresh_from_db()
    assert alert.resolved_at is None
    s.void_record(record=program, reason="entered on the wrong pump", actor=s.Actor(prescriber),
                  now=at + timedelta(minutes=10))
    alert.refresh_from_db()
    assert (alert.resolved_at, alert.resolution) == (
        at + timedelta(minutes=10), "the withdrawal plan was voided with the program that carried it")
    assert set(Notification.objects.filter(alert=alert).values_list("status", flat=True)) == {"cancelled"}


def test_a_plan_other_than_none_opens_no_alert(filled, nurse):
    s.explant_pump(pump=filled, explanted_on=STOP_DAY, withdrawal_plan="taper_completed", actor=s.Actor(nurse),
                   now=EXPLANT_RECORDED)
    assert not Alert.objects.filter(episode__startswith="stop:").exists()


def test_re_evaluating_an_explanted_pump_resolves_its_reservoir_alerts_not_the_stop(filled, nurse):
    plan = explant_without_plan(filled, nurse)
    Alert.objects.create(clinic=filled.clinic, pump=filled, kind="refill_overdue", episode="fill:0", severity="warning",
                         created_at=EXPLANT_RECORDED)  # as if left open from before the explant
    evaluate_pump(Pump.objects.get(pk=filled.pk), EXPLANT_RECORDED + timedelta(hours=1))
    assert sorted(Alert.objects.values_list("kind", "episode", "resolution")) == [
        ("refill_overdue", "fill:0", "pump explanted"), ("withdrawal_risk", f"stop:{plan.pk}", "")]
