"""CNS-depressant co-medication (docs/clinical-rules.md §15): opioids, benzodiazepines,
oral baclofen and other sedatives add to intrathecal baclofen's sedation and respiratory
depression. A patient's list is recorded, stopped and voided here; a program that raises
the daily dose while one is active needs the prescriber's explicit confirmation
(``check_interaction``, called by every program write)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from clinic import permissions
from pumps import projection as pj
from pumps.models import CoMedication, Patient, Program, Pump

from .base import (
    NOTES_MAX,
    Actor,
    _Errors,
    _identifier,
    _n,
    _stamp,
    _text,
    authorize,
    mark_voided,
)

NAME_MAX = 200
MSG_CATEGORY = "Must be one of: " + ", ".join(CoMedication.Category.values) + "."
MSG_YEAR = "Enter a date between the years 1900 and 2999."
MSG_STARTED_FUTURE = "This date is in the future: record a co-medication from the day it starts."
MSG_STOP_BEFORE_START = "The stop date is before the start date ({started})."
MSG_ALREADY_STOPPED = "This co-medication was already stopped on {stopped}."
MSG_VOIDED = "This co-medication was voided."


def _lock_patient(patient: Patient | int) -> Patient:
    """Writes of one patient's co-medication run one after another (the patient row)."""
    pk = patient if isinstance(patient, int) else patient.pk
    return Patient.objects.select_for_update(of=("self",), no_key=True).select_related("clinic").get(pk=pk)


def _recorder(actor: Actor) -> tuple:
    """Who recorded it: the signed-in user, else the integration or system that acted."""
    if actor.is_person:
        return actor.user, ""
    return None, (actor.label or "system")[:100]


def _check_day(errors: _Errors, field: str, day: date | None, *, required: bool) -> bool:
    if day is None:
        if required:
            errors.add(field, "This field is required.")
        return False
    if not 1900 <= day.year <= 2999:
        errors.add(field, MSG_YEAR)
        return False
    return True


