"""Programs: what a pump is programmed to deliver; entered and verified by prescribers
(four eyes), with the titration limit (docs/clinical-rules.md §9)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from django.db import transaction
from django.utils import timezone

from clinic import permissions
from pumps import checks
from pumps.errors import ServiceValidationError
from pumps.history import (
    load_history,
    lock_pump,
    store_projection,
)
from pumps.models import (
    Program,
    Pump,
    Refill,
)

from .base import (
    REASON_MAX,
    Actor,
    _check_concentration_value,
    _check_instant,
    _Errors,
    _n,
    _positive,
    _require_implanted,
    _stamp,
    _text,
    after_write,
    authorize,
    clinician_for,
    evaluate_alerts,
    q3,
)


@dataclass(frozen=True)
class ProgramInput:
    concentration_mcg_per_ml: Decimal | None
    mode: str = Program.Mode.CONTINUOUS
    daily_dose_mcg: Decimal | None = None
    steps: list | None = None
    ptm_bolus_mcg: Decimal | None = None
    ptm_max_per_day: int | None = None
    override_reason: str = ""
    entered_by: str | None = None  # a clinician named by an integration

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ProgramInput:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})


def _validate_program(
    errors: _Errors, prefix: str, pump: Pump, data: ProgramInput, effective_at: datetime, programs: list[Program],
    refills: list[Refill], reservoir_concentration: Decimal | None,
) -> tuple[Decimal, list] | None:
    """Every rule a program must pass (docs/clinical-rules.md §9), as named checks; the
    messages go to ``errors`` under ``prefix`` (``program.`` inside a refill). Returns
    (basal daily dose, stored steps), or None when the program is refused."""
    own = _Errors()
    _text(own, "override_reason", data.override_reason, REASON_MAX)
    _check_program_concentration(own, data.concentration_mcg_per_ml, reservoir_concentration)
    daily, stored_steps = _program_dose(own, data)
    _check_bolus(own, data.ptm_bolus_mcg, data.ptm_max_per_day)
    if not own.errors and daily is not None:
        _check_titration(own, pump, data, daily, programs, effective_at)
    for field, messages in own.errors.items():
        for message in messages:
            errors.add(prefix + field, message)
    return None if own.errors or daily is None else (daily, stored_steps)


def _check_program_concentration(errors: _Errors, conc: Decimal | None, reservoir: Decimal | None) -> None:
    if conc is None:
        errors.add("concentration_mcg_per_ml", "This field is required.")
    elif conc <= 0:
        _check_concentration_value(errors, conc)
    elif reservoir is not None and q3(conc) != q3(reservoir):
        errors.add(
            "concentration_mcg_per_ml",
            f"The reservoir holds {_n(reservoir)} mcg/mL: a program must use the "
            "concentration of the drug in the pump (a concentration change needs a refill with a new program).",
        )


def _program_dose(errors: _Errors, data: ProgramInput) -> tuple[Decimal | None, list]:
    """The basal daily dose and the stored steps of a continuous or flex program."""
    if data.mode == Program.Mode.FLEX:
        try:
            steps = checks.parse_flex_steps(data.steps or [])
            daily = checks.check_flex_daily_dose(steps, data.daily_dose_mcg)
        except checks.CheckError as exc:
            errors.add(exc.field, exc.message)
            return None, []
        return daily, [{"start": s.start.strftime("%H:%M"), "dose_mcg_per_hour": str(q3(s.dose_mcg_per_hour))}
                       for s in steps]
    if data.mode != Program.Mode.CONTINUOUS:
        errors.add("mode", "Must be continuous or flex.")
        return None, []
    if data.steps:
        errors.add("steps", "Steps belong to a flex program; a continuous program has a daily dose only.")
    if data.daily_dose_mcg is None:
        errors.add("daily_dose_mcg", "This field is required for a continuous program.")
    elif data.daily_dose_mcg <= 0:
        check_daily_dose_value(errors, data)
    else:
        return q3(data.daily_dose_mcg), []
    return None, []


def check_daily_dose_value(errors: _Errors, data: ProgramInput) -> None:
    """A continuous program's daily dose is greater than zero (a flex program's comes from
    its steps)."""
    if data.mode != Program.Mode.FLEX:
        _positive(errors, "daily_dose_mcg", data.daily_dose_mcg)


def _check_bolus(errors: _Errors, bolus: Decimal | None, per_day: int | None) -> None:
    """An on-demand bolus needs a dose and a maximum per day (zero for either: none)."""
    if (bolus is None) != (per_day is None) and not (bolus == 0 or per_day == 0):
        errors.add("ptm_bolus_mcg" if bolus is None else "ptm_max_per_day",
                   "An on-demand bolus needs both a dose (ptm_bolus_mcg) and a maximum per day (ptm_max_per_day).")
    check_bolus_values(errors, bolus, per_day)


def check_bolus_values(errors: _Errors, bolus: Decimal | None, per_day: int | None) -> None:
    """An on-demand bolus dose and maximum per day are zero or more."""
    _positive(errors, "ptm_bolus_mcg", bolus, allow_zero=True)
    _positive(errors, "ptm_max_per_day", per_day, allow_zero=True)


def _check_titration(errors: _Errors, pump: Pump, data: ProgramInput, daily: Decimal, programs: list[Program],
                     effective_at: datetime) -> None:
    """The rise against the program in force 24 hours before (Saulino 2016;
    docs/clinical-rules.md §9), unless an override reason is given."""
    previous = [p for p in programs if p.effective_at <= effective_at - timedelta(hours=24)]
    if not previous:
        return
    limit = checks.titration_limit_pct(
        pump.patient.spasticity_origin,
        spinal_pct=pump.clinic.titration_limit_spinal_pct,
        other_pct=pump.clinic.titration_limit_other_pct,
    )
    try:
        checks.check_titration(
            new_daily_mcg=Fraction(daily),
            old_daily_mcg=previous[-1].to_projection().basal_daily_dose_mcg(),
            limit_pct=limit,
            override_reason=data.override_reason,
        )
    except checks.CheckError as exc:
        errors.add(exc.field, exc.message)


def _reservoir_concentration(refills: list[Refill], at: datetime) -> Decimal | None:
    """Concentration of the drug in the reservoir at ``at``: that of the latest refill."""
    earlier = [r for r in refills if r.performed_at <= at]
    return earlier[-1].concentration_mcg_per_ml if earlier else None


def _make_program(
    pump: Pump, data: ProgramInput, effective_at: datetime, daily: Decimal, steps: list, actor: Actor,
    now: datetime, refill: Refill | None = None,
) -> Program:
    entered_user, entered_external = clinician_for(actor, pump.clinic, "entered_by", data.entered_by)
    program = Program(
        pump=pump,
        effective_at=effective_at,
        concentration_mcg_per_ml=q3(data.concentration_mcg_per_ml),
        mode=data.mode,
        daily_dose_mcg=daily,
        steps=steps,
        ptm_bolus_mcg=q3(data.ptm_bolus_mcg) if data.ptm_bolus_mcg is not None else None,
        ptm_max_per_day=data.ptm_max_per_day,
        override_reason=(data.override_reason or "").strip(),
        entered_at=now,
        entered_by=entered_user,
        entered_by_external=entered_external,
        refill=refill,
    )
    _stamp(program, actor)
    program.save()
    return program


@transaction.atomic
def record_program(
    *, pump: Pump, effective_at: datetime, data: ProgramInput, actor: Actor, now: datetime | None = None,
    if_match: int | None = None,
) -> Program:
    now = now or timezone.now()
    pump = lock_pump(pump, if_match)
    authorize(actor, pump.clinic_id, permissions.Action.PROGRAM)
    errors = _Errors()
    _check_instant(errors, "effective_at", effective_at, pump, now)
    _require_implanted(errors, pump, effective_at)
    errors.raise_if_any()
    history = load_history(pump)
    if any(p.effective_at == effective_at for p in history.programs):
        raise ServiceValidationError({"effective_at": ["Another program of this pump takes effect at this instant."]})
    result = _validate_program(
        errors, "", pump, data, effective_at, history.programs, history.refills,
        _reservoir_concentration(history.refills, effective_at),
    )
    errors.raise_if_any()
    daily, steps = result
    program = _make_program(pump, data, effective_at, daily, steps, actor, now)
    after_write(pump, now, since=effective_at)
    return program


@transaction.atomic
def verify_program(
    *, program: Program, actor: Actor, verified_by: str | None = None, now: datetime | None = None
) -> Program:
    """A second clinician confirms the program: not the one who entered it."""
    now = now or timezone.now()
    pump = lock_pump(program.pump_id)
    authorize(actor, pump.clinic_id, permissions.Action.PROGRAM)
    program = Program.objects.select_for_update().get(pk=program.pk)
    user, external = clinician_for(actor, pump.clinic, "verified_by", verified_by)
    errors = _Errors()
    if program.is_voided:
        errors.add("non_field_errors", "This program was voided.")
    if program.verified_at is not None:
        errors.add("non_field_errors", "This program was already verified.")
    if user is None and not external:
        errors.add("verified_by", "Name the clinician who verified the program.")
    same_user = user is not None and program.entered_by_id == user.pk
    same_external = external and program.entered_by_external == external
    if same_user or same_external:
        errors.add("verified_by", "A second clinician must verify: not the one who entered the program.")
    errors.raise_if_any()
    program.verified_by, program.verified_by_external, program.verified_at = user, external, now
    _stamp(program, actor, "verified")
    program.save(update_fields=["verified_by", "verified_by_external", "verified_at", "updated_at"])
    store_projection(pump, now=now)
    evaluate_alerts(pump, now)
    return program
