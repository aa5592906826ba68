"""Records as FHIR R4 resources (plain JSON-ready dicts).

Each function takes one record (with its clinic, pump and patient loaded) and returns a
resource that validates against the ``fhir.resources`` R4B models (R4B matches R4 for
these resources). Instants carry the offset of the record's clinic, like the REST API.
Numbers are JSON numbers (a ``Decimal`` becomes an int when whole), quantities are UCUM.

Terminology:
- baclofen: RxNorm 1292 (the ingredient); route: SNOMED CT 72607000 "Intrathecal route";
- the pump's device type, its properties, appointment kinds and alert kinds are codes of
  this server's own code systems, ``{SITE_URL}/fhir/CodeSystem/<name>`` (no SNOMED CT
  device concept is asserted: none was verified for an implantable intrathecal pump);
- facts FHIR has no element for (the reservoir projection, residual checks, spasticity
  origin...) are extensions ``{SITE_URL}/fhir/StructureDefinition/<name>``;
- the MRN is an identifier of type MR (v2-0203) in ``{SITE_URL}/fhir/NamingSystem/mrn/<clinic code>``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from django.conf import settings

from pumps import projection as pj
from pumps import symptoms
from pumps.calendar import DURATION as APPOINTMENT_DURATION
from pumps.formats import rfc3339
from pumps.models import (
    Alert,
    AlertKind,
    Appointment,
    Assessment,
    Patient,
    Program,
    Pump,
    Refill,
    WithdrawalPlan,
)

UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
V2_IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
FLAG_PRIORITY_EXTENSION = "http://hl7.org/fhir/StructureDefinition/flag-priority"
FLAG_PRIORITY = "http://hl7.org/fhir/flag-priority-code"
DOSE_RATE_TYPE = "http://terminology.hl7.org/CodeSystem/dose-rate-type"
GS1_DI = "http://hl7.org/fhir/NamingSystem/gs1-di"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"

FHIR_VERSION = "4.0.1"

BACLOFEN = {"system": RXNORM, "code": "1292", "display": "baclofen"}
INTRATHECAL = {
    "coding": [{"system": SNOMED, "code": "72607000", "display": "Intrathecal route"}],
    "text": "intrathecal",
}
ORDERED = {"coding": [{"system": DOSE_RATE_TYPE, "code": "ordered", "display": "Ordered"}]}

DEVICE_TYPE_CODE = "intrathecal-infusion-pump"
DEVICE_TYPE_DISPLAY = "Implantable intrathecal infusion pump"

APPOINTMENT_STATUS = {
    Appointment.Status.SCHEDULED: "booked",
    Appointment.Status.DONE: "fulfilled",
    Appointment.Status.CANCELLED: "cancelled",
    Appointment.Status.MISSED: "noshow",
}

#: The FHIR resource types served, in the order of the CapabilityStatement.
RESOURCE_TYPES = (
    "Patient", "Device", "MedicationRequest", "MedicationAdministration", "Appointment", "Flag", "Observation",
)


# ------------------------------------------------------------------------ helpers


def site_url() -> str:
    return settings.SITE_URL.rstrip("/")


def base_url() -> str:
    """The FHIR base: ``fullUrl`` values and links start with it."""
    return f"{site_url()}/fhir/r4"


def code_system(name: str) -> str:
    return f"{site_url()}/fhir/CodeSystem/{name}"


def extension_url(name: str) -> str:
    return f"{site_url()}/fhir/StructureDefinition/{name}"


def mrn_system_prefix() -> str:
    return f"{site_url()}/fhir/NamingSystem/mrn/"


def mrn_system(clinic) -> str:
    """MRNs are unique within a clinic: one identifier system per clinic."""
    return f"{mrn_system_prefix()}{clinic.code}"


def num(value: Decimal | int) -> int | float:
    """A decimal as a JSON number: 36.000 → 36, 0.450 → 0.45 (values have 3 decimals at most)."""
    value = Decimal(value)
    if value == value.to_integral_value():
        return int(value)
    return float(value.normalize())


def text_num(value: Decimal | int) -> str:
    """A decimal for prose: 36.000 → "36", 0.450 → "0.45"."""
    return f"{Decimal(value).normalize():f}"


def instant(moment: datetime, tz: tzinfo) -> str:
    """An instant with the clinic's offset, e.g. 2026-02-02T09:00:00-06:00; in UTC when
    the zone's offset then had seconds (local mean time), which FHIR's instant cannot
    carry."""
    return rfc3339(moment, tz)


def quantity(value: Decimal | int, code: str, unit: str) -> dict[str, Any]:
    return {"value": num(value), "unit": unit, "system": UCUM, "code": code}


def ml(value: Decimal) -> dict[str, Any]:
    return quantity(value, "mL", "mL")


def mcg_per_ml(value: Decimal) -> dict[str, Any]:
    return quantity(value, "ug/mL", "mcg/mL")


def reference(resource_type: str, pk: int, display: str | None = None) -> dict[str, str]:
    ref = {"reference": f"{resource_type}/{pk}"}
    if display:
        ref["display"] = display
    return ref


def patient_reference(patient: Patient) -> dict[str, str]:
    return reference("Patient", patient.pk, f"MRN {patient.mrn}")


def device_reference(pump: Pump) -> dict[str, str]:
    return reference("Device", pump.pk, f"{pump.model.code} #{pump.serial_number}")


def clinician(user, external: str) -> str | None:
    if user is not None:
        return user.get_username()
    return external or None


def _meta(updated_at: datetime, tz: tzinfo) -> dict[str, str]:
    return {"lastUpdated": instant(updated_at, tz)}


def _baclofen(text: str) -> dict[str, Any]:
    return {"coding": [dict(BACLOFEN)], "text": text}


# ------------------------------------------------------------------------ Patient


def patient_resource(patient: Patient) -> dict[str, Any]:
    tz = patient.clinic.tz
    extension: list[dict[str, Any]] = [
        {"url": extension_url("spasticity-origin"), "valueCode": patient.spasticity_origin},
        {"url": extension_url("withdrawal-high-risk"), "valueBoolean": patient.withdrawal_high_risk},
    ]
    if patient.high_risk_reason:
        extension.append({"url": extension_url("withdrawal-high-risk-reason"), "valueString": patient.high_risk_reason})
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(patient.pk),
        "meta": _meta(patient.updated_at, tz),
        "extension": extension,
        "identifier": [
            {
                "use": "usual",
                "type": {
                    "coding": [{"system": V2_IDENTIFIER_TYPE, "code": "MR", "display": "Medical record number"}],
                    "text": "MRN",
                },
                "system": mrn_system(patient.clinic),
                "value": patient.mrn,
            }
        ],
        "active": patient.status == Patient.Status.ACTIVE,
        "name": [
            {
                "use": "official",
                "text": f"{patient.given_name} {patient.family_name}",
                "family": patient.family_name,
                "given": [patient.given_name],
            }
        ],
    }
    if patient.phone:
        resource["telecom"] = [{"system": "phone", "value": patient.phone}]
    resource["birthDate"] = patient.birth_date.isoformat()
    if patient.status == Patient.Status.DECEASED:
        resource["deceasedBoolean"] = True
    if patient.caregiver_phone:
        resource["contact"] = [
            {
                "relationship": [{"text": "caregiver"}],
                "telecom": [{"system": "phone", "value": patient.caregiver_phone}],
            }
        ]
    resource["managingOrganization"] = {"display": patient.clinic.name}
    return resource


# ------------------------------------------------------------------------- Device


_GS1_DI = re.compile(r"^\(01\)(\d{14})")


def udi_carrier(udi: str) -> dict[str, str]:
    """The UDI as printed (human-readable form); a GS1 UDI also gives its device
    identifier, the 14 digits of application identifier (01)."""
    carrier = {"carrierHRF": udi}
    match = _GS1_DI.match(udi.replace(" ", ""))
    if match:
        carrier = {"deviceIdentifier": match.group(1), "issuer": GS1_DI, "carrierHRF": udi}
    return carrier


def _projection_extension(pump: Pump, tz: tzinfo) -> dict[str, Any]:
    """The stored reservoir projection (docs/clinical-rules.md §3-§7) as of ``projected_at``: worst case unless
    named expected."""
    parts: list[dict[str, Any]] = [{"url": "status", "valueCode": pump.status}]
    for name, value in (
        ("projectedAt", pump.projected_at),
        ("lowReservoirAlarmAt", pump.low_reservoir_alarm_at),
        ("emptyAt", pump.empty_at),
        ("expectedLowReservoirAlarmAt", pump.expected_low_reservoir_alarm_at),
        ("expectedEmptyAt", pump.expected_empty_at),
        ("drugExpiresAt", pump.drug_expires_at),
    ):
        if value is not None:
            parts.append({"url": name, "valueDateTime": instant(value, tz)})
    if pump.refill_due_on is not None:
        parts.append({"url": "refillDueOn", "valueDate": pump.refill_due_on.isoformat()})
    return {"url": extension_url("reservoir-projection"), "extension": parts}


def device_resource(pump: Pump) -> dict[str, Any]:
    """The implanted pump, with the US Core Implantable Device elements that are known:
    UDI carrier (when a UDI was recorded), manufacturer, device names, model number,
    serial number, type and patient. Manufacture date, expiration date, lot number and
    distinct identifier are not recorded, so they are absent."""
    tz = pump.clinic.tz
    model = pump.model
    extension: list[dict[str, Any]] = [
        {"url": extension_url("implanted-on"), "valueDate": pump.implanted_on.isoformat()}
    ]
    if pump.explanted_on is not None:
        extension.append({"url": extension_url("explanted-on"), "valueDate": pump.explanted_on.isoformat()})
    if pump.expected_end_of_service is not None:
        extension.append(
            {"url": extension_url("expected-end-of-service"), "valueDate": pump.expected_end_of_service.isoformat()}
        )
    extension.append(_projection_extension(pump, tz))
    resource: dict[str, Any] = {
        "resourceType": "Device",
        "id": str(pump.pk),
        "meta": _meta(pump.updated_at, tz),
        "extension": extension,
    }
    if pump.udi:
        resource["udiCarrier"] = [udi_carrier(pump.udi)]
    resource.update(
        {
            "status": "active" if pump.explanted_on is None else "inactive",
            "manufacturer": model.manufacturer,
            "serialNumber": pump.serial_number,
            "deviceName": [
                {"name": model.name, "type": "manufacturer-name"},
                {"name": str(model), "type": "user-friendly-name"},
            ],
            "modelNumber": model.code,
            "type": {
                "coding": [
                    {"system": code_system("device-type"), "code": DEVICE_TYPE_CODE, "display": DEVICE_TYPE_DISPLAY}
                ],
                "text": DEVICE_TYPE_DISPLAY,
            },
            "property": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": code_system("device-property"),
                                "code": "reservoir-volume",
                                "display": "Reservoir volume",
                            }
                        ]
                    },
                    "valueQuantity": [ml(model.reservoir_ml)],
                },
                {
                    "type": {
                        "coding": [
                            {
                                "system": code_system("device-property"),
                                "code": "low-reservoir-alarm-volume",
                                "display": "Low-reservoir alarm volume",
                            }
                        ]
                    },
                    "valueQuantity": [ml(pump.low_reservoir_alarm_ml)],
                },
            ],
            "patient": patient_reference(pump.patient),
            "owner": {"display": pump.clinic.name},
        }
    )
    return resource


# -------------------------------------------------------------- MedicationRequest


def medication_request_status(program: Program, superseded_at: datetime | None) -> str:
    """entered-in-error (voided), completed (a later program took over), stopped (the
    pump was explanted while it was in force), active (in force)."""
    if program.is_voided:
        return "entered-in-error"
    if superseded_at is not None:
        return "completed"
    if program.pump.explanted_on is not None:
        return "stopped"
    return "active"


def _minutes(start: str) -> int:
    return int(start[:2]) * 60 + int(start[3:5])


def _duration(minutes: int) -> tuple[int, str]:
    return (minutes // 60, "h") if minutes % 60 == 0 else (minutes, "min")


def _dosage(program: Program, bounds: dict[str, str], zone: str) -> list[dict[str, Any]]:
    """Basal delivery: one instruction at ``ug/d`` (continuous) or one per flex step at
    ``ug/h`` with its local start time and duration; the on-demand bolus, when allowed,
    as an as-needed instruction with its maximum per day."""
    dosages: list[dict[str, Any]] = []
    if program.mode == Program.Mode.FLEX:
        steps = program.steps or []
        for index, step in enumerate(steps):
            start = step["start"]
            following = steps[(index + 1) % len(steps)]["start"]
            minutes = (_minutes(following) - _minutes(start)) % 1440 or 1440
            length, unit = _duration(minutes)
            end = following if len(steps) > 1 else start
            rate = Decimal(str(step["dose_mcg_per_hour"]))
            dosages.append(
                {
                    "sequence": 1,
                    "text": f"{text_num(rate)} mcg/h from {start} to {end} (local time, {zone})",
                    "timing": {
                        "repeat": {
                            "boundsPeriod": bounds,
                            "duration": length,
                            "durationUnit": unit,
                            "frequency": 1,
                            "period": 1,
                            "periodUnit": "d",
                            "timeOfDay": [f"{start}:00"],
                        }
                    },
                    "route": INTRATHECAL,
                    "doseAndRate": [{"type": ORDERED, "rateQuantity": quantity(rate, "ug/h", "mcg/h")}],
                }
            )
    else:
        dosages.append(
            {
                "sequence": 1,
                "text": f"{text_num(program.daily_dose_mcg)} mcg/day by continuous intrathecal infusion",
                "timing": {"repeat": {"boundsPeriod": bounds}},
                "route": INTRATHECAL,
                "doseAndRate": [{"type": ORDERED, "rateQuantity": quantity(program.daily_dose_mcg, "ug/d", "mcg/day")}],
            }
        )
    if program.ptm_bolus_mcg and program.ptm_max_per_day:
        bolus, per_day = program.ptm_bolus_mcg, program.ptm_max_per_day
        dosages.append(
            {
                "sequence": 1,
                "text": f"On-demand (patient-activated) bolus of {text_num(bolus)} mcg, at most {per_day} per day",
                "timing": {"repeat": {"boundsPeriod": bounds, "frequency": per_day, "period": 1, "periodUnit": "d"}},
                "asNeededBoolean": True,
                "route": INTRATHECAL,
                "doseAndRate": [{"type": ORDERED, "doseQuantity": quantity(bolus, "ug", "mcg")}],
                "maxDosePerPeriod": {
                    "numerator": quantity(bolus * per_day, "ug", "mcg"),
                    "denominator": quantity(1, "d", "day"),
                },
            }
        )
    return dosages


def _withdrawal_plan(program: Program) -> WithdrawalPlan | None:
    try:
        return program.withdrawal_plan
    except WithdrawalPlan.DoesNotExist:
        return None


def withdrawal_plan_text(plan: WithdrawalPlan) -> str:
    """"Delivery stops: withdrawal plan oral baclofen bridge (10 mg four times a day)"."""
    detail = plan.oral_bridge_dose or plan.reason
    return f"Delivery stops: withdrawal plan {plan.get_plan_display()}" + (f" ({detail})" if detail else "")


def medication_request_resource(program: Program, *, superseded_at: datetime | None) -> dict[str, Any]:
    """A program: what the pump delivers from ``effective_at`` (``boundsPeriod.start``)
    until the next program (``boundsPeriod.end``)."""
    pump = program.pump
    tz = pump.clinic.tz
    bounds = {"start": instant(program.effective_at, tz)}
    if superseded_at is not None and not program.is_voided:
        bounds["end"] = instant(superseded_at, tz)
    conc = program.concentration_mcg_per_ml
    daily_volume = pj.to_decimal_ml(program.to_projection().daily_volume_ml())
    notes = [
        {"text": f"Concentration {text_num(conc)} ug/mL"},
        {"text": f"Basal {text_num(program.daily_dose_mcg)} ug/d, {text_num(daily_volume)} mL/d"},
    ]
    if program.override_reason:
        notes.append({"text": f"Titration limit overridden: {program.override_reason}"})
    if program.comedication_confirmed:
        notes.append({"text": f"Dose increase confirmed with CNS-depressant co-medication: "
                              f"{program.comedication_summary}"})
    plan = _withdrawal_plan(program)
    if plan is not None:
        notes.append({"text": withdrawal_plan_text(plan)})
    verifier = clinician(program.verified_by, program.verified_by_external)
    if program.verified_at is not None:
        by = f" by {verifier}" if verifier else ""
        notes.append({"text": f"Verified{by} at {instant(program.verified_at, tz)}"})
    else:
        notes.append({"text": "Not yet verified by a second clinician"})
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": str(program.pk),
        "meta": _meta(program.updated_at, tz),
        "extension": [
            {"url": extension_url("pump"), "valueReference": device_reference(pump)},
            {"url": extension_url("concentration"), "valueQuantity": mcg_per_ml(conc)},
            {"url": extension_url("program-mode"), "valueCode": program.mode},
        ],
        "status": medication_request_status(program, superseded_at),
    }
    if program.is_voided:
        resource["statusReason"] = {"text": program.void_reason or "voided"}
    resource.update(
        {
            "intent": "order",
            "medicationCodeableConcept": _baclofen(f"baclofen {text_num(conc)} mcg/mL, intrathecal"),
            "subject": patient_reference(pump.patient),
            "authoredOn": instant(program.entered_at, tz),
        }
    )
    requester = clinician(program.entered_by, program.entered_by_external)
    if requester:
        resource["requester"] = {"display": requester}
    resource["note"] = notes
    resource["dosageInstruction"] = _dosage(program, bounds, pump.clinic.timezone)
    return resource


# ------------------------------------------------------- MedicationAdministration


def _refill_program(refill: Refill) -> Program | None:
    try:
        return refill.program
    except Program.DoesNotExist:
        return None


def medication_administration_resource(refill: Refill) -> dict[str, Any]:
    """A refill: the volume added to the reservoir (``dosage.dose``), the pump
    (``device``), the residual checks as extensions and in the notes."""
    pump = refill.pump
    tz = pump.clinic.tz
    conc = refill.concentration_mcg_per_ml
    extension: list[dict[str, Any]] = []
    for name, value in (
        ("extracted-volume", refill.extracted_volume_ml),
        ("residual-left-volume", refill.residual_left_ml),
        ("bridge-bolus-volume", refill.bridge_bolus_ml),
        ("expected-residual-volume", refill.expected_residual_ml),
        ("residual-discrepancy", refill.discrepancy_ml),
    ):
        if value is not None:
            extension.append({"url": extension_url(name), "valueQuantity": ml(value)})
    extension.append({"url": extension_url("residual-discrepancy-flagged"), "valueBoolean": refill.discrepancy_flagged})
    extension.append(
        {"url": extension_url("refilled-after-projected-empty"), "valueBoolean": refill.refilled_after_empty}
    )
    extension.append({"url": extension_url("concentration"), "valueQuantity": mcg_per_ml(conc)})

    notes = [{"text": f"Concentration {text_num(conc)} ug/mL"}]
    if refill.extracted_volume_ml is None:
        notes.append({"text": "First fill after implant: no residual extracted"})
    else:
        line = f"Extracted residual {text_num(refill.extracted_volume_ml)} mL"
        if refill.expected_residual_ml is not None:
            line += f", expected {text_num(refill.expected_residual_ml)} mL"
        if refill.discrepancy_ml is not None:
            sign = "+" if refill.discrepancy_ml > 0 else ""
            line += f", discrepancy {sign}{text_num(refill.discrepancy_ml)} mL"
            line += " (flagged)" if refill.discrepancy_flagged else " (within threshold)"
        notes.append({"text": line})
    notes.extend({"text": flag} for flag in refill.flags or [])
    if refill.lot_number:
        expiry = f", expires {refill.lot_expiry.isoformat()}" if refill.lot_expiry else ""
        notes.append({"text": f"Lot {refill.lot_number}{expiry}"})
    if refill.notes:
        notes.append({"text": refill.notes})

    product = refill.drug_product.name if refill.drug_product_id else f"baclofen {text_num(conc)} mcg/mL"
    resource: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": str(refill.pk),
        "meta": _meta(refill.updated_at, tz),
        "extension": extension,
        "status": "entered-in-error" if refill.is_voided else "completed",
    }
    if refill.is_voided:
        resource["statusReason"] = [{"text": refill.void_reason or "voided"}]
    resource.update(
        {
            "medicationCodeableConcept": _baclofen(product),
            "subject": patient_reference(pump.patient),
            "effectiveDateTime": instant(refill.performed_at, tz),
        }
    )
    performer = clinician(refill.performed_by, refill.performed_by_external)
    if performer:
        resource["performer"] = [{"actor": {"display": performer}}]
    program = _refill_program(refill)
    if program is not None:
        resource["request"] = reference("MedicationRequest", program.pk)
    resource["device"] = [device_reference(pump)]
    resource["note"] = notes
    resource["dosage"] = {
        "text": f"{text_num(refill.added_volume_ml)} mL of baclofen {text_num(conc)} mcg/mL added to the pump "
        "reservoir",
        "route": INTRATHECAL,
        "dose": ml(refill.added_volume_ml),
    }
    return resource


# -------------------------------------------------------------------- Appointment


def appointment_resource(appointment: Appointment) -> dict[str, Any]:
    """``end`` is ``start`` plus the nominal length of the kind of visit (the one the
    iCalendar invitations use: refill and review 30 min, replacement surgery 2 h)."""
    pump = appointment.pump
    tz = pump.clinic.tz
    length = APPOINTMENT_DURATION.get(appointment.kind, timedelta(minutes=30))
    label = appointment.get_kind_display()
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": str(appointment.pk),
        "meta": _meta(appointment.updated_at, tz),
        "status": "entered-in-error" if appointment.is_voided else APPOINTMENT_STATUS[appointment.status],
        "serviceType": [
            {
                "coding": [{"system": code_system("appointment-kind"), "code": appointment.kind, "display": label}],
                "text": label,
            }
        ],
        "description": f"Intrathecal pump {label} ({pump.model.code} #{pump.serial_number})",
        "start": instant(appointment.scheduled_for, tz),
        "end": instant(appointment.scheduled_for + length, tz),
        "minutesDuration": int(length.total_seconds() // 60),
    }
    comment = appointment.notes
    if appointment.is_voided:
        comment = "; ".join(p for p in (f"Voided: {appointment.void_reason}", appointment.notes) if p)
    if comment:
        resource["comment"] = comment
    resource["participant"] = [
        {"actor": patient_reference(pump.patient), "required": "required", "status": "accepted"},
        {"actor": device_reference(pump), "required": "information-only", "status": "accepted"},
    ]
    return resource


# --------------------------------------------------------------------------- Flag


def flag_resource(alert: Alert) -> dict[str, Any]:
    """A critical alert of a pump: ``active`` until it is resolved (acknowledging stops
    the e-mails, not the condition), then ``inactive`` with ``period.end``."""
    tz = alert.clinic.tz
    pump = alert.pump
    label = AlertKind(alert.kind).label
    period = {"start": instant(alert.created_at, tz)}
    if alert.resolved_at is not None:
        period["end"] = instant(alert.resolved_at, tz)
    last_change = max(m for m in (alert.created_at, alert.acknowledged_at, alert.resolved_at) if m is not None)
    extension: list[dict[str, Any]] = [
        {
            "url": FLAG_PRIORITY_EXTENSION,
            "valueCodeableConcept": {"coding": [{"system": FLAG_PRIORITY, "code": "PH", "display": "High priority"}]},
        },
        {"url": extension_url("pump"), "valueReference": device_reference(pump)},
    ]
    if alert.acknowledged_at is not None:
        extension.append({"url": extension_url("acknowledged-at"), "valueDateTime": instant(alert.acknowledged_at, tz)})
    if alert.message:
        extension.append({"url": extension_url("alert-message"), "valueString": alert.message})
    return {
        "resourceType": "Flag",
        "id": str(alert.pk),
        "meta": _meta(last_change, tz),
        "extension": extension,
        "status": "active" if alert.resolved_at is None else "inactive",
        "category": [
            {"coding": [{"system": FLAG_CATEGORY, "code": "clinical", "display": "Clinical"}], "text": "clinical"}
        ],
        "code": {
            "coding": [{"system": code_system("alert-kind"), "code": alert.kind, "display": label}],
            "text": label,
        },
        "subject": patient_reference(pump.patient),
        "period": period,
    }


# -------------------------------------------------------------------- Observation

#: The local code systems of a visit assessment (docs/fhir.md): the observation and its
#: components, and the Modified Ashworth grades.
ASSESSMENT_CODE_SYSTEM = "assessment"
ASHWORTH_CODE_SYSTEM = "modified-ashworth-grade"
VISIT_ASSESSMENT = ("itb_visit_assessment", "Intrathecal baclofen visit assessment")
PENN = ("penn_spasm_frequency", "Penn Spasm Frequency Scale")
PAIN = ("pain_score", "Pain score (0-10)")


def assessment_codes() -> list[tuple[str, str]]:
    """Every code of the ``assessment`` code system, in the order of a resource's components."""
    limbs = [(f"ashworth_{suffix}", f"Modified Ashworth Scale, {words}") for suffix, words in symptoms.LIMBS]
    withdrawal = [(symptoms.WITHDRAWAL_FIELD_PREFIX + code, f"Withdrawal sign: {words}")
                  for code, words in symptoms.WITHDRAWAL_SIGNS]
    overdose = [(symptoms.OVERDOSE_FIELD_PREFIX + code, f"Overdose sign: {words}")
                for code, words in symptoms.OVERDOSE_SIGNS]
    return [VISIT_ASSESSMENT, *limbs, PENN, PAIN, *withdrawal, *overdose]