@transaction.atomic
def record_comedication(
    *, patient: Patient, name: str, category: str, started_on: date | None, actor: Actor,
    stopped_on: date | None = None, notes: str = "", now: datetime | None = None,
) -> CoMedication:
    """Add a CNS depressant the patient takes (``category``: opioid, benzodiazepine,
    oral_baclofen, other_sedative), active from ``started_on`` to ``stopped_on``
    (inclusive; open when None). Recorded by the actor."""
    now = now or timezone.now()
    patient = _lock_patient(patient)
    authorize(actor, patient.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        errors.add("name", "This field may not be blank.")
    elif len(name) > NAME_MAX:
        errors.add("name", f"Ensure this field has no more than {NAME_MAX} characters.")
    _identifier(errors, "name", name)
    if category not in CoMedication.Category.values:
        errors.add("category", MSG_CATEGORY)
    _text(errors, "notes", notes, NOTES_MAX)
    today = pj.local_date(now, patient.clinic.tz)
    if _check_day(errors, "started_on", started_on, required=True) and started_on > today:
        errors.add("started_on", MSG_STARTED_FUTURE)
    if _check_day(errors, "stopped_on", stopped_on, required=False) and started_on is not None \
            and stopped_on < started_on:
        errors.add("stopped_on", MSG_STOP_BEFORE_START.format(started=started_on.isoformat()))
    errors.raise_if_any()
    user, external = _recorder(actor)
    row = CoMedication(patient=patient, name=name, category=category, started_on=started_on, stopped_on=stopped_on,
                       recorded_by=user, recorded_by_external=external, notes=notes or "")
    _stamp(row, actor)
    row.save()
    return row


@transaction.atomic
def stop_comedication(
    *, comedication: CoMedication, stopped_on: date | None, actor: Actor, now: datetime | None = None,
) -> CoMedication:
    """The patient stopped taking it: last day ``stopped_on`` (inclusive)."""
    now = now or timezone.now()
    patient = _lock_patient(comedication.patient_id)
    authorize(actor, patient.clinic_id, permissions.Action.RECORD)
    row = CoMedication.objects.select_for_update().get(pk=comedication.pk)
    errors = _Errors()
    if row.is_voided:
        errors.add("non_field_errors", MSG_VOIDED)
    elif row.stopped_on is not None:
        errors.add("non_field_errors", MSG_ALREADY_STOPPED.format(stopped=row.stopped_on.isoformat()))
    if _check_day(errors, "stopped_on", stopped_on, required=True) and stopped_on < row.started_on:
        errors.add("stopped_on", MSG_STOP_BEFORE_START.format(started=row.started_on.isoformat()))
    errors.raise_if_any()
    row.stopped_on = stopped_on
    _stamp(row, actor, "stopped")
    row.save(update_fields=["stopped_on", "updated_at"])
    return row


@transaction.atomic
def void_comedication(
    *, comedication: CoMedication, reason: str, actor: Actor, now: datetime | None = None,
) -> CoMedication:
    """Void a co-medication recorded in error (it stays in the history; it no longer
    counts for the interaction check)."""
    now = now or timezone.now()
    patient = _lock_patient(comedication.patient_id)
    authorize(actor, patient.clinic_id, permissions.Action.RECORD)
    row = CoMedication.objects.select_for_update().get(pk=comedication.pk)
    mark_voided(row, reason=reason, actor=actor, now=now)
    return row


# ------------------------------------------------------------------ the interaction


@dataclass(frozen=True)
class Interaction:
    """A dose increase while CNS depressants are active: what the prescriber confirms."""

    previous_daily_dose_mcg: Decimal
    daily_dose_mcg: Decimal
    comedications: list[CoMedication]

    @property
    def summary(self) -> str:
        """"oxycodone 10 mg twice a day (opioid); diazepam 5 mg (benzodiazepine)"."""
        return "; ".join(f"{c.name} ({c.get_category_display()})" for c in self.comedications)[:500]

    @property
    def message(self) -> str:
        return (
            f"The daily dose rises from {_n(self.previous_daily_dose_mcg)} to {_n(self.daily_dose_mcg)} mcg/day "
            f"while the patient takes {self.summary}: CNS depressants add to baclofen's sedation and respiratory "
            "depression. Confirm the increase with comedication_confirmed."
        )


def active_comedications(patient: Patient | int, day: date) -> list[CoMedication]:
    """The patient's live co-medication active on ``day`` (start to stop, inclusive)."""
    pk = patient if isinstance(patient, int) else patient.pk
    rows = CoMedication.objects.live().filter(patient_id=pk, started_on__lte=day).order_by("started_on", "id")
    return [row for row in rows if row.stopped_on is None or day <= row.stopped_on]


def program_before(programs: list[Program], effective_at: datetime) -> Program | None:
    """The live program in effect just before ``effective_at``."""
    earlier = [p for p in programs if p.voided_at is None and p.effective_at < effective_at]
    return earlier[-1] if earlier else None


def check_interaction(pump: Pump, programs: list[Program], effective_at: datetime,
                      daily_dose_mcg: Decimal) -> Interaction | None:
    """docs/clinical-rules.md §15: a program whose basal daily dose is higher than that of
    the program in effect before it, while a CNS depressant is active on its effective
    date (the clinic's local date), is an interaction the prescriber must confirm. None
    when there is no increase (or no program before) or nothing active. The program
    preview calls this too, so the form shows the interaction before saving."""
    before = program_before(programs, effective_at)
    if before is None or daily_dose_mcg <= before.daily_dose_mcg:
        return None
    active = active_comedications(pump.patient_id, pj.local_date(effective_at, pump.clinic.tz))
    if not active:
        return None
    return Interaction(before.daily_dose_mcg, daily_dose_mcg, active)
