# ruff: noqa: F811 - the fixtures of tests/test_alerts.py are imported and used by name
"""Alerting safety (docs/clinical-rules.md, section 11): resolving an alert ends its
noise, silencing a critical alert is deliberate and recorded, a worsening alerts again,
and an expired drug is a named cause, raised once per refill."""

from datetime import date, datetime, timedelta
from decimal import Decimal as D

import pytest
from django.core import mail

from pumps import outbox
from pumps import services as s
from pumps.alerting.acknowledge import acknowledge
from pumps.alerting.evaluate import evaluate_pump
from pumps.alerting.sweep import sweep
from pumps.errors import Forbidden, ServiceValidationError
from pumps.models import Alert, Drug, DrugProduct, Notification, Program, Pump
from tests.conftest import CHICAGO
from tests.factories import make_user
from tests.test_alerts import (  # noqa: F401 - fixtures
    LRA,
    T0,
    WRITE_NOW,
    filled,
    recipients,
    second_prescriber,
    sent,
    sweep_and_send,
)

EMPTY = datetime(2026, 4, 23, 10, 0, tzinfo=CHICAGO)  # the worked example's worst-case empty instant
WINDOW = EMPTY - timedelta(hours=72)  # the withdrawal window opens


def failing_smtp(monkeypatch):
    def broken_send(self, fail_silently=False):
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    monkeypatch.setattr("django.core.mail.EmailMultiAlternatives.send", broken_send)


# ------------------------------------------------------------- resolution ends the noise


def test_a_battery_alert_of_an_explanted_pump_is_never_emailed(filled, nurse, monkeypatch):
    filled.expected_end_of_service = date(2026, 9, 30)
    filled.save()
    s.store_projection(filled, now=datetime(2026, 4, 3, 12, tzinfo=CHICAGO))
    failing_smtp(monkeypatch)
    at = datetime(2026, 4, 3, 12, tzinfo=CHICAGO)  # 180 days before the end of service
    evaluate_pump(filled, at)
    outbox.deliver_due(at)
    battery = Alert.objects.get(kind="battery_replacement")
    notes = Notification.objects.filter(alert=battery)
    assert sorted((n.recipient, n.status, n.attempts) for n in notes) == [
        ("nina@clinic.example", "pending", 1), ("ward@clinic.example", "pending", 1),
    ]
    monkeypatch.undo()  # the mail server is back...
    s.explant_pump(pump=filled, explanted_on=date(2026, 4, 3), actor=s.Actor(nurse),
                   now=at + timedelta(seconds=30))  # ...but the pump was explanted before the retry
    battery.refresh_from_db()
    assert (battery.resolved_at, battery.resolution) == (at + timedelta(seconds=30), "pump explanted")
    assert sorted(notes.values_list("status", "last_error")) == [
        ("cancelled", "not sent: the alert was resolved before delivery"),
    ] * 2
    mail.outbox.clear()
    assert outbox.deliver_due(at + timedelta(days=61)) == 0
    sweep(at + timedelta(days=61))
    outbox.deliver_due(at + timedelta(days=61, minutes=5))
    assert [m for m in mail.outbox if m.extra_headers["X-Clinic-Alert-Kind"] != "digest"] == []
    assert Alert.objects.filter(pump=filled, resolved_at__isnull=True).count() == 0


def test_a_new_refill_cancels_the_pending_notifications_of_the_alerts_it_resolves(filled, nurse, monkeypatch):
    now = LRA + timedelta(minutes=40)
    failing_smtp(monkeypatch)
    sweep_and_send(now)
    assert set(Notification.objects.filter(kind="low_reservoir").values_list("status", flat=True)) == {"pending"}
    monkeypatch.undo()
    s.record_refill(
        pump=filled, performed_at=now + timedelta(minutes=30), extracted_volume_ml=D("1.5"), added_volume_ml=D(36),
        concentration_mcg_per_ml=D(1000), actor=s.Actor(nurse), now=now + timedelta(minutes=31),
    )
    assert sorted(Notification.objects.filter(kind__in=["low_reservoir", "refill_overdue"]).values_list(
        "kind", "status")) == [("low_reservoir", "cancelled")] * 2 + [("refill_overdue", "cancelled")] * 2
    outbox.deliver_due(now + timedelta(hours=1))
    assert sent("low_reservoir") == [] and sent("refill_overdue") == []


