"""Refills: the procedure, its checks (expected residual, discrepancy; docs/clinical-rules.md
§8) and an optional new program saved atomically with it."""

from __future__ import annotations

from dataclasses import dataclass
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
    _check_concentration_value,
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


@dataclass(frozen=True)
class RefillInput:
    """What a refill form, an API body or an import row says about a refill."""

    performed_at: datetime | None
    added_volume_ml: Decimal | None
    concentration_mcg_per_ml: Decimal | None
    extracted_volume_ml: Decimal | None = None
    residual_left_ml: Decimal | None = None
    bridge_bolus_ml: Decimal | None = None
    drug_product: DrugProduct | None = None
    lot_number: str = ""
    lot_expiry: date | None = None
    notes: str = ""
    program: ProgramInput | None = None

    @property
    def residual_left(self) -> Decimal:
        return self.residual_left_ml if self.residual_left_ml is not None else Decimal(0)

    @property
    def bridge(self) -> Decimal:
        return self.bridge_bolus_ml if self.bridge_bolus_ml is not None else Decimal(0)


def validate_refill(pump: Pump, data: RefillInput, now: datetime,
                    history: PumpHistory | None = None) -> tuple[_Errors, tuple | None]:
    """Every rule a refill must pass (docs/clinical-rules.md §9), as named checks, without
    saving: the save and the page's live preview call this one function, so they cannot
    disagree. Returns the errors and, for a carried program, its (daily dose, steps)."""
    errors = _Errors()
    _check_entry(errors, pump, data, now)
    if errors.errors:  # no sensible history to check against
        return errors, None
    history = history or load_history(pump)
    first_fill = not any(r.performed_at < data.performed_at for r in history.refills)
    _check_volumes(errors, pump, data, first_fill)
    _check_concentration(errors, history, data)
    _check_lot_expiry(errors, pump, data)
    return errors, _check_carried_program(errors, pump, history, data)


def _check_entry(errors: _Errors, pump: Pump, data: RefillInput, now: datetime) -> None:
    _check_instant(errors, "performed_at", data.performed_at, pump, now)
    _require_implanted(errors, pump, data.performed_at)
    _identifier(errors, "lot_number", data.lot_number)
    _text(errors, "notes", data.notes, NOTES_MAX)


def check_volume_values(errors: _Errors, data: RefillInput) -> None:
    """Volumes a refill can be computed with: an added volume greater than zero, the
    others zero or more (the save and the preview check these)."""
    _positive(errors, "added_volume_ml", data.added_volume_ml)
    _positive(errors, "extracted_volume_ml", data.extracted_volume_ml, allow_zero=True)
    _positive(errors, "residual_left_ml", data.residual_left_ml, allow_zero=True)
    _positive(errors, "bridge_bolus_ml", data.bridge_bolus_ml, allow_zero=True)


def _check_volumes(errors: _Errors, pump: Pump, data: RefillInput, first_fill: bool) -> None:
    """Positive volumes, the first fill's rules, and the reservoir's capacity."""
    capacity = pump.model.reservoir_ml
    if data.added_volume_ml is None:
        errors.add("added_volume_ml", "This field is required.")
    check_volume_values(errors, data)
    if first_fill:
        if data.extracted_volume_ml is not None:
            errors.add("extracted_volume_ml", "A first fill after implant has no extracted volume: leave it empty.")
        if data.residual_left:
            errors.add("residual_left_ml", "A first fill after implant has no residual left in the pump.")
    elif data.extracted_volume_ml is None:
        errors.add(
            "extracted_volume_ml",
            "A refill after the first fill needs the extracted volume (0 if nothing could be drawn).",
        )
    if data.extracted_volume_ml is not None and data.extracted_volume_ml > capacity:
        errors.add(
            "extracted_volume_ml",
            f"The extracted volume ({_n(q3(data.extracted_volume_ml))} mL) exceeds the reservoir capacity "
            f"of {_n(capacity)} mL.",
        )
    if data.added_volume_ml is not None and data.added_volume_ml > 0:
        # The reservoir holds residual + added before the bridge bolus leaves it.
        after = data.residual_left + data.added_volume_ml
        if after > capacity:
            errors.add(
                "added_volume_ml",
                f"The volume after the refill ({_n(q3(after))} mL) exceeds the reservoir capacity "
                f"of {_n(capacity)} mL.",
            )
        if data.bridge > after:
            errors.add("bridge_bolus_ml", "The bridge bolus is larger than the volume in the reservoir.")


def _check_concentration(errors: _Errors, history: PumpHistory, data: RefillInput) -> None:
    """Positive, the product's own, and the program's in force unless a new program comes
    with the refill (a concentration change needs a new program and a bridge bolus)."""
    conc, product = data.concentration_mcg_per_ml, data.drug_product
    if conc is None:
        errors.add("concentration_mcg_per_ml", "This field is required.")
    elif conc <= 0:
        _check_concentration_value(errors, conc)
    elif product is not None and product.concentration_mcg_per_ml is not None \
            and q3(conc) != product.concentration_mcg_per_ml:
        errors.add(
            "concentration_mcg_per_ml",
            f"{product.name} is {_n(product.concentration_mcg_per_ml)} mcg/mL, not {_n(q3(conc))}.",
        )
    else:
        in_force = [p for p in history.programs if p.effective_at <= data.performed_at]
        if data.program is None and in_force and q3(conc) != in_force[-1].concentration_mcg_per_ml:
            errors.add(
                "concentration_mcg_per_ml",
                f"The program in force is at {_n(in_force[-1].concentration_mcg_per_ml)} mcg/mL: "
                f"{checks.MSG_CONCENTRATION_CHANGE}.",
            )


