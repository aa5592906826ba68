"""The dose-and-response alerts (docs/clinical-rules.md §11.8, §15): what a symptom screen
or a stop of delivery without a plan calls for, in words, and when such an alert ends.

- ``withdrawal_symptoms`` / ``overdose_symptoms`` (critical, episode ``assessment:<id>``):
  one per assessment and family whose screen has a sign answered yes, raised when the
  assessment is recorded. An overdose alert names a dose increase in the 72 hours before
  the assessment. It resolves when its assessment is voided, or, once acknowledged, when
  a later live assessment of the pump screens negative for that family; never while it is
  unacknowledged otherwise.
- ``withdrawal_risk`` of a stop (episode ``stop:<plan id>``, critical): a stop of delivery
  (explant, or a program delivering nothing) recorded with the plan "none". Open from the
  stop for the clinic's withdrawal window (counted from when the stop is recorded, if
  later: ``due_at`` is the end of the window); it resolves once the window has passed and
  it has been acknowledged (with a reason, as every critical alert), or when its plan is
  voided with the program that carried it.

These alerts are raised and voided by the services (``pumps.services.assessments``,
``pumps.services.withdrawal``), not by the periodic re-evaluation of a pump's projection:
an explanted pump keeps them. ``settle`` resolves the acknowledged ones whose condition
has ended (the sweep, an acknowledgement, and the services call it).

This module reads models only: the alerting module imports it, not the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Q

from . import projection as pj
from .models import Alert, AlertKind, Assessment, Program, Severity, WithdrawalPlan

ASSESSMENT_EPISODE = "assessment:"
STOP_EPISODE = "stop:"
SYMPTOM_KINDS = (AlertKind.WITHDRAWAL_SYMPTOMS, AlertKind.OVERDOSE_SYMPTOMS)
#: The alerts of this module: the periodic evaluation of a pump neither raises nor
#: resolves them (an explant does not end them either).
OWN_ALERTS = Q(kind__in=SYMPTOM_KINDS) | Q(kind=AlertKind.WITHDRAWAL_RISK, episode__startswith=STOP_EPISODE)
#: An overdose sign this long after a dose increase names the increase (§15).
DOSE_INCREASE_WINDOW = timedelta(hours=72)

TITLE_STOP = "Withdrawal risk (delivery stopped)"
ADVICE_STOP = (
    "Intrathecal baclofen was stopped with no plan against withdrawal (no taper, no oral bridge). "
    "Watch the patient for withdrawal through the window (itching, low blood pressure, "
    "paresthesias, fever, altered mental status, rebound spasticity, muscle rigidity) and treat "
    "signs of withdrawal as an emergency."
)

RESOLVED_ASSESSMENT_VOIDED = "the assessment was voided"
RESOLVED_PLAN_VOIDED = "the withdrawal plan was voided with the program that carried it"
RESOLVED_WINDOW_PASSED = "acknowledged, and the withdrawal window after the stop has passed"
#: "...: a later assessment at 2026-03-02 09:00 CST screened negative for withdrawal signs"
LATER_NEGATIVE_PREFIX = "acknowledged, and a later assessment at "
RESOLVED_LATER_NEGATIVE = LATER_NEGATIVE_PREFIX + "{at} screened negative for {family} signs"

FAMILY_WORDS = {AlertKind.WITHDRAWAL_SYMPTOMS: "withdrawal", AlertKind.OVERDOSE_SYMPTOMS: "overdose"}


def is_own(alert: Alert) -> bool:
    return alert.kind in SYMPTOM_KINDS or is_stop_episode(alert)


def is_stop_episode(alert: Alert) -> bool:
    return alert.kind == AlertKind.WITHDRAWAL_RISK and alert.episode.startswith(STOP_EPISODE)


def _n(value: Decimal) -> str:
    return f"{Decimal(value).normalize():f}"


# ------------------------------------------------------------------ symptom alerts


@dataclass(frozen=True)
class SymptomAlert:
    kind: str
    episode: str
    due_at: datetime
    message: str
    severity: str = Severity.CRITICAL


def signs_of(assessment: Assessment, kind: str) -> list[str]:
    return assessment.withdrawal_signs() if kind == AlertKind.WITHDRAWAL_SYMPTOMS else assessment.overdose_signs()


def dose_increase_before(programs: list[Program], at: datetime) -> tuple[Program, Program] | None:
    """The latest dose increase in the 72 hours up to ``at``: (the program before, the
    program that raised the basal daily dose), among live programs (``programs`` in
    effective order), or None."""
    live = sorted((p for p in programs if p.voided_at is None), key=lambda p: (p.effective_at, p.pk or 0))
    found = None
    for before, after in zip(live, live[1:], strict=False):
        if at - DOSE_INCREASE_WINDOW <= after.effective_at <= at and after.daily_dose_mcg > before.daily_dose_mcg:
            found = (before, after)
    return found


def symptom_alerts_for(assessment: Assessment, programs: list[Program], tz) -> list[SymptomAlert]:
    """The alerts a live assessment calls for: one per family with a sign answered yes,
    naming the signs (and, for overdose, a dose increase in the 72 hours before)."""
    if assessment.voided_at is not None:
        return []
    at = pj.local_instant(assessment.assessed_at, tz)
    out = []
    withdrawal = assessment.withdrawal_signs()
    if withdrawal:
        out.append(SymptomAlert(
            AlertKind.WITHDRAWAL_SYMPTOMS, f"{ASSESSMENT_EPISODE}{assessment.pk}", assessment.assessed_at,
            f"Withdrawal signs recorded at {at}: {', '.join(withdrawal)}.",
        ))
    overdose = assessment.overdose_signs()
    if overdose:
        message = f"Overdose signs recorded at {at}: {', '.join(overdose)}."
        increase = dose_increase_before(programs, assessment.assessed_at)
        if increase is not None:
            before, after = increase
            message += (f" The daily dose was increased from {_n(before.daily_dose_mcg)} to "
                        f"{_n(after.daily_dose_mcg)} mcg/day at {pj.local_instant(after.effective_at, tz)}.")
        out.append(SymptomAlert(
            AlertKind.OVERDOSE_SYMPTOMS, f"{ASSESSMENT_EPISODE}{assessment.pk}", assessment.assessed_at, message,
        ))
    return out


def later_negative(assessment: Assessment, kind: str, assessments: list[Assessment]) -> Assessment | None:
    """The first live assessment after ``assessment`` whose screen is negative for the
    family of ``kind`` (``assessments``: the pump's, any order)."""
    later = sorted(
        (a for a in assessments if a.voided_at is None and a.pk != assessment.pk
         and (a.assessed_at, a.pk) > (assessment.assessed_at, assessment.pk)),
        key=lambda a: (a.assessed_at, a.pk),
    )
    return next((a for a in later if not signs_of(a, kind)), None)


def assessment_id(alert: Alert) -> int | None:
    key = alert.episode.removeprefix(ASSESSMENT_EPISODE)
    return int(key) if alert.episode.startswith(ASSESSMENT_EPISODE) and key.isascii() and key.isdigit() else None


def negative_resolution(later: Assessment, kind: str, tz) -> str:
    return RESOLVED_LATER_NEGATIVE.format(at=pj.local_instant(later.assessed_at, tz), family=FAMILY_WORDS[kind])


# --------------------------------------------------------------------- stop alerts


def stop_window_end(plan: WithdrawalPlan, window_hours: int, recorded_at: datetime) -> datetime:
    """The end of the watch after a stop without a plan: the clinic's withdrawal window
    from the stop, or from when it was recorded if later."""
    return max(plan.stopped_at, recorded_at) + timedelta(hours=window_hours)


def stop_message(plan: WithdrawalPlan, tz, window_end: datetime) -> str:
    what = "the pump was explanted" if plan.stop == WithdrawalPlan.Stop.EXPLANT else "a program stops delivery"
    return (f"Intrathecal baclofen stopped at {pj.local_instant(plan.stopped_at, tz)} ({what}) with no plan "
            f"against withdrawal; watch for withdrawal until {pj.local_instant(window_end, tz)}.")


# -------------------------------------------------------------------------- settle


def settle(now: datetime, *, pump_id: int | None = None, alert_id: int | None = None) -> list[int]:
    """Resolve the open, acknowledged alerts of this module whose condition has ended: a
    stop whose window has passed, a symptom screen followed by a live assessment negative
    for that family. Returns the ids resolved (their pending notifications are the
    caller's to cancel). An unacknowledged alert is never resolved here."""
    candidates = Alert.objects.filter(OWN_ALERTS, resolved_at__isnull=True, acknowledged_at__isnull=False)
    if pump_id is not None:
        candidates = candidates.filter(pump_id=pump_id)
    if alert_id is not None:
        candidates = candidates.filter(pk=alert_id)
    resolved: list[int] = []
    stops = candidates.filter(kind=AlertKind.WITHDRAWAL_RISK, due_at__lte=now)
    resolved += list(stops.values_list("pk", flat=True))
    if resolved:
        Alert.objects.filter(pk__in=resolved, resolved_at__isnull=True).update(
            resolved_at=now, resolution=RESOLVED_WINDOW_PASSED, next_repeat_at=None)
    for alert in candidates.filter(kind__in=SYMPTOM_KINDS).select_related("clinic"):
        own_id = assessment_id(alert)
        assessment = Assessment.objects.filter(pk=own_id).first() if own_id is not None else None
        if assessment is None:
            continue
        later = later_negative(assessment, alert.kind, list(
            Assessment.objects.live().filter(pump_id=alert.pump_id, assessed_at__gte=assessment.assessed_at)))
        if later is not None and Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(
                resolved_at=now, resolution=negative_resolution(later, alert.kind, alert.clinic.tz),
                next_repeat_at=None):
            resolved.append(alert.pk)
    return resolved
