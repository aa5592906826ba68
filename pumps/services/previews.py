"""Previews: what a refill or a program would show before it is saved (docs/clinical-rules.md
§8, §9), computed with the functions the save uses (``pj.expected_volume_at``,
``checks.residual_discrepancy``, ``checks.check_titration``, ``pj.project``). A value the
save would refuse before computing anything (a negative volume, a concentration of zero,
a time in the future or before the implant) is checked by the save's own validators
(``check_volume_values``, ``check_bolus_values``, ...) and computes nothing: the
preview's ``problems`` says why. Previews read; they never write."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from pumps import checks
from pumps import projection as pj
from pumps.history import load_history, policy_of, pump_state
from pumps.models import Pump

from .base import _check_concentration_value, _check_instant, _Errors, q3
from .programs import ProgramInput, check_bolus_values, check_daily_dose_value
from .refills import RefillInput, check_volume_values


@dataclass
class RefillPreview:
    """What a refill would show, computed with the projection engine before saving."""

    first_fill: bool
    expected_residual_ml: Decimal | None = None
    discrepancy_ml: Decimal | None = None
    discrepancy_flagged: bool = False
    meaning: str = ""
    threshold_ml: Decimal | None = None
    refilled_after_empty: bool = False
    volume_after_ml: Decimal | None = None
    capacity_ml: Decimal | None = None
    over_capacity: bool = False
    concentration_in_force: Decimal | None = None
    concentration_change: bool = False
    projection: pj.Projection | None = None
    days_to_due: int | None = None
    notes: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # field -> message: nothing computed


def _problems(errors: _Errors) -> dict[str, str]:
    """Field -> the first message of each value refused."""
    return {name: messages[0] for name, messages in errors.errors.items()}


def _check_preview_instant(errors: _Errors, field: str, moment: datetime | None, pump: Pump, now: datetime) -> None:
    """The save's instant check (not in the future, not before the implant); an instant
    not given yet is the preview's ``now``."""
    if moment is not None:
        _check_instant(errors, field, moment, pump, now)


def _check_program_values(errors: _Errors, data: ProgramInput) -> None:
    """A program's numbers, as the save checks them."""
    check_bolus_values(errors, data.ptm_bolus_mcg, data.ptm_max_per_day)
    check_daily_dose_value(errors, data)


def _refill_problems(pump: Pump, data: RefillInput, now: datetime) -> dict[str, str]:
    """Field -> message for the refill's (and its new program's) values a preview must not
    compute with: the save's own checks of those values (``validate_refill``)."""
    errors = _Errors()
    _check_preview_instant(errors, "performed_at", data.performed_at, pump, now)
    check_volume_values(errors, data)
    _check_concentration_value(errors, data.concentration_mcg_per_ml)
    problems = _problems(errors)
    if data.program is not None:
        program = _Errors()
        _check_program_values(program, data.program)
        problems.update({f"program_{k}": v for k, v in _problems(program).items()})
    return problems


def _note_concentration(preview: RefillPreview, history, at: datetime,
                        concentration_mcg_per_ml: Decimal | None) -> None:
    """The concentration of the program in force at the refill, and whether the refill's differs."""
    in_force = [p for p in history.programs if p.effective_at <= at]
    if not in_force:
        return
    preview.concentration_in_force = in_force[-1].concentration_mcg_per_ml
    if (concentration_mcg_per_ml is not None
            and q3(concentration_mcg_per_ml) != preview.concentration_in_force):
        preview.concentration_change = True


def _check_residual(preview: RefillPreview, pump: Pump, state: pj.PumpState, inputs, at: datetime,
                    extracted_volume_ml: Decimal | None, residual_left: Decimal) -> None:
    """The expected residual at the refill, the discrepancy with what was extracted and its
    meaning, and whether the pump had run empty before it."""
    refills, readings, programs = inputs
    preview.threshold_ml = checks.discrepancy_threshold_ml(
        pump.model.reservoir_ml,
        small=pump.clinic.discrepancy_threshold_small_ml,
        large=pump.clinic.discrepancy_threshold_large_ml,
    )
    expected, expected_empty = pj.expected_volume_at(
        at=at, pump=state, refills=refills, readings=readings, programs=programs
    )
    if expected is not None:
        preview.expected_residual_ml = pj.to_decimal_ml(max(expected, Fraction(0)))
    if not preview.first_fill and extracted_volume_ml is not None:
        result = checks.residual_discrepancy(
            expected_volume=expected, extracted_ml=extracted_volume_ml, residual_left_ml=residual_left,
            threshold_ml=preview.threshold_ml,
        )
        preview.discrepancy_ml = result.discrepancy_ml
        preview.discrepancy_flagged = result.flagged
        preview.meaning = result.meaning
    preview.refilled_after_empty = expected_empty is not None and at >= expected_empty and not preview.first_fill


