"""No stop without a plan (docs/clinical-rules.md §15): an explant, or a program that stops
delivery (basal daily dose 0 and no on-demand bolus), is saved with its withdrawal plan in
the same transaction: taper completed, an oral baclofen bridge (with its dose) or none
(with a reason). With none, a critical ``withdrawal_risk`` alert (episode
``stop:<plan id>``) is open from the stop for the clinic's withdrawal window and until it
is acknowledged with a reason (``pumps.symptom_alerts``)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q

from pumps import symptom_alerts as dose_alerts
from pumps.alerting import evaluate as alert_evaluate
from pumps.alerting.rules import Wanted
from pumps.models import Alert, AlertKind, Program, Pump, WithdrawalPlan

from .base import REASON_MAX, Actor, _Errors, _identifier, _stamp, _text, q3

PLAN_FIELD = "withdrawal_plan"
DOSE_FIELD = "oral_bridge_dose"
REASON_FIELD = "withdrawal_plan_reason"
BRIDGE_DOSE_MAX = 200

MSG_PLAN_EXPLANT = (
    "An explant stops intrathecal baclofen: give the withdrawal plan (taper_completed, oral_bridge with "
    "its dose, or none with a reason)."
)
MSG_PLAN_PROGRAM = (
    "This program stops delivery (0 mcg/day and no on-demand bolus): give the withdrawal plan "
    "(taper_completed, oral_bridge with its dose, or none with a reason)."
)
MSG_PLAN_CHOICE = "Must be one of: taper_completed, oral_bridge, none."
MSG_PLAN_NOT_A_STOP = (
    "This program does not stop delivery: a withdrawal plan goes with an explant or a program that "
    "stops delivery. Leave it empty."
)
MSG_BRIDGE_DOSE = "Give the oral baclofen bridge dose (for example 10 mg four times a day)."
MSG_BRIDGE_DOSE_UNUSED = "Only an oral bridge has a dose: leave this empty."
MSG_REASON = "Give the reason there is no plan against withdrawal."
MSG_REASON_UNUSED = "Only a plan of none has a reason here: leave this empty."


def stops_delivery(daily_dose_mcg, ptm_bolus_mcg, ptm_max_per_day) -> bool:
    """A program that delivers nothing: no basal dose and no on-demand bolus, as stored (to
    0.001 mcg: a bolus that rounds to 0 is none), so validation and the save agree."""
    no_bolus = not ptm_bolus_mcg or not q3(ptm_bolus_mcg) or not ptm_max_per_day
    return daily_dose_mcg is not None and q3(daily_dose_mcg) == 0 and no_bolus


def validate_plan(errors: _Errors, prefix: str, *, plan: str | None, oral_bridge_dose: str, reason: str,
                  stop: str | None) -> None:
    """The plan's rules under ``prefix`` (``program.`` inside a refill). ``stop``: the
    kind of stop (``explant``, ``program``) or None when the write stops nothing (then no
    plan may be given)."""
    plan = (plan or "").strip() if isinstance(plan, str) else plan
    dose = (oral_bridge_dose or "").strip()
    why = (reason or "").strip()
    if stop is None:
        if plan:
            errors.add(prefix + PLAN_FIELD, MSG_PLAN_NOT_A_STOP)
        return
    if not plan:
        errors.add(prefix + PLAN_FIELD, MSG_PLAN_EXPLANT if stop == WithdrawalPlan.Stop.EXPLANT else MSG_PLAN_PROGRAM)
        return
    if plan not in WithdrawalPlan.Plan.values:
        errors.add(prefix + PLAN_FIELD, MSG_PLAN_CHOICE)
        return
    if plan == WithdrawalPlan.Plan.ORAL_BRIDGE and not dose:
        errors.add(prefix + DOSE_FIELD, MSG_BRIDGE_DOSE)
    if plan != WithdrawalPlan.Plan.ORAL_BRIDGE and dose:
        errors.add(prefix + DOSE_FIELD, MSG_BRIDGE_DOSE_UNUSED)
    if plan == WithdrawalPlan.Plan.NONE and not why:
        errors.add(prefix + REASON_FIELD, MSG_REASON)
    if plan != WithdrawalPlan.Plan.NONE and why:
        errors.add(prefix + REASON_FIELD, MSG_REASON_UNUSED)
    if len(dose) > BRIDGE_DOSE_MAX:
        errors.add(prefix + DOSE_FIELD, f"Ensure this field has no more than {BRIDGE_DOSE_MAX} characters.")
    _identifier(errors, prefix + DOSE_FIELD, dose)
    _text(errors, prefix + REASON_FIELD, why, REASON_MAX)


def save_plan(*, pump: Pump, stop: str, stopped_at: datetime, plan: str, oral_bridge_dose: str, reason: str,
              actor: Actor, now: datetime, program: Program | None = None) -> WithdrawalPlan:
    """The plan row (validated already), and with ``none`` its critical alert, queued for
    the escalation list at once: in the caller's transaction."""
    user = actor.user if actor.is_person else None
    row = WithdrawalPlan(
        pump=pump, stop=stop, program=program, stopped_at=stopped_at, plan=plan.strip(),
        oral_bridge_dose=(oral_bridge_dose or "").strip() if plan == WithdrawalPlan.Plan.ORAL_BRIDGE else "",
        reason=(reason or "").strip() if plan == WithdrawalPlan.Plan.NONE else "",
        recorded_by=user, recorded_by_external="" if user else (actor.label or "system")[:100],
    )
    _stamp(row, actor)
    row.save()
    if row.plan == WithdrawalPlan.Plan.NONE:
        _raise_stop_alert(pump, row, now)
    return row


def _raise_stop_alert(pump: Pump, plan: WithdrawalPlan, now: datetime) -> int:
    end = dose_alerts.stop_window_end(plan, pump.clinic.withdrawal_window_hours, now)
    wanted = Wanted(AlertKind.WITHDRAWAL_RISK, f"{dose_alerts.STOP_EPISODE}{plan.pk}", end,
                           dose_alerts.stop_message(plan, pump.clinic.tz, end)[:300])
    alert = alert_evaluate.create_alert(pump.clinic, pump, wanted, now)
    return alert_evaluate.notify(alert, 0, now, fresh=True) if alert is not None else 0


def void_plan_of(program: Program, actor: Actor, now: datetime) -> WithdrawalPlan | None:
    """Voiding a program voids the plan it carried and resolves that plan's alert (and
    cancels its pending notifications): in the caller's transaction."""
    plan = WithdrawalPlan.objects.select_for_update().filter(program=program, voided_at__isnull=True).first()
    if plan is None:
        return None
    plan.voided_at, plan.voided_by = now, actor.user if actor.is_person else None
    plan.void_reason = f"program voided: {program.void_reason}"[:REASON_MAX]
    _stamp(plan, actor, "void with its program")
    plan.save()
    resolved = Alert.objects.filter(
        pump_id=plan.pump_id, kind=AlertKind.WITHDRAWAL_RISK, episode=f"{dose_alerts.STOP_EPISODE}{plan.pk}",
        resolved_at__isnull=True,
    ).update(resolved_at=now, resolution=dose_alerts.RESOLVED_PLAN_VOIDED, next_repeat_at=None)
    if resolved:
        alert_evaluate.cancel_pending(
            Q(alert__pump_id=plan.pump_id, alert__episode=f"{dose_alerts.STOP_EPISODE}{plan.pk}")
        )
    return plan