def _check_lot_expiry(errors: _Errors, pump: Pump, data: RefillInput) -> None:
    if data.lot_expiry is not None and data.lot_expiry < pj.local_date(data.performed_at, pump.clinic.tz):
        errors.add("lot_expiry", "This lot had expired when the refill was performed.")


def _check_carried_program(errors: _Errors, pump: Pump, history: PumpHistory, data: RefillInput) -> tuple | None:
    """A program carried by the refill: same drug, not at the instant of another program,
    and every rule of a program (titration, flex steps)."""
    program = data.program
    if program is None:
        return None
    conc = data.concentration_mcg_per_ml
    if program.concentration_mcg_per_ml is not None and conc is not None \
            and q3(program.concentration_mcg_per_ml) != q3(conc):
        errors.add(
            "program.concentration_mcg_per_ml",
            "The new program's concentration differs from the refill's: they must be the same drug.",
        )
        return None
    if any(p.effective_at == data.performed_at for p in history.programs):
        errors.add("performed_at", "Another program of this pump takes effect at this instant.")
    return _validate_program(errors, "program.", pump, program, data.performed_at, history.programs, history.refills,
                             None)


def _check_duplicate(pump: Pump, history: PumpHistory, performed_at: datetime, confirmed: bool) -> None:
    """Two users recording the same refill: within the window it is a probable duplicate
    (409) unless confirmed."""
    window = timedelta(minutes=settings.PUMPS_DUPLICATE_REFILL_MINUTES)
    near = [r for r in history.refills if abs(r.performed_at - performed_at) < window]
    if near and not confirmed:
        raise Conflict(
            f"Another refill of this pump was recorded at "
            f"{near[0].performed_at.astimezone(pump.clinic.tz):%Y-%m-%d %H:%M}"
            f" (within {settings.PUMPS_DUPLICATE_REFILL_MINUTES} minutes): probably a duplicate. "
            "Send confirm_duplicate: true if this is really a second refill.",
            code="probable_duplicate",
        )


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
    data = RefillInput(
        performed_at=performed_at, added_volume_ml=added_volume_ml, concentration_mcg_per_ml=concentration_mcg_per_ml,
        extracted_volume_ml=extracted_volume_ml, residual_left_ml=residual_left_ml, bridge_bolus_ml=bridge_bolus_ml,
        drug_product=drug_product, lot_number=lot_number, lot_expiry=lot_expiry, notes=notes, program=program,
    )
    history = load_history(pump)
    errors, program_result = validate_refill(pump, data, now, history)
    errors.raise_if_any()
    _check_duplicate(pump, history, performed_at, confirm_duplicate)
    user, external = clinician_for(actor, pump.clinic, "performed_by", performed_by)
    refill = _save_refill(pump, data, history, actor, user, external)
    programs = history.programs
    if program is not None and program_result is not None:
        daily, steps = program_result
        made = _make_program(pump, program, performed_at, daily, steps, actor, now, refill=refill)
        programs = sorted([*programs, made], key=lambda p: p.effective_at)  # no two at one instant
    # The history as it now stands in the database, in load_history's order (the new
    # refill has the highest id, so it sorts last among refills at the same instant).
    refills = sorted([*history.refills, refill], key=lambda r: r.performed_at)
    after_write(pump, now, since=performed_at, history=PumpHistory(refills, history.readings, programs))
    refill.refresh_from_db()
    return refill


def _save_refill(pump: Pump, data: RefillInput, history: PumpHistory, actor: Actor, user, external: str) -> Refill:
    """The refill row with its write-time checks (expected residual, discrepancy, flags)."""
    refill = Refill(
        pump=pump,
        performed_at=data.performed_at,
        performed_by=user,
        performed_by_external=external,
        extracted_volume_ml=q3(data.extracted_volume_ml) if data.extracted_volume_ml is not None else None,
        added_volume_ml=q3(data.added_volume_ml),
        residual_left_ml=q3(data.residual_left),
        bridge_bolus_ml=q3(data.bridge_bolus_ml) if data.bridge_bolus_ml is not None else None,
        drug_product=data.drug_product,
        concentration_mcg_per_ml=q3(data.concentration_mcg_per_ml),
        stability_days=_stability_days(data.drug_product),
        lot_number=data.lot_number or "",
        lot_expiry=data.lot_expiry,
        notes=data.notes or "",
    )
    refills = sorted([*history.refills, refill], key=lambda r: r.performed_at)
    threshold = checks.discrepancy_threshold_ml(
        pump.model.reservoir_ml, small=pump.clinic.discrepancy_threshold_small_ml,
        large=pump.clinic.discrepancy_threshold_large_ml,
    )
    values = refill_check_values(refill, pump_state(pump), *PumpHistory(refills, history.readings,
                                                                       history.programs).inputs(), threshold)
    for key, value in values.items():
        setattr(refill, key, value)
    _stamp(refill, actor)
    refill.save()
    return refill