def test_a_reading_that_clears_the_alarm_cancels_its_pending_notifications(filled, nurse, monkeypatch):
    now = LRA + timedelta(minutes=40)
    failing_smtp(monkeypatch)
    sweep_and_send(now)
    monkeypatch.undo()
    s.record_reading(pump=filled, read_at=now + timedelta(minutes=10), reservoir_volume_ml=D("6"),
                     actor=s.Actor(nurse), now=now + timedelta(minutes=10))
    low = Alert.objects.get(kind="low_reservoir")
    assert low.resolution == "condition cleared"
    assert set(low.notifications.values_list("status", flat=True)) == {"cancelled"}


# ------------------------------------------------------------------- acknowledgement


def test_acknowledging_a_critical_alert_needs_a_reason(filled, nurse):
    sweep_and_send(LRA + timedelta(minutes=40))
    alert = Alert.objects.get(kind="low_reservoir")
    for blank in ("", "   \n "):
        with pytest.raises(ServiceValidationError) as refused:
            acknowledge(alert, user=nurse, reason=blank, now=LRA + timedelta(hours=1))
        assert refused.value.message_dict == {
            "reason": ["Give a reason to acknowledge a critical alert: what was done, or why it can wait."]
        }
    with pytest.raises(ServiceValidationError) as refused:
        acknowledge(alert, user=nurse, reason="x" * 501, now=LRA + timedelta(hours=1))
    assert refused.value.message_dict == {"reason": ["Keep the reason under 500 characters."]}
    alert.refresh_from_db()
    assert alert.acknowledged_at is None and alert.next_repeat_at is not None  # nothing changed

    acked = acknowledge(alert, user=nurse, reason="  Called the patient: refill at 09:00  ",
                               now=LRA + timedelta(hours=1))
    assert (acked.acknowledged_at, acked.acknowledged_by, acked.acknowledgement_reason, acked.resolved_at) == (
        LRA + timedelta(hours=1), nurse, "Called the patient: refill at 09:00", None)
    record = acked.history.order_by("-history_id").first()  # the audit history keeps who, when and why
    assert (record.acknowledged_by_id, record.acknowledgement_reason, record.history_user_id) == (
        nurse.pk, "Called the patient: refill at 09:00", nurse.pk)


def test_a_warning_is_acknowledged_without_a_reason(filled, nurse):
    sweep_and_send(LRA + timedelta(minutes=40))
    overdue = acknowledge(Alert.objects.get(kind="refill_overdue"), user=nurse, now=LRA + timedelta(hours=1))
    assert (overdue.acknowledged_by, overdue.acknowledgement_reason) == (nurse, "")


def test_a_viewer_may_not_acknowledge(filled, clinic):
    sweep_and_send(LRA + timedelta(minutes=40))
    viewer = make_user("vic", clinic, "viewer")
    alert = Alert.objects.get(kind="low_reservoir")
    with pytest.raises(Forbidden) as refused:
        acknowledge(alert, user=viewer, reason="seen", now=LRA + timedelta(hours=1))
    assert refused.value.message == "Your role in this clinic does not allow acknowledging alerts."
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_an_api_client_acknowledges_with_a_reason_under_its_name(filled):
    sweep_and_send(LRA + timedelta(minutes=40))
    acked = acknowledge(Alert.objects.get(kind="low_reservoir"), external="api client EHR",
                               reason="Refill booked in the EHR", now=LRA + timedelta(hours=1))
    assert (acked.acknowledged_by, acked.acknowledged_by_external, acked.acknowledgement_reason) == (
        None, "api client EHR", "Refill booked in the EHR")