def _assessment_code(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": code_system(ASSESSMENT_CODE_SYSTEM), "code": code, "display": display}],
            "text": display}


def _category(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": OBSERVATION_CATEGORY, "code": code, "display": display}]}


NOT_PERFORMED = {
    "coding": [{"system": DATA_ABSENT_REASON, "code": "not-performed", "display": "Not Performed"}],
    "text": "not assessed",
}


def _observation_components(assessment: Assessment) -> list[dict[str, Any]]:
    """Each limb's grade (a code of ``modified-ashworth-grade``), Penn and pain (integers;
    not assessed: ``dataAbsentReason`` not-performed), each sign (a boolean)."""
    grades = dict(symptoms.ASHWORTH_GRADES)
    codes = dict(assessment_codes())
    components: list[dict[str, Any]] = []
    for suffix, _ in symptoms.LIMBS:
        field = f"ashworth_{suffix}"
        component: dict[str, Any] = {"code": _assessment_code(field, codes[field])}
        grade = getattr(assessment, field)
        if grade:
            component["valueCodeableConcept"] = {
                "coding": [{"system": code_system(ASHWORTH_CODE_SYSTEM), "code": grade, "display": grades[grade]}],
                "text": grade,
            }
        else:
            component["dataAbsentReason"] = NOT_PERFORMED
        components.append(component)
    for field, display in (PENN, PAIN):
        component = {"code": _assessment_code(field, display)}
        value = getattr(assessment, field)
        if value is None:
            component["dataAbsentReason"] = NOT_PERFORMED
        else:
            component["valueInteger"] = value
        components.append(component)
    for field in (*symptoms.withdrawal_fields(), *symptoms.overdose_fields()):
        components.append({"code": _assessment_code(field, codes[field]), "valueBoolean": getattr(assessment, field)})
    return components


def observation_resource(assessment: Assessment) -> dict[str, Any]:
    """A visit assessment (docs/clinical-rules.md §15): one Observation with a component
    per limb, Penn, pain and sign; ``partOf`` the refill it was recorded with."""
    pump = assessment.pump
    tz = pump.clinic.tz
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": str(assessment.pk),
        "meta": _meta(assessment.updated_at, tz),
        "extension": [{"url": extension_url("pump"), "valueReference": device_reference(pump)}],
    }
    if assessment.refill_id is not None:
        resource["partOf"] = [reference("MedicationAdministration", assessment.refill_id)]
    resource.update(
        {
            "status": "entered-in-error" if assessment.is_voided else "final",
            "category": [_category("exam", "Exam"), _category("survey", "Survey")],
            "code": _assessment_code(*VISIT_ASSESSMENT),
            "subject": patient_reference(pump.patient),
            "effectiveDateTime": instant(assessment.assessed_at, tz),
            "issued": instant(assessment.created_at, tz),
        }
    )
    performer = clinician(assessment.assessed_by, assessment.assessed_by_external)
    if performer:
        resource["performer"] = [{"display": performer}]
    notes = []
    if assessment.is_voided:
        notes.append({"text": f"Voided: {assessment.void_reason or 'no reason given'}"})
    if assessment.goal_note:
        notes.append({"text": f"Goal: {assessment.goal_note}"})
    if assessment.notes:
        notes.append({"text": assessment.notes})
    if notes:
        resource["note"] = notes
    resource["component"] = _observation_components(assessment)
    return resource
