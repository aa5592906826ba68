"""Pumps: implant, update, explant, replace (one implanted pump per patient)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from clinic import permissions
from pumps import projection as pj
from pumps.errors import ServiceValidationError
from pumps.history import (
    lock_pump,
    store_projection,
)
from pumps.models import (
    Patient,
    Pump,
    PumpModel,
    WithdrawalPlan,
)

from .base import (
    Actor,
    _Errors,
    _identifier,
    _n,
    _stamp,
    _text,
    authorize,
    evaluate_alerts,
    q3,
)
from .withdrawal import save_plan, validate_plan


def _end_of_service(implanted_on: date, battery_months: int | None) -> date | None:
    if not battery_months:
        return None
    month = implanted_on.month - 1 + battery_months
    year, month = implanted_on.year + month // 12, month % 12 + 1
    day = min(implanted_on.day, [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28,
                                 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1])
    return date(year, month, day)


def _check_alarm_volume(errors: _Errors, alarm: Decimal | None, model: PumpModel) -> None:
    if alarm is None:
        return
    if alarm < 0:
        errors.add("low_reservoir_alarm_ml", "Must be zero or more.")
    elif alarm >= model.reservoir_ml:
        errors.add("low_reservoir_alarm_ml", f"Must be below the reservoir capacity of {_n(model.reservoir_ml)} mL.")


@transaction.atomic
def implant_pump(
    *,
    patient: Patient,
    model: PumpModel,
    serial_number: str,
    implanted_on: date,
    actor: Actor,
    low_reservoir_alarm_ml: Decimal | None = None,
    udi: str = "",
    now: datetime | None = None,
) -> Pump:
    now = now or timezone.now()
    patient = Patient.objects.select_for_update(of=("self",), no_key=True).select_related("clinic").get(pk=patient.pk)
    authorize(actor, patient.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    if not str(serial_number or "").strip():
        errors.add("serial_number", "This field may not be blank.")
    _identifier(errors, "serial_number", serial_number)
    _identifier(errors, "udi", udi)
    if implanted_on > pj.local_date(now, patient.clinic.tz):
        errors.add("implanted_on", "The implant date is in the future.")
    _check_alarm_volume(errors, low_reservoir_alarm_ml, model)
    if Pump.objects.filter(patient=patient, explanted_on__isnull=True).exists():
        errors.add(
            "patient",
            "This patient already has an implanted pump: record its explant (or a replacement) first.",
        )
    if patient.status != Patient.Status.ACTIVE:
        errors.add("patient", f"This patient is {patient.status}.")
    errors.raise_if_any()
    pump = Pump(
        clinic=patient.clinic,
        patient=patient,
        model=model,
        serial_number=serial_number.strip(),
        udi=udi or "",
        implanted_on=implanted_on,
        low_reservoir_alarm_ml=q3(
            low_reservoir_alarm_ml if low_reservoir_alarm_ml is not None else model.default_alarm_ml
        ),
        expected_end_of_service=_end_of_service(implanted_on, model.battery_months),
    )
    _stamp(pump, actor)
    try:
        with transaction.atomic():
            pump.save()
    except IntegrityError:
        raise ServiceValidationError(
            {"patient": ["This patient already has an implanted pump: record its explant (or a replacement) first."]}
        ) from None
    store_projection(pump, now=now)
    return pump


@transaction.atomic
def update_pump(
    *, pump: Pump, actor: Actor, now: datetime | None = None, if_match: int | None = None, **data
) -> Pump:
    """Change the alarm volume, UDI or serial number of an implanted pump."""
    now = now or timezone.now()
    pump = lock_pump(pump, if_match)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    _check_alarm_volume(errors, data.get("low_reservoir_alarm_ml"), pump.model)
    _identifier(errors, "serial_number", data.get("serial_number"))
    _identifier(errors, "udi", data.get("udi"))
    if "serial_number" in data and not str(data["serial_number"] or "").strip():
        errors.add("serial_number", "This field may not be blank.")
    errors.raise_if_any()
    for key in ("low_reservoir_alarm_ml", "udi", "serial_number", "expected_end_of_service"):
        if key in data and data[key] is not None:
            setattr(pump, key, q3(data[key]) if key == "low_reservoir_alarm_ml" else data[key])
    _stamp(pump, actor)
    pump.save()
    store_projection(pump, now=now, bump_version=True)  # one UPDATE: projection and version
    evaluate_alerts(pump, now)
    return pump


@transaction.atomic
def explant_pump(
    *, pump: Pump, explanted_on: date, actor: Actor, reason: str = "", withdrawal_plan: str | None = None,
    oral_bridge_dose: str = "", withdrawal_plan_reason: str = "", now: datetime | None = None,
    if_match: int | None = None,
) -> Pump:
    """Record the explant. It stops intrathecal baclofen: the withdrawal plan is required
    (docs/clinical-rules.md §15): ``withdrawal_plan`` taper_completed, oral_bridge (with
    ``oral_bridge_dose``) or none (with ``withdrawal_plan_reason``: a critical
    withdrawal_risk alert follows), saved in this transaction."""
    return _explant(pump=pump, explanted_on=explanted_on, actor=actor, reason=reason, now=now, if_match=if_match,
                    plan={"plan": withdrawal_plan, "oral_bridge_dose": oral_bridge_dose,
                          "reason": withdrawal_plan_reason})


def _explant(*, pump: Pump, explanted_on: date, actor: Actor, reason: str, now: datetime | None,
             if_match: int | None, plan: dict | None) -> Pump:
    """The explant; ``plan`` None for a replacement (a new pump goes on delivering)."""
    now = now or timezone.now()
    pump = lock_pump(pump, if_match)
    authorize(actor, pump.clinic_id, permissions.Action.RECORD)
    errors = _Errors()
    _text(errors, "reason", reason, 300)
    if plan is not None:
        validate_plan(errors, "", plan=plan["plan"], oral_bridge_dose=plan["oral_bridge_dose"],
                      reason=plan["reason"], stop=WithdrawalPlan.Stop.EXPLANT)
    if pump.explanted_on is not None:
        errors.add("pump", f"This pump was already explanted on {pump.explanted_on.isoformat()}.")
    if explanted_on < pump.implanted_on:
        errors.add("explanted_on", f"The explant date is before the implant date ({pump.implanted_on.isoformat()}).")
    if explanted_on > pj.local_date(now, pump.clinic.tz):
        errors.add("explanted_on", "The explant date is in the future.")
    errors.raise_if_any()
    pump.explanted_on = explanted_on
    pump.explant_reason = reason or ""
    _stamp(pump, actor, "explant")
    pump.save()
    store_projection(pump, now=now, bump_version=True)  # one UPDATE: projection and version
    evaluate_alerts(pump, now)
    if plan is not None:
        save_plan(pump=pump, stop=WithdrawalPlan.Stop.EXPLANT,
                  stopped_at=pj.start_of_local_day(explanted_on, pump.clinic.tz), plan=plan["plan"],
                  oral_bridge_dose=plan["oral_bridge_dose"], reason=plan["reason"], actor=actor, now=now)
    return pump


@transaction.atomic
def replace_pump(
    *, old: Pump, model: PumpModel, serial_number: str, replaced_on: date, actor: Actor,
    low_reservoir_alarm_ml: Decimal | None = None, udi: str = "", reason: str = "replacement",
    now: datetime | None = None,
) -> Pump:
    """Explant the old pump and implant the new one in one transaction. The new pump goes
    on delivering: no withdrawal plan is asked for (docs/clinical-rules.md §15)."""
    _explant(pump=old, explanted_on=replaced_on, actor=actor, reason=reason, now=now, if_match=None, plan=None)
    return implant_pump(
        patient=old.patient, model=model, serial_number=serial_number, implanted_on=replaced_on,
        actor=actor, low_reservoir_alarm_ml=low_reservoir_alarm_ml, udi=udi, now=now,
    )