def test_an_acknowledged_may_run_empty_alert_does_not_silence_the_empty_one(filled, nurse):
    sweep_and_send(WINDOW)
    before = Alert.objects.get(kind="withdrawal_risk")
    fill = f"fill:{filled.refills.get().pk}"
    assert (before.episode, before.message) == (fill, "may run empty (worst case) at 2026-04-23 10:00 CDT")
    assert sent("withdrawal_risk")[0].subject == "[CRITICAL] Withdrawal risk: MRN MRN001 (AG)"
    assert ("Detail: The reservoir may run empty (worst case) at 2026-04-23 10:00 CDT (in 3 days)."
            in sent("withdrawal_risk")[0].body.splitlines())
    acknowledge(before, user=nurse, reason="Patient on holiday; refill booked for 04-22",
                       now=WINDOW + timedelta(hours=1))
    sweep_and_send(WINDOW + timedelta(hours=6))  # acknowledged: no reminders
    assert len(sent("withdrawal_risk")) == 3
    mail.outbox.clear()

    sweep_and_send(EMPTY + timedelta(hours=2))  # the pump passed empty (worst case) two hours ago
    empty = Alert.objects.get(kind="withdrawal_risk", resolved_at__isnull=True)
    assert (empty.episode, empty.severity, empty.acknowledged_at, empty.message) == (
        f"{fill}:empty", "critical", None, "empty (worst case) since 2026-04-23 10:00 CDT")
    before.refresh_from_db()
    assert (before.resolution, before.acknowledgement_reason) == (
        "superseded: the pump is past empty (worst case), a new alert says so",
        "Patient on holiday; refill booked for 04-22")
    messages = sent("withdrawal_risk")
    assert sorted(m.to[0] for m in messages) == [
        "nina@clinic.example", "oncall@clinic.example", "ward@clinic.example"]  # escalation list at once
    assert {m.subject for m in messages} == {"[CRITICAL] Withdrawal risk (reservoir empty): MRN MRN001 (AG)"}
    lines = messages[0].body.splitlines()
    assert lines[0] == "CRITICAL: Withdrawal risk (reservoir empty) [escalated]"
    assert "Detail: The reservoir has been empty (worst case) since 2026-04-23 10:00 CDT (2 hours ago)." in lines
    assert ("What to do: The reservoir has run empty (worst case): the patient may be in baclofen withdrawal now. "
            "Contact the patient at once, refill urgently, and assess for withdrawal (fever, altered mental "
            "state, rebound spasticity); treat signs of withdrawal as an emergency.") in lines
    assert not any("may run empty" in line for line in lines)
    mail.outbox.clear()
    sweep_and_send(EMPTY + timedelta(hours=4))  # the empty alert repeats every 2 hours until acknowledged
    assert [m.subject for m in sent("withdrawal_risk")] == [
        "[CRITICAL] Withdrawal risk (reservoir empty): MRN MRN001 (AG) (reminder 1)"] * 3


def test_acknowledging_twice_changes_nothing(filled, nurse, prescriber):
    sweep_and_send(LRA + timedelta(minutes=40))
    alert = Alert.objects.get(kind="low_reservoir")
    acknowledge(alert, user=nurse, reason="Refill at 09:00", now=LRA + timedelta(hours=1))
    again = acknowledge(alert, user=prescriber, reason="Also seen", now=LRA + timedelta(hours=2))
    assert (again.acknowledged_by, again.acknowledgement_reason, again.acknowledged_at) == (
        nurse, "Refill at 09:00", LRA + timedelta(hours=1))


# --------------------------------------------------------------------- drug expired


@pytest.fixture
def short_stability(pump, prescriber, second_prescriber, recipients):  # noqa: F811
    """The worked-example pump filled at T0 with a product stable for 30 days: the drug
    expires 2026-03-04 09:00 CST, seven weeks before the reservoir runs empty."""
    product = DrugProduct.objects.create(
        code="baclofen-30d", name="Baclofen, 30-day stability", drug=Drug.objects.get(code="baclofen"),
        concentration_mcg_per_ml=D(1000), stability_days=30,
    )
    s.record_refill(
        pump=pump, performed_at=T0, added_volume_ml=D(36), concentration_mcg_per_ml=D(1000), drug_product=product,
        actor=s.Actor(prescriber),
        program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)), now=WRITE_NOW,
    )
    s.verify_program(program=Program.objects.get(), actor=s.Actor(second_prescriber), now=WRITE_NOW)
    pump.refresh_from_db()
    assert pump.drug_expires_at == datetime(2026, 3, 4, 9, 0, tzinfo=CHICAGO)
    return pump


def wake_at(pump, moment):
    """Make the pump due at ``moment`` (services puts the drug's expiry among a pump's
    next_change_at instants; set here so that these tests do not depend on it)."""
    Pump.objects.filter(pk=pump.pk).update(next_change_at=moment)


