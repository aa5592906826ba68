"""Visit assessments (docs/clinical-rules.md §15): Modified Ashworth grades per limb, the
Penn spasm frequency, pain, a goal note, and a yes/no screen for each withdrawal and each
overdose sign of intrathecal baclofen. Recorded on their own (``record_assessment``) or
with a refill (``record_refill(..., assessment=AssessmentInput(...))``, same transaction).
A sign answered yes raises a critical alert for the assessment, exactly once
(``pumps.symptom_alerts``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from clinic import permissions
from pumps import symptom_alerts as dose_alerts
from pumps import symptoms
from pumps.alerting import evaluate as alert_evaluate
from pumps.alerting.rules import Wanted
from pumps.errors import ServiceValidationError
from pumps.history import bump_version, load_history, lock_pump
from pumps.models import Alert, Assessment, Pump, Refill

from .base import (
    NOTES_MAX,
    Actor,
    _check_instant,
    _Errors,
    _stamp,
    _text,
    authorize,
    clinician_for,
    mark_voided,
)

GOAL_MAX = 1000
SIGN_FIELDS = (*symptoms.withdrawal_fields(), *symptoms.overdose_fields())
ASHWORTH_VALUES = [code for code, _ in symptoms.ASHWORTH_GRADES]
MSG_ASHWORTH = "Must be one of: " + ", ".join(ASHWORTH_VALUES) + " (or blank: not assessed)."
MSG_PENN = "Must be a whole number from 0 to 4 (or blank: not assessed)."
MSG_PAIN = "Must be a whole number from 0 to 10 (or blank: not assessed)."
MSG_SIGN = "Must be true or false."
MSG_SIGNS = "Unknown signs: {names}."


@dataclass(frozen=True)
class AssessmentInput:
    """What a form, an API body or a refill's section says about an assessment. Ashworth
    grades are the codes of ``pumps.symptoms.ASHWORTH_GRADES`` ("" or None: not
    assessed); ``signs``: {field name: bool} for the signs answered (a sign left out is
    "no"); field names from ``symptoms.withdrawal_fields()`` / ``overdose_fields()``."""

    ashworth_upper_left: str | None = ""
    ashworth_upper_right: str | None = ""
    ashworth_lower_left: str | None = ""
    ashworth_lower_right: str | None = ""
    penn_spasm_frequency: int | None = None
    pain_score: int | None = None
    goal_note: str = ""
    notes: str = ""
    signs: Mapping[str, Any] = field(default_factory=dict)
    assessed_by: str | None = None  # a clinician named by an integration

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AssessmentInput:
        """From a flat mapping: the sign fields at the top level, as the model names them
        (``withdrawal_pruritus``: true), or under ``signs``."""
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "signs"}
        signs = dict(data.get("signs") or {})
        signs.update({k: data[k] for k in SIGN_FIELDS if k in data})
        return cls(**values, signs=signs)


def _validate(errors: _Errors, prefix: str, data: AssessmentInput) -> None:
    for name in symptoms.ashworth_fields():
        value = getattr(data, name)
        if value not in (None, "") and value not in ASHWORTH_VALUES:
            errors.add(prefix + name, MSG_ASHWORTH)
    _whole(errors, prefix + "penn_spasm_frequency", data.penn_spasm_frequency, 4, MSG_PENN)
    _whole(errors, prefix + "pain_score", data.pain_score, 10, MSG_PAIN)
    _text(errors, prefix + "goal_note", data.goal_note, GOAL_MAX)
    _text(errors, prefix + "notes", data.notes, NOTES_MAX)
    unknown = sorted(k for k in data.signs if k not in SIGN_FIELDS)
    if unknown:
        errors.add(prefix + "signs", MSG_SIGNS.format(names=", ".join(unknown)))
    for name, value in data.signs.items():
        if name in SIGN_FIELDS and not isinstance(value, bool):
            errors.add(prefix + name, MSG_SIGN)


def _whole(errors: _Errors, name: str, value, top: int, message: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        errors.add(name, message)


def validate_assessment(errors: _Errors, prefix: str, pump: Pump, data: AssessmentInput, assessed_at: datetime | None,
                        now: datetime, *, instant_field: str = "assessed_at") -> None:
    """Every rule of an assessment, under ``prefix`` (``assessment.`` inside a refill,
    whose instant is the refill's). An assessment may follow an explant (withdrawal is
    watched after a stop); not before the implant, not in the future."""
    if instant_field:
        _check_instant(errors, instant_field, assessed_at, pump, now)
    _validate(errors, prefix, data)


def _assessor(actor: Actor, pump: Pump, name: str | None, field_name: str) -> tuple:
    """Who assessed, as (user, external): the signed-in user; an integration may name a
    staff username of the clinic whose role records, or an external practitioner id."""
    try:
        return clinician_for(actor, pump.clinic, "performed_by", name)
    except ServiceValidationError as exc:
        raise ServiceValidationError({
            field_name: [m.replace("performed_by", "assessed_by") for m in exc.message_dict.get("performed_by", [])]
        }) from None


def save_assessment(pump: Pump, data: AssessmentInput, assessed_at: datetime, actor: Actor, now: datetime,
                    refill: Refill | None = None, field_name: str = "assessed_by") -> Assessment:
    """The assessment row (validated already) and its alerts, in the caller's transaction."""
    user, external = _assessor(actor, pump, data.assessed_by, field_name)
    row = Assessment(pump=pump, assessed_at=assessed_at, assessed_by=user, assessed_by_external=external,
                     refill=refill, penn_spasm_frequency=data.penn_spasm_frequency, pain_score=data.pain_score,
                     goal_note=data.goal_note or "", notes=data.notes or "")
    for name in symptoms.ashworth_fields():
        setattr(row, name, getattr(data, name) or "")
    for name in SIGN_FIELDS:
        setattr(row, name, data.signs.get(name) is True)
    _stamp(row, actor)
    row.save()
    sync_symptom_alerts(pump, now)
    return row


