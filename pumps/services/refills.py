"""Refills: the procedure, its checks (expected residual, discrepancy; docs/clinical-rules.md
§8) and an optional new program saved atomically with it."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from clinic import permissions
from pumps import checks
from pumps import projection as pj
from pumps.errors import Conflict
from pumps.history import (
    PumpHistory,
    load_history,
    lock_pump,
    pump_state,
)
from pumps.models import (
    Drug,
    DrugProduct,
    Pump,
    Refill,
)

from .base import (
    NOTES_MAX,
    Actor,
    _check_instant,
    _Errors,
    _identifier,
    _n,
    _positive,
    _require_implanted,
    _stamp,
    _text,
    after_write,
    authorize,
    clinician_for,
    q3,
    refill_check_values,
)
from .programs import ProgramInput, _make_program, _validate_program


def _stability_days(product: DrugProduct | None) -> int:
    if product is not None:
        return product.effective_stability_days
    baclofen = Drug.objects.filter(code="baclofen").first()
    return baclofen.default_stability_days if baclofen else 180


@transaction.atomic
def record_refill(
    *,
    pump: Pump,
    performed_at: datetime,
    added_volume_ml: Decimal | None,
    concentration_mcg_per_ml: Decimal | None,
    actor: Actor,
    extracted_volume_ml: Decimal | None = None,
    residual_left_ml: Decimal | None = None,
    bridge_bolus_ml: Decimal | None = None,
    drug_product: DrugProduct | None = None,
    lot_number: str = "",
    lot_expiry: date | None = None,
    notes: str = "",
    performed_by: str | None = None,
    program: ProgramInput | None = None,
    confirm_duplicate: bool = False,
    if_match: int | None = None,
    now: datetime | None = None,
) -> Refill:
    """Record a refill, with an optional new program taking effect at the same instant,
    saved atomically with it (docs/clinical-rules.md §8, §9)."""
    now = now or timezone.now()
    pump = lock_pump(pump, if_match)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    if program is not None:  # a dose change, whichever form carries it (H-08)
        authorize(actor, pump.clinic_id, permissions.Action.PROGRAM)
    errors = _Errors()
    _check_instant(errors, "performed_at", performed_at, pump, now)
    _require_implanted(errors, pump, performed_at)
    _identifier(errors, "lot_number", lot_number)
    _text(errors, "notes", notes, NOTES_MAX)
    errors.raise_if_any()

    history = load_history(pump)
    capacity = pump.model.reservoir_ml
    residual_left = residual_left_ml if residual_left_ml is not None else Decimal(0)
    bridge = bridge_bolus_ml if bridge_bolus_ml is not None else Decimal(0)
    first_fill = not any(r.performed_at < performed_at for r in history.refills)

    if added_volume_ml is None:
        errors.add("added_volume_ml", "This field is required.")
    _positive(errors, "added_volume_ml", added_volume_ml)
    _positive(errors, "extracted_volume_ml", extracted_volume_ml, allow_zero=True)
    _positive(errors, "residual_left_ml", residual_left_ml, allow_zero=True)
    _positive(errors, "bridge_bolus_ml", bridge_bolus_ml, allow_zero=True)
    if first_fill:
        if extracted_volume_ml is not None:
            errors.add("extracted_volume_ml", "A first fill after implant has no extracted volume: leave it empty.")
        if residual_left:
            errors.add("residual_left_ml", "A first fill after implant has no residual left in the pump.")
    elif extracted_volume_ml is None:
        errors.add(
            "extracted_volume_ml",
            "A refill after the first fill needs the extracted volume (0 if nothing could be drawn).",
        )
    if extracted_volume_ml is not None and extracted_volume_ml > capacity:
        errors.add(
            "extracted_volume_ml",
            f"The extracted volume ({_n(q3(extracted_volume_ml))} mL) exceeds the reservoir capacity "
            f"of {_n(capacity)} mL.",
        )
    if added_volume_ml is not None and added_volume_ml > 0:
        # The reservoir holds residual + added before the bridge bolus leaves it.
        after = residual_left + added_volume_ml
        if after > capacity:
            errors.add(
                "added_volume_ml",
                f"The volume after the refill ({_n(q3(after))} mL) exceeds the reservoir capacity "
                f"of {_n(capacity)} mL.",
            )
        if bridge > residual_left + added_volume_ml:
            errors.add("bridge_bolus_ml", "The bridge bolus is larger than the volume in the reservoir.")

    if concentration_mcg_per_ml is None:
        errors.add("concentration_mcg_per_ml", "This field is required.")
    elif concentration_mcg_per_ml <= 0:
        errors.add("concentration_mcg_per_ml", "Must be greater than zero.")
    elif (
        drug_product is not None
        and drug_product.concentration_mcg_per_ml is not None
        and q3(concentration_mcg_per_ml) != drug_product.concentration_mcg_per_ml
    ):
        errors.add(
            "concentration_mcg_per_ml",
            f"{drug_product.name} is {_n(drug_product.concentration_mcg_per_ml)} mcg/mL, not "
            f"{_n(q3(concentration_mcg_per_ml))}.",
        )
    else:
        in_force = [p for p in history.programs if p.effective_at <= performed_at]
        if program is None and in_force and q3(concentration_mcg_per_ml) != in_force[-1].concentration_mcg_per_ml:
            errors.add(
                "concentration_mcg_per_ml",
                f"The program in force is at {_n(in_force[-1].concentration_mcg_per_ml)} mcg/mL: "
                f"{checks.MSG_CONCENTRATION_CHANGE}.",
            )
    if lot_expiry is not None and not errors.errors.get("performed_at"):
        if lot_expiry < pj.local_date(performed_at, pump.clinic.tz):
            errors.add("lot_expiry", "This lot had expired when the refill was performed.")

    program_result = None
    if program is not None:
        if program.concentration_mcg_per_ml is not None and concentration_mcg_per_ml is not None and q3(
            program.concentration_mcg_per_ml
        ) != q3(concentration_mcg_per_ml):
            errors.add(
                "program.concentration_mcg_per_ml",
                "The new program's concentration differs from the refill's: they must be the same drug.",
            )
        else:
            if any(p.effective_at == performed_at for p in history.programs):
                errors.add("performed_at", "Another program of this pump takes effect at this instant.")
            program_result = _validate_program(
                errors, "program.", pump, program, performed_at, history.programs, history.refills, None
            )
    errors.raise_if_any()

    window = timedelta(minutes=settings.PUMPS_DUPLICATE_REFILL_MINUTES)
    near = [r for r in history.refills if abs(r.performed_at - performed_at) < window]
    if near and not confirm_duplicate:
        raise Conflict(
            f"Another refill of this pump was recorded at {near[0].performed_at.astimezone(pump.clinic.tz):%Y-%m-%d %H:%M}"
            f" (within {settings.PUMPS_DUPLICATE_REFILL_MINUTES} minutes): probably a duplicate. "
            "Send confirm_duplicate: true if this is really a second refill.",
            code="probable_duplicate",
        )

    user, external = clinician_for(actor, pump.clinic, "performed_by", performed_by)
    refill = Refill(
        pump=pump,
        performed_at=performed_at,
        performed_by=user,
        performed_by_external=external,
        extracted_volume_ml=q3(extracted_volume_ml) if extracted_volume_ml is not None else None,
        added_volume_ml=q3(added_volume_ml),
        residual_left_ml=q3(residual_left),
        bridge_bolus_ml=q3(bridge_bolus_ml) if bridge_bolus_ml is not None else None,
        drug_product=drug_product,
        concentration_mcg_per_ml=q3(concentration_mcg_per_ml),
        stability_days=_stability_days(drug_product),
        lot_number=lot_number or "",
        lot_expiry=lot_expiry,
        notes=notes or "",
    )
    refill_history = PumpHistory(history.refills + [refill], history.readings, history.programs)
    refill_history.refills.sort(key=lambda r: r.performed_at)
    threshold = checks.discrepancy_threshold_ml(
        capacity, small=pump.clinic.discrepancy_threshold_small_ml, large=pump.clinic.discrepancy_threshold_large_ml
    )
    values = refill_check_values(refill, pump_state(pump), *refill_history.inputs(), threshold)
    for key, value in values.items():
        setattr(refill, key, value)
    _stamp(refill, actor)
    refill.save()
    programs = history.programs
    if program is not None and program_result is not None:
        daily, steps = program_result
        made = _make_program(pump, program, performed_at, daily, steps, actor, now, refill=refill)
        programs = sorted([*programs, made], key=lambda p: p.effective_at)  # no two at one instant
    # The history as it now stands in the database, in load_history's order (the new
    # refill has the highest id, so it sorts last among refills at the same instant).
    after_write(pump, now, since=performed_at,
                 history=PumpHistory(refill_history.refills, history.readings, programs))
    refill.refresh_from_db()
    return refill
