"""Patients: create and update, with the identifier rules."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from clinic import permissions
from clinic.models import Clinic
from pumps import projection as pj
from pumps.errors import ServiceValidationError
from pumps.history import (
    lock_pump,
    store_projection,
)
from pumps.models import (
    Patient,
    Pump,
)

from .base import (
    Actor,
    _Errors,
    _identifier,
    _stamp,
    _text,
    authorize,
    evaluate_alerts,
)

PATIENT_FIELDS = (
    "mrn", "family_name", "given_name", "birth_date", "spasticity_origin", "withdrawal_high_risk",
    "high_risk_reason", "phone", "caregiver_phone", "status",
)


def _patient_errors(data: Mapping[str, Any], today: date) -> _Errors:
    errors = _Errors()
    for field in ("mrn", "family_name", "given_name", "phone", "caregiver_phone"):
        _identifier(errors, field, data.get(field))
    _text(errors, "high_risk_reason", data.get("high_risk_reason"), 300)
    if "mrn" in data and not str(data["mrn"] or "").strip():
        errors.add("mrn", "This field may not be blank.")
    birth = data.get("birth_date")
    if birth is not None and birth > today:
        errors.add("birth_date", "The birth date is in the future.")
    if data.get("spasticity_origin") not in (None, *Patient.Origin.values):
        errors.add("spasticity_origin", f"Must be one of: {', '.join(Patient.Origin.values)}.")
    if data.get("status") not in (None, *Patient.Status.values):
        errors.add("status", f"Must be one of: {', '.join(Patient.Status.values)}.")
    return errors


@transaction.atomic
def create_patient(*, clinic: Clinic, actor: Actor, now: datetime | None = None, **data) -> Patient:
    now = now or timezone.now()
    authorize(actor, clinic, permissions.Action.RECORD)
    errors = _patient_errors(data, pj.local_date(now, clinic.tz))
    mrn = str(data.get("mrn") or "").strip()
    if mrn and Patient.objects.filter(clinic=clinic, mrn=mrn).exists():
        errors.add("mrn", "A patient with this MRN already exists in this clinic.")
    errors.raise_if_any()
    patient = Patient(clinic=clinic, **{k: v for k, v in data.items() if k in PATIENT_FIELDS})
    patient.mrn = mrn
    _stamp(patient, actor)
    try:
        with transaction.atomic():
            patient.save()
    except IntegrityError:
        raise ServiceValidationError({"mrn": ["A patient with this MRN already exists in this clinic."]}) from None
    return patient


@transaction.atomic
def update_patient(*, patient: Patient, actor: Actor, now: datetime | None = None, **data) -> Patient:
    now = now or timezone.now()
    patient = Patient.objects.select_for_update(of=("self",), no_key=True).select_related("clinic").get(pk=patient.pk)
    authorize(actor, patient.clinic_id, permissions.Action.RECORD)
    errors = _patient_errors(data, pj.local_date(now, patient.clinic.tz))
    if "mrn" in data:
        data["mrn"] = str(data["mrn"] or "").strip()
        if Patient.objects.filter(clinic=patient.clinic, mrn=data["mrn"]).exclude(pk=patient.pk).exists():
            errors.add("mrn", "A patient with this MRN already exists in this clinic.")
    errors.raise_if_any()
    for key, value in data.items():
        if key in PATIENT_FIELDS:
            setattr(patient, key, value)
    _stamp(patient, actor)
    patient.save()
    # High-risk days and patient status change due dates and status of the implanted pump.
    for pump_id in Pump.objects.filter(patient=patient).values_list("id", flat=True):
        pump = lock_pump(pump_id)
        store_projection(pump, now=now)
        evaluate_alerts(pump, now)
    return patient