def _project_after_refill(preview: RefillPreview, pump: Pump, state: pj.PumpState, inputs, new_refill: pj.Refill,
                          program: ProgramInput | None, at: datetime, now: datetime) -> None:
    """The new instants with the refill (and its new program) added; none while the new
    program is incomplete, or when the concentration changes without one."""
    refills, readings, programs = inputs
    new_programs = list(programs)
    if program is not None:
        proposed = program_projection(program, at)
        if proposed is None:
            preview.notes.append("Complete the new program to see the new dates.")
            return
        new_programs = [p for p in new_programs if p.effective_at != proposed.effective_at] + [proposed]
    elif preview.concentration_change:
        return
    preview.projection = pj.project(
        at=max(at, now), pump=state, refills=[*refills, new_refill], readings=readings,
        programs=new_programs, policy=policy_of(pump.clinic),
    )
    if preview.projection.refill_due_on is not None:
        preview.days_to_due = (preview.projection.refill_due_on - pj.local_date(now, pump.clinic.tz)).days


def refill_preview(
    pump: Pump,
    *,
    performed_at: datetime | None,
    extracted_volume_ml: Decimal | None,
    added_volume_ml: Decimal | None,
    residual_left_ml: Decimal | None,
    bridge_bolus_ml: Decimal | None,
    concentration_mcg_per_ml: Decimal | None,
    stability_days: int,
    program: ProgramInput | None,
    now: datetime,
) -> RefillPreview:
    """The expected residual, the discrepancy and its meaning, the volume after and the new
    instants, from the same functions the services use when the refill is saved
    (``pj.expected_volume_at``, ``checks.residual_discrepancy``, ``pj.project``).

    A value the services would refuse (a negative volume, a concentration of zero, a
    time in the future or before the implant) computes nothing: ``problems`` says why."""
    problems = _refill_problems(pump, RefillInput(
        performed_at=performed_at, added_volume_ml=added_volume_ml, concentration_mcg_per_ml=concentration_mcg_per_ml,
        extracted_volume_ml=extracted_volume_ml, residual_left_ml=residual_left_ml, bridge_bolus_ml=bridge_bolus_ml,
        program=program,
    ), now)
    if problems:
        return RefillPreview(first_fill=False, capacity_ml=pump.model.reservoir_ml, problems=problems)
    history = load_history(pump)
    at = performed_at or now
    residual_left = residual_left_ml or Decimal(0)
    bridge = bridge_bolus_ml or Decimal(0)
    first_fill = not any(r.performed_at < at for r in history.refills)
    preview = RefillPreview(first_fill=first_fill, capacity_ml=pump.model.reservoir_ml)
    state = pump_state(pump)
    inputs = history.inputs()

    _note_concentration(preview, history, at, concentration_mcg_per_ml)
    _check_residual(preview, pump, state, inputs, at, extracted_volume_ml, residual_left)

    if added_volume_ml is None or added_volume_ml <= 0:
        return preview
    preview.volume_after_ml = q3(residual_left + added_volume_ml - bridge)
    preview.over_capacity = preview.volume_after_ml > pump.model.reservoir_ml
    if preview.volume_after_ml < 0 or concentration_mcg_per_ml is None or concentration_mcg_per_ml <= 0:
        return preview
    new_refill = pj.Refill(
        performed_at=at, added_volume_ml=q3(added_volume_ml), residual_left_ml=q3(residual_left),
        bridge_bolus_ml=q3(bridge), stability_days=stability_days,
    )
    _project_after_refill(preview, pump, state, inputs, new_refill, program, at, now)
    return preview


