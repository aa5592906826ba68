"""Readings, events, appointments and voids."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from clinic import permissions
from clinic.models import Clinic
from pumps import projection as pj
from pumps.errors import Forbidden
from pumps.history import (
    bump_version,
    lock_pump,
)
from pumps.models import (
    Appointment,
    Assessment,
    Event,
    Program,
    Pump,
    Reading,
    Refill,
)

from .assessments import sync_symptom_alerts, void_assessment
from .base import (
    MSG_VOID_CARRIED_PROGRAM,
    NOTES_MAX,
    REASON_MAX,
    Actor,
    _check_instant,
    _Errors,
    _n,
    _require_implanted,
    _stamp,
    _text,
    after_write,
    authorize,
    clinician_for,
    evaluate_alerts,
    mark_voided,
    q3,
)
from .withdrawal import void_plan_of


@transaction.atomic
def record_reading(
    *, pump: Pump, read_at: datetime, reservoir_volume_ml: Decimal | None, actor: Actor, eri: bool = False,
    performed_by: str | None = None, notes: str = "", now: datetime | None = None, if_match: int | None = None,
) -> Reading:
    now = now or timezone.now()
    pump = lock_pump(pump, if_match)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    _check_instant(errors, "read_at", read_at, pump, now)
    _text(errors, "notes", notes, NOTES_MAX)
    _require_implanted(errors, pump, read_at)
    if reservoir_volume_ml is None:
        errors.add("reservoir_volume_ml", "This field is required.")
    elif reservoir_volume_ml < 0:
        errors.add("reservoir_volume_ml", "Must be zero or more.")
    elif reservoir_volume_ml > pump.model.reservoir_ml:
        errors.add(
            "reservoir_volume_ml",
            f"Exceeds the reservoir capacity of {_n(pump.model.reservoir_ml)} mL.",
        )
    errors.raise_if_any()
    user, external = clinician_for(actor, pump.clinic, "performed_by", performed_by)
    reading = Reading(
        pump=pump, read_at=read_at, reservoir_volume_ml=q3(reservoir_volume_ml), eri=eri,
        performed_by=user, performed_by_external=external, notes=notes or "",
    )
    _stamp(reading, actor)
    reading.save()
    if eri:
        # Medtronic: the pump stops 90 days after the elective replacement indicator.
        eos = pj.local_date(read_at, pump.clinic.tz) + timedelta(days=90)
        if pump.expected_end_of_service is None or eos < pump.expected_end_of_service:
            pump.expected_end_of_service = eos
            _stamp(pump, actor, "ERI reading")
            pump.save(update_fields=["expected_end_of_service", "updated_at"])
    after_write(pump, now, since=read_at)
    return reading


# ------------------------------------------------------------------------- events


@transaction.atomic
def record_event(
    *, pump: Pump, kind: str, occurred_at: datetime, actor: Actor, notes: str = "", now: datetime | None = None,
) -> Event:
    now = now or timezone.now()
    pump = lock_pump(pump)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    _text(errors, "notes", notes, NOTES_MAX)
    if kind not in Event.Kind.values:
        errors.add("kind", f"Must be one of: {', '.join(Event.Kind.values)}.")
    _check_instant(errors, "occurred_at", occurred_at, pump, now)
    errors.raise_if_any()
    event = Event(pump=pump, kind=kind, occurred_at=occurred_at, notes=notes or "", recorded_by=actor.user)
    _stamp(event, actor)
    event.save()
    bump_version(pump)
    evaluate_alerts(pump, now)
    return event


# ------------------------------------------------------------------- appointments

#: ``update_appointment(assigned_to=KEEP)``: leave the assignee as it is.
KEEP: Any = object()
ASSIGNEE_ROLES = "a nurse, pharmacist, prescriber or clinic administrator"


def _assignee(errors: _Errors, clinic: Clinic, value) -> Any:
    """The user an appointment is assigned to, from a user, a username or nothing (None,
    ""): an active member of the clinic whose role records (a superuser too). Anyone else
    is refused with the same message, so that a username of another clinic is not told
    apart from an unknown one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    user = value
    if isinstance(value, str):
        name = value.strip()
        user = get_user_model().objects.filter(username=name).first() if len(name) <= 150 else None
    else:
        name = value.get_username()
    if user is None or not user.is_active or not permissions.user_may(user, clinic.pk, permissions.Action.RECORD):
        errors.add("assigned_to", f"{name} is not {ASSIGNEE_ROLES} of this clinic: "
                                  "assign the appointment to one, or to nobody.")
        return None
    return user