@transaction.atomic
def record_assessment(
    *, pump: Pump, assessed_at: datetime, data: AssessmentInput, actor: Actor, now: datetime | None = None,
    if_match: int | None = None,
) -> Assessment:
    """Record a visit assessment on its own. Any withdrawal sign answered yes raises a
    critical ``withdrawal_symptoms`` alert, any overdose sign a critical
    ``overdose_symptoms`` alert (episode ``assessment:<id>``), queued for the escalation
    list at once in this transaction."""
    now = now or timezone.now()
    pump = lock_pump(pump, if_match)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    validate_assessment(errors, "", pump, data, assessed_at, now)
    errors.raise_if_any()
    row = save_assessment(pump, data, assessed_at, actor, now)
    bump_version(pump)
    return row


@transaction.atomic
def void_assessment(*, assessment: Assessment, reason: str, actor: Actor, now: datetime | None = None) -> Assessment:
    """Void an assessment recorded in error: it stays in the history; its alerts resolve
    ("the assessment was voided") and their pending notifications are cancelled; an
    earlier alert it had settled (a negative screen) opens again. The same rules as
    ``void_record`` (which delegates here)."""
    now = now or timezone.now()
    pump = lock_pump(assessment.pump_id)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    row = Assessment.objects.select_for_update().get(pk=assessment.pk)
    mark_voided(row, reason=reason, actor=actor, now=now)
    sync_symptom_alerts(pump, now)
    bump_version(pump)
    return row


def sync_symptom_alerts(pump: Pump, now: datetime) -> int:
    """Bring the pump's symptom alerts in line with its live assessments (in the caller's
    transaction): raise the missing ones (exactly once: one row per assessment and
    family), resolve those of voided assessments, re-open one whose settling negative
    screen was voided, and settle the acknowledged ones a later negative screen ended.
    Returns the notifications queued."""
    assessments = list(Assessment.objects.filter(pump=pump).order_by("assessed_at", "id"))
    live = [a for a in assessments if a.voided_at is None]
    existing = {(a.kind, a.episode): a for a in
                Alert.objects.filter(pump=pump, kind__in=dose_alerts.SYMPTOM_KINDS).select_related("clinic")}
    programs = load_history(pump).programs
    queued = 0
    wanted_keys = set()
    for assessment in live:
        for w in dose_alerts.symptom_alerts_for(assessment, programs, pump.clinic.tz):
            wanted_keys.add((w.kind, w.episode))
            known = existing.get((w.kind, w.episode))
            if known is None:
                alert = alert_evaluate.create_alert(pump.clinic, pump, Wanted(
                    w.kind, w.episode, w.due_at, w.message[:300], w.severity), now)
                queued += alert_evaluate.notify(alert, 0, now, fresh=True) if alert is not None else 0
            elif known.resolved_at is not None and known.resolution.startswith(dose_alerts.LATER_NEGATIVE_PREFIX) \
                    and dose_alerts.later_negative(assessment, w.kind, live) is None:
                queued += alert_evaluate.reopen(known, Wanted(w.kind, w.episode, w.due_at, w.message[:300],
                                                              w.severity), now)
    gone = [a.pk for key, a in existing.items() if key not in wanted_keys and a.resolved_at is None]
    if gone:
        Alert.objects.filter(pk__in=gone, resolved_at__isnull=True).update(
            resolved_at=now, resolution=dose_alerts.RESOLVED_ASSESSMENT_VOIDED, next_repeat_at=None)
    settled = dose_alerts.settle(now, pump_id=pump.pk)
    if gone or settled:
        alert_evaluate.cancel_pending(Q(alert_id__in=[*gone, *settled]))
    return queued