def program_projection(data: ProgramInput, effective_at: datetime) -> pj.Program | None:
    """A program input as the projection sees it, or None while it is incomplete or
    invalid (the services say why when it is saved)."""
    conc = data.concentration_mcg_per_ml
    if conc is None or conc <= 0:
        return None
    if data.mode == pj.MODE_FLEX:
        try:
            steps = checks.parse_flex_steps(data.steps or [])
        except checks.CheckError:
            return None
        daily = None
    else:
        if data.daily_dose_mcg is None or data.daily_dose_mcg <= 0:
            return None
        steps, daily = (), data.daily_dose_mcg
    bolus, per_day = data.ptm_bolus_mcg, data.ptm_max_per_day
    if bolus is not None and bolus < 0 or per_day is not None and per_day < 0:
        return None
    return pj.Program(
        effective_at=effective_at, concentration_mcg_per_ml=conc, mode=data.mode, daily_dose_mcg=daily, steps=steps,
        bolus_mcg=bolus if per_day else None, bolus_max_per_day=per_day if bolus else None,
    )


@dataclass
class ProgramPreview:
    daily_dose_mcg: Decimal | None = None
    daily_volume_ml: Decimal | None = None
    worst_case_daily_volume_ml: Decimal | None = None
    previous_daily_dose_mcg: Decimal | None = None  # in force 24 h before
    change_pct: Decimal | None = None
    limit_pct: Decimal | None = None
    ceiling_mcg: Decimal | None = None
    titration_exceeded: bool = False
    titration_message: str = ""
    override_given: bool = False
    projection: pj.Projection | None = None
    reservoir_concentration: Decimal | None = None
    concentration_mismatch: bool = False
    problems: dict[str, str] = field(default_factory=dict)  # field -> message: nothing computed


def program_preview(pump: Pump, data: ProgramInput, effective_at: datetime | None,
                    now: datetime) -> ProgramPreview:
    """mL/day, the titration check against the program in force 24 hours before
    (``checks.check_titration``, as the services apply it) and the new dates; nothing
    computed on a value the services would refuse (``problems`` says why)."""
    errors = _Errors()
    _check_preview_instant(errors, "effective_at", effective_at, pump, now)
    _check_concentration_value(errors, data.concentration_mcg_per_ml)
    _check_program_values(errors, data)
    problems = _problems(errors)
    if problems:
        return ProgramPreview(problems=problems)
    at = effective_at or now
    preview = ProgramPreview(override_given=bool((data.override_reason or "").strip()))
    history = load_history(pump)
    earlier_refills = [r for r in history.refills if r.performed_at <= at]
    if earlier_refills:
        preview.reservoir_concentration = earlier_refills[-1].concentration_mcg_per_ml
        if data.concentration_mcg_per_ml is not None and data.concentration_mcg_per_ml > 0:
            preview.concentration_mismatch = (
                q3(data.concentration_mcg_per_ml) != preview.reservoir_concentration
            )
    proposed = program_projection(data, at)
    if proposed is None:
        return preview
    daily = proposed.basal_daily_dose_mcg()
    preview.daily_dose_mcg = pj.to_decimal_ml(daily)
    preview.daily_volume_ml = pj.to_decimal_ml(proposed.daily_volume_ml())
    preview.worst_case_daily_volume_ml = pj.to_decimal_ml(proposed.worst_case_daily_volume_ml())
    before = [p for p in history.programs if p.effective_at <= at - timedelta(hours=24)]
    if before:
        old = before[-1].to_projection().basal_daily_dose_mcg()
        limit = checks.titration_limit_pct(
            pump.patient.spasticity_origin,
            spinal_pct=pump.clinic.titration_limit_spinal_pct,
            other_pct=pump.clinic.titration_limit_other_pct,
        )
        preview.previous_daily_dose_mcg = pj.to_decimal_ml(old)
        preview.limit_pct = limit
        preview.ceiling_mcg = pj.to_decimal_ml(old * (1 + Fraction(limit) / 100))
        if old:
            preview.change_pct = (pj.to_decimal_ml((daily - old) / old * 100)).quantize(Decimal("0.1"))
        try:
            checks.check_titration(new_daily_mcg=daily, old_daily_mcg=old, limit_pct=limit, override_reason="")
        except checks.CheckError as exc:
            preview.titration_exceeded = True
            preview.titration_message = exc.message
    if not preview.concentration_mismatch:
        refills, readings, programs = history.inputs()
        programs = [p for p in programs if p.effective_at != proposed.effective_at] + [proposed]
        preview.projection = pj.project(
            at=max(at, now), pump=pump_state(pump), refills=refills, readings=readings, programs=programs,
            policy=policy_of(pump.clinic),
        )
    return preview