@transaction.atomic
def schedule_appointment(
    *, pump: Pump, scheduled_for: datetime, actor: Actor, kind: str = Appointment.Kind.REFILL, notes: str = "",
    now: datetime | None = None, assigned_to=None,
) -> Appointment:
    """Book an appointment, assigned to ``assigned_to`` (a user or a username) or nobody."""
    now = now or timezone.now()
    pump = lock_pump(pump)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    _text(errors, "notes", notes, NOTES_MAX)
    if kind not in Appointment.Kind.values:
        errors.add("kind", f"Must be one of: {', '.join(Appointment.Kind.values)}.")
    if scheduled_for is None or timezone.is_naive(scheduled_for):
        errors.add("scheduled_for", "Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z).")
    if pump.explanted_on is not None:
        errors.add("pump", f"This pump was explanted on {pump.explanted_on.isoformat()}.")
    assignee = _assignee(errors, pump.clinic, assigned_to)
    errors.raise_if_any()
    appointment = Appointment(pump=pump, scheduled_for=scheduled_for, kind=kind, notes=notes or "",
                              assigned_to=assignee)
    _stamp(appointment, actor)
    appointment.save()
    evaluate_alerts(pump, now)
    return appointment


@transaction.atomic
def update_appointment(*, appointment: Appointment, actor: Actor, status: str | None = None,
                       scheduled_for: datetime | None = None, notes: str | None = None,
                       assigned_to=KEEP) -> Appointment:
    """Change what is given; ``assigned_to``: a user or a username, or None / "" for nobody."""
    pump = lock_pump(appointment.pump_id)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    appointment = Appointment.objects.select_for_update().get(pk=appointment.pk)
    errors = _Errors()
    _text(errors, "notes", notes, NOTES_MAX)
    if status is not None and status not in Appointment.Status.values:
        errors.add("status", f"Must be one of: {', '.join(Appointment.Status.values)}.")
    if scheduled_for is not None and timezone.is_naive(scheduled_for):
        errors.add("scheduled_for", "Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z).")
    assignee = KEEP if assigned_to is KEEP else _assignee(errors, pump.clinic, assigned_to)
    errors.raise_if_any()
    if status is not None:
        appointment.status = status
    if scheduled_for is not None:
        appointment.scheduled_for = scheduled_for
    if notes is not None:
        appointment.notes = notes
    if assignee is not KEEP:
        appointment.assigned_to = assignee
    _stamp(appointment, actor)
    appointment.save()
    # a cancelled refill appointment brings the due-soon alert back
    evaluate_alerts(pump, timezone.now())
    return appointment


# -------------------------------------------------------------------------- voids


@transaction.atomic
def void_record(*, record, reason: str, actor: Actor, now: datetime | None = None):
    """Void a refill, reading, program, event, appointment or assessment: it stays in the
    history but takes no part in projections; later records' computed values are
    recomputed. A program's withdrawal plan is voided with it (its alert resolves); an
    assessment recorded with a refill is voided with the refill (docs/clinical-rules.md §15)."""
    if isinstance(record, Assessment):
        return void_assessment(assessment=record, reason=reason, actor=actor, now=now)
    now = now or timezone.now()
    pump = lock_pump(record.pump_id)
    record = type(record).objects.select_for_update().get(pk=record.pk)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    carried = (
        Program.objects.filter(refill=record, voided_at__isnull=True).first() if isinstance(record, Refill) else None
    )
    if isinstance(record, Program) or carried is not None:
        # A refill that carried a program stands or falls with it, and only a prescriber
        # voids a program: the void of such a refill is a prescriber's too (H-09).
        try:
            authorize(actor, pump.clinic_id, permissions.Action.PROGRAM)
        except Forbidden:
            if carried is None:
                raise
            raise Forbidden(MSG_VOID_CARRIED_PROGRAM) from None
    mark_voided(record, reason=reason, actor=actor, now=now)
    if carried is not None:  # a program saved with a refill stands or falls with it
        carried.voided_at, carried.void_reason = now, f"refill voided: {reason.strip()}"[:REASON_MAX]
        carried.voided_by = record.voided_by
        _stamp(carried, actor, "void with its refill")
        carried.save()
        void_plan_of(carried, actor, now)
    if isinstance(record, Program):
        void_plan_of(record, actor, now)
    if isinstance(record, Refill):
        _void_refill_assessment(record, pump, actor, now)
    moment = getattr(record, "performed_at", None) or getattr(record, "read_at", None) or getattr(
        record, "effective_at", None
    )
    if isinstance(record, Refill | Reading | Program):
        after_write(pump, now, since=moment)
    else:
        bump_version(pump)
        evaluate_alerts(pump, now)
    return record


def _void_refill_assessment(refill: Refill, pump: Pump, actor: Actor, now: datetime) -> None:
    """An assessment recorded with a refill is voided with it (a refill on the wrong pump
    must not leave a symptom screen, and its alerts, on that pump)."""
    assessment = Assessment.objects.select_for_update().filter(refill=refill, voided_at__isnull=True).first()
    if assessment is None:
        return
    assessment.voided_at, assessment.voided_by = now, refill.voided_by
    assessment.void_reason = f"refill voided: {refill.void_reason}"[:REASON_MAX]
    _stamp(assessment, actor, "void with its refill")
    assessment.save()
    sync_symptom_alerts(pump, now)