def test_expired_drug_raises_one_warning_once_per_refill(short_stability):
    expires = short_stability.drug_expires_at
    wake_at(short_stability, expires - timedelta(minutes=1))
    sweep_and_send(expires - timedelta(minutes=1))
    assert not Alert.objects.filter(kind="drug_expired").exists()
    for moment in (expires, expires + timedelta(minutes=5), expires + timedelta(days=1, hours=3)):
        wake_at(short_stability, moment)
        sweep_and_send(moment)
        short_stability.refresh_from_db()
        evaluate_pump(short_stability, moment)  # even a direct re-evaluation adds nothing
    alert = Alert.objects.get(kind="drug_expired")
    refill = short_stability.refills.get()
    assert (alert.episode, alert.severity, alert.due_at, alert.created_at, alert.message, alert.next_repeat_at) == (
        f"drug:{refill.pk}", "warning", expires, expires,
        "the drug passed its stability date on 2026-03-04", None)
    messages = sent("drug_expired")
    assert sorted(m.to[0] for m in messages) == ["nina@clinic.example", "ward@clinic.example"]  # once each
    assert {m.subject for m in messages} == {"[WARNING] Drug expired: MRN MRN001 (AG)"}
    assert messages[0].extra_headers == {
        "X-Clinic-Alert-Kind": "drug_expired", "X-Clinic-Alert-Severity": "warning",
        "X-Clinic-Alert-Id": str(alert.pk)}
    lines = messages[0].body.splitlines()
    assert "When: 2026-03-04 09:00 CST" in lines  # sent at the expiry instant itself
    # the fill it is about, its product by name (not its code "baclofen-30d")
    assert "Refill: 2026-02-02 09:00 CST (30 days ago); Baclofen, 30-day stability; 36 mL added" in lines
    assert ("<tr><th align=\"left\">Refill</th><td>2026-02-02 09:00 CST (30 days ago); Baclofen, 30-day stability; "
            "36 mL added</td></tr>") in messages[0].alternatives[0][0]
    assert ("Detail: The drug in the reservoir passed its stability date on 2026-03-04 (today): "
            "refill with fresh drug.") in lines
    assert ("What to do: The drug in the reservoir is past its stability date: refill with fresh drug (empty "
            "the reservoir first) and book the refill now.") in lines
    # a warning needs no reason to acknowledge
    assert acknowledge(alert, now=expires + timedelta(days=2)).acknowledgement_reason == ""


def test_expired_drug_turns_critical_past_empty_and_a_new_refill_resolves_it(short_stability, nurse):
    expires = short_stability.drug_expires_at
    wake_at(short_stability, expires)
    sweep_and_send(expires)
    alert = Alert.objects.get(kind="drug_expired")
    assert alert.severity == "warning"
    sweep_and_send(EMPTY + timedelta(minutes=1))  # the reservoir's worst-case empty instant passed
    alert.refresh_from_db()
    assert (alert.severity, alert.resolved_at) == ("critical", None)
    assert len(sent("drug_expired")) == 2  # e-mailed once: no repeat for the upgrade
    with pytest.raises(ServiceValidationError):  # now critical: a reason is needed
        acknowledge(alert, user=nurse, now=EMPTY + timedelta(minutes=2))
    refill_at = EMPTY + timedelta(hours=1)
    s.record_refill(
        pump=short_stability, performed_at=refill_at, extracted_volume_ml=D("0"), added_volume_ml=D(36),
        concentration_mcg_per_ml=D(1000), actor=s.Actor(nurse), now=refill_at,
    )
    alert.refresh_from_db()
    assert (alert.resolved_at, alert.resolution) == (refill_at, "a new refill was recorded")


def test_a_pump_empty_before_its_drug_expires_raises_the_drug_alert_critical(filled):
    expires = datetime(2026, 8, 1, 10, 0, tzinfo=CHICAGO)  # 180 x 24 h after T0 (CST), long after empty
    filled.refresh_from_db()
    assert filled.drug_expires_at == expires
    wake_at(filled, expires)
    sweep_and_send(expires)
    alert = Alert.objects.get(kind="drug_expired")
    assert alert.severity == "critical"
    assert {m.subject for m in sent("drug_expired")} == {"[CRITICAL] Drug expired: MRN MRN001 (AG)"}
