"""FHIR R4 read API under /fhir/r4/ (README, REST API): every resource and Bundle validates with the
R4B models of ``fhir.resources``; codes, units and values are exact; same tokens and
clinic scoping as the REST API, with OperationOutcome errors."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.appointment import Appointment as FhirAppointment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient as FhirPatient
from rest_framework.test import APIClient

from pumps import services
from pumps.models import Alert, Appointment, DrugProduct, Patient
from tests.api_support import CHICAGO, session_client, token_client
from tests.factories import make_patient, make_pump, make_user

D = Decimal
FHIR = "/fhir/r4"
BASE = "https://pumps.example.org/fhir/r4"  # SITE_URL of the tests (conftest)
SD = "https://pumps.example.org/fhir/StructureDefinition/"
CS = "https://pumps.example.org/fhir/CodeSystem/"
CONTENT_TYPE = "application/fhir+json; charset=utf-8"
UCUM = "http://unitsofmeasure.org"
RXNORM_BACLOFEN = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1292", "display": "baclofen"}
INTRATHECAL = {
    "coding": [{"system": "http://snomed.info/sct", "code": "72607000", "display": "Intrathecal route"}],
    "text": "intrathecal",
}
ORDERED = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/dose-rate-type", "code": "ordered", "display": "Ordered"}
    ]
}
UDI = "(01)00643169001763(17)300712(21)NGP123456"
SYSTEM = services.Actor.system("test")


def at(*args) -> datetime:
    return datetime(*args, tzinfo=CHICAGO)


def ext(resource: dict, name: str) -> dict:
    url = name if name.startswith("http") else SD + name
    (found,) = [e for e in resource.get("extension", []) if e["url"] == url]
    return found


@pytest.fixture
def history(clinic, patient, pump, nurse, prescriber):
    """The worked example's first fill (docs/clinical-rules.md §12) with its continuous program, a flex program with on-demand
    boluses 18 days later, a second refill with a flagged residual, an appointment and a
    critical alert."""
    services.update_pump(pump=pump, actor=SYSTEM, udi=UDI, now=at(2026, 2, 1, 12))
    first = services.record_refill(
        pump=pump,
        performed_at=at(2026, 2, 2, 9),
        added_volume_ml=D("36"),
        concentration_mcg_per_ml=D("1000"),
        drug_product=DrugProduct.objects.get(code="gablofen-1000"),
        lot_number="L123",
        lot_expiry=date(2027, 1, 31),
        performed_by="nina",
        actor=SYSTEM,
        now=at(2026, 2, 2, 10),
        program=services.ProgramInput(concentration_mcg_per_ml=D("1000"), daily_dose_mcg=D("450"), entered_by="dr_pat"),
    )
    flex = services.record_program(
        pump=pump,
        effective_at=at(2026, 2, 20, 9),
        actor=SYSTEM,
        now=at(2026, 2, 20, 10),
        data=services.ProgramInput(
            concentration_mcg_per_ml=D("1000"),
            mode="flex",
            steps=[{"start": "07:00", "dose_mcg_per_hour": "20"}, {"start": "19:30", "dose_mcg_per_hour": "15.5"}],
            ptm_bolus_mcg=D("50"),
            ptm_max_per_day=4,
            entered_by="dr_pat",
        ),
    )
    second = services.record_refill(
        pump=pump,
        performed_at=at(2026, 3, 2, 9),
        extracted_volume_ml=D("20.0"),
        added_volume_ml=D("30"),
        concentration_mcg_per_ml=D("1000"),
        performed_by="Dr. External 42",
        actor=SYSTEM,
        now=at(2026, 3, 2, 10),
    )
    appointment = services.schedule_appointment(
        pump=pump, scheduled_for=at(2026, 3, 30, 10), actor=SYSTEM, now=at(2026, 3, 2, 10)
    )
    alert = Alert.objects.create(
        clinic=clinic,
        pump=pump,
        kind="low_reservoir",
        episode=f"fill:{second.pk}",
        severity="critical",
        created_at=at(2026, 4, 16, 13, 30),
        due_at=at(2026, 4, 16, 13, 21),
        message="worst-case volume at or below the alarm volume",
    )
    return {
        "first": first,
        "program": first.program,
        "flex": flex,
        "second": second,
        "appointment": appointment,
        "alert": alert,
    }


@pytest.fixture
def api(clinic):
    return token_client(clinic, write=False)[0]


def get(api, path, **params):
    response = api.get(f"{FHIR}/{path}", params)
    assert response["Content-Type"] == CONTENT_TYPE, response.content
    return response


# --------------------------------------------------------------------- metadata


def test_metadata_is_a_valid_capability_statement_listing_every_resource(api):
    response = get(api, "metadata")
    assert response.status_code == 200
    body = response.json()
    CapabilityStatement.model_validate(body)
    assert body["fhirVersion"] == "4.0.1"
    assert body["kind"] == "instance"
    assert body["format"] == ["application/fhir+json", "json"]
    rest = body["rest"][0]
    assert rest["mode"] == "server"
    assert [r["type"] for r in rest["resource"]] == [
        "Patient",
        "Device",
        "MedicationRequest",
        "MedicationAdministration",
        "Appointment",
        "Flag",
        "Observation",
    ]
    for resource in rest["resource"]:
        assert resource["interaction"] == [{"code": "read"}, {"code": "search-type"}]
    device = rest["resource"][1]
    assert [(p["name"], p["type"]) for p in device["searchParam"]] == [("_id", "token"), ("patient", "reference")]


def test_json_is_served_as_fhir_json_whatever_accept_says_and_other_formats_are_406(api, patient):
    for accept in ("application/json", "application/fhir+json", "*/*", "text/html"):
        response = api.get(f"{FHIR}/Patient/{patient.pk}", HTTP_ACCEPT=accept)
        assert response.status_code == 200
        assert response["Content-Type"] == CONTENT_TYPE
    assert get(api, f"Patient/{patient.pk}", _format="application/fhir+json").status_code == 200
    response = get(api, f"Patient/{patient.pk}", _format="xml")
    assert response.status_code == 406
    body = response.json()
    OperationOutcome.model_validate(body)
    assert body["issue"] == [
        {"severity": "error", "code": "not-supported", "diagnostics": "_format=xml: this server answers in JSON only."}
    ]


# --------------------------------------------------------------- authentication


@pytest.mark.parametrize("path", ["metadata", "Patient/1", "Device?patient=1", "Flag"])
def test_no_token_is_401_with_an_operation_outcome(db, path):
    response = APIClient().get(f"{FHIR}/{path}")
    assert response.status_code == 401
    assert response["Content-Type"] == CONTENT_TYPE
    assert response["WWW-Authenticate"] == "Bearer"
    body = response.json()
    OperationOutcome.model_validate(body)
    assert body == {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "login", "diagnostics": "Authentication credentials were not provided."}
        ],
    }


def test_revoked_token_is_401(clinic, patient):
    api, client = token_client(clinic)
    assert get(api, f"Patient/{patient.pk}").status_code == 200
    client.revoke()
    response = get(api, f"Patient/{patient.pk}")
    assert response.status_code == 401
    assert response.json()["issue"] == [
        {"severity": "error", "code": "login", "diagnostics": "Invalid or revoked token."}
    ]


def test_writes_are_not_supported(clinic, patient):
    api, _ = token_client(clinic, write=True)
    response = api.post(f"{FHIR}/Patient", {"resourceType": "Patient"}, format="json")
    assert response.status_code == 405
    assert response["Content-Type"] == CONTENT_TYPE
    assert response.json()["issue"][0]["code"] == "not-supported"


# ------------------------------------------------------------------------ scoping


def test_another_clinics_records_answer_404_operation_outcome_and_are_never_found(history, pump, other_clinic):
    api, _ = token_client(other_clinic, name="South EHR")
    reads = {
        "Patient": pump.patient_id,
        "Device": pump.pk,
        "MedicationRequest": history["program"].pk,
        "MedicationAdministration": history["first"].pk,
        "Appointment": history["appointment"].pk,
        "Flag": history["alert"].pk,
    }
    for resource_type, pk in reads.items():
        response = get(api, f"{resource_type}/{pk}")
        assert response.status_code == 404, resource_type
        body = response.json()
        OperationOutcome.model_validate(body)
        assert body["issue"] == [
            {"severity": "error", "code": "not-found", "diagnostics": f"{resource_type}/{pk} was not found."}
        ]
        # the same answer as an id that does not exist
        assert get(api, f"{resource_type}/999999").json()["issue"][0]["code"] == "not-found"
    for resource_type in ("Device", "MedicationRequest", "MedicationAdministration", "Appointment", "Flag"):
        bundle = get(api, resource_type, patient=pump.patient_id).json()
        assert bundle["total"] == 0 and "entry" not in bundle, resource_type
    assert get(api, "Patient", identifier="MRN001").json()["total"] == 0


def test_search_without_patient_finds_only_the_callers_clinic(history, pump, other_clinic):
    theirs = make_pump(make_patient(other_clinic, mrn="MRN001"), serial="SOUTH-1")
    api, _ = token_client(pump.clinic)
    bundle = get(api, "Device").json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [str(pump.pk)]
    south, _ = token_client(other_clinic, name="South EHR")
    assert [e["resource"]["id"] for e in get(south, "Device").json()["entry"]] == [str(theirs.pk)]


def test_staff_session_reads_its_clinics_and_a_superuser_reads_every_clinic(history, pump, other_clinic):
    nurse_api = session_client(make_user("nora", pump.clinic, "viewer"))
    assert get(nurse_api, f"Device/{pump.pk}").status_code == 200
    outsider = session_client(make_user("sam", other_clinic, "nurse"))
    assert get(outsider, f"Device/{pump.pk}").status_code == 404
    root = session_client(make_user("root", None, is_superuser=True))
    assert get(root, f"Device/{pump.pk}").status_code == 200


def test_unknown_resource_types_and_malformed_ids_are_404(api, patient):
    response = get(api, "Procedure/1")
    assert response.status_code == 404
    assert response.json()["issue"][0]["diagnostics"] == (
        "Resource type 'Procedure' is not served here; served: Patient, Device, MedicationRequest, "
        "MedicationAdministration, Appointment, Flag, Observation."
    )
    assert get(api, "Patient/abc").status_code == 404
    assert get(api, "Patient/abc").json()["issue"][0]["diagnostics"] == "Patient/abc was not found."


# ------------------------------------------------------------------------ Patient


def test_patient_read_is_exact_and_valid(api, clinic):
    patient = make_patient(
        clinic,
        mrn="MRN777",
        family_name="Okafor",
        given_name="Chidi",
        origin="cerebral",
        high_risk=True,
        birth_date=date(1975, 9, 3),
    )
    Patient.objects.filter(pk=patient.pk).update(
        high_risk_reason="injury at T4", phone="+1 312 555 0100", caregiver_phone="+1 312 555 0199"
    )
    patient.refresh_from_db()
    response = get(api, f"Patient/{patient.pk}")
    assert response.status_code == 200
    body = response.json()
    FhirPatient.model_validate(body)
    assert body == {
        "resourceType": "Patient",
        "id": str(patient.pk),
        "meta": {"lastUpdated": patient.updated_at.astimezone(CHICAGO).isoformat()},
        "extension": [
            {"url": SD + "spasticity-origin", "valueCode": "cerebral"},
            {"url": SD + "withdrawal-high-risk", "valueBoolean": True},
            {"url": SD + "withdrawal-high-risk-reason", "valueString": "injury at T4"},
        ],
        "identifier": [
            {
                "use": "usual",
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": "MR",
                            "display": "Medical record number",
                        }
                    ],
                    "text": "MRN",
                },
                "system": "https://pumps.example.org/fhir/NamingSystem/mrn/north",
                "value": "MRN777",
            }
        ],
        "active": True,
        "name": [{"use": "official", "text": "Chidi Okafor", "family": "Okafor", "given": ["Chidi"]}],
        "telecom": [{"system": "phone", "value": "+1 312 555 0100"}],
        "birthDate": "1975-09-03",
        "contact": [
            {"relationship": [{"text": "caregiver"}], "telecom": [{"system": "phone", "value": "+1 312 555 0199"}]}
        ],
        "managingOrganization": {"display": "North Spasticity Clinic"},
    }
    assert body["meta"]["lastUpdated"][-6:] in ("-06:00", "-05:00")


def test_deceased_patient_is_inactive_and_deceased(api, clinic):
    patient = make_patient(clinic, mrn="MRN900", status="deceased")
    body = get(api, f"Patient/{patient.pk}").json()
    FhirPatient.model_validate(body)
    assert body["active"] is False
    assert body["deceasedBoolean"] is True


def test_patient_search_by_identifier_with_and_without_system(api, patient, clinic):
    make_patient(clinic, mrn="MRN002", family_name="Other")
    system = "https://pumps.example.org/fhir/NamingSystem/mrn/north"
    for value in ("MRN001", f"{system}|MRN001", "|MRN001"):
        bundle = get(api, "Patient", identifier=value).json()
        Bundle.model_validate(bundle)
        assert bundle["total"] == 1, value
        assert bundle["entry"][0]["fullUrl"] == f"{BASE}/Patient/{patient.pk}"
    assert get(api, "Patient", identifier="https://elsewhere.example.org/mrn|MRN001").json()["total"] == 0
    assert get(api, "Patient", identifier=f"{system.replace('north', 'south')}|MRN001").json()["total"] == 0
    assert get(api, "Patient").json()["total"] == 2


# ------------------------------------------------------------------------- Device


def test_device_read_has_the_us_core_implantable_device_fields(api, history, pump):
    response = get(api, f"Device/{pump.pk}")
    assert response.status_code == 200
    body = response.json()
    Device.model_validate(body)
    assert body["udiCarrier"] == [
        {
            "deviceIdentifier": "00643169001763",
            "issuer": "http://hl7.org/fhir/NamingSystem/gs1-di",
            "carrierHRF": UDI,
        }
    ]
    assert body["status"] == "active"
    assert body["manufacturer"] == "Medtronic"
    assert body["deviceName"] == [
        {"name": "SynchroMed II", "type": "manufacturer-name"},
        {"name": "Medtronic SynchroMed II 8637-40 (40 mL)", "type": "user-friendly-name"},
    ]
    assert body["modelNumber"] == "8637-40"
    assert body["serialNumber"] == "SN-0001"
    assert body["type"] == {
        "coding": [
            {
                "system": CS + "device-type",
                "code": "intrathecal-infusion-pump",
                "display": "Implantable intrathecal infusion pump",
            }
        ],
        "text": "Implantable intrathecal infusion pump",
    }
    assert body["patient"] == {"reference": f"Patient/{pump.patient_id}", "display": "MRN MRN001"}
    for unknown in ("manufactureDate", "expirationDate", "lotNumber", "distinctIdentifier"):
        assert unknown not in body
    assert body["property"][1]["valueQuantity"] == [{"value": 2, "unit": "mL", "system": UCUM, "code": "mL"}]
    assert ext(body, "implanted-on") == {"url": SD + "implanted-on", "valueDate": "2026-01-15"}
    assert ext(body, "expected-end-of-service")["valueDate"] == "2033-01-15"


def test_device_carries_the_stored_reservoir_projection(api, clinic, patient, pump):
    """The worked example (docs/clinical-rules.md §12): LRA 2026-04-18 23:20 CDT, empty 2026-04-23 10:00, due 2026-04-10."""
    services.record_refill(
        pump=pump,
        performed_at=at(2026, 2, 2, 9),
        added_volume_ml=D("36"),
        concentration_mcg_per_ml=D("1000"),
        actor=SYSTEM,
        now=at(2026, 2, 2, 10),
        program=services.ProgramInput(concentration_mcg_per_ml=D("1000"), daily_dose_mcg=D("450")),
    )
    projection = ext(get(api, f"Device/{pump.pk}").json(), "reservoir-projection")
    assert projection["extension"] == [
        {"url": "status", "valueCode": "ok"},
        {"url": "projectedAt", "valueDateTime": "2026-02-02T10:00:00-06:00"},
        {"url": "lowReservoirAlarmAt", "valueDateTime": "2026-04-18T23:20:00-05:00"},
        {"url": "emptyAt", "valueDateTime": "2026-04-23T10:00:00-05:00"},
        {"url": "expectedLowReservoirAlarmAt", "valueDateTime": "2026-04-18T23:20:00-05:00"},
        {"url": "expectedEmptyAt", "valueDateTime": "2026-04-23T10:00:00-05:00"},
        {"url": "drugExpiresAt", "valueDateTime": "2026-08-01T10:00:00-05:00"},
        {"url": "refillDueOn", "valueDate": "2026-04-10"},
    ]


def test_explanted_pump_without_udi_is_inactive_without_udi_carrier(api, patient, pump):
    services.explant_pump(pump=pump, explanted_on=date(2026, 2, 1), actor=SYSTEM, now=at(2026, 2, 1, 12),
                          withdrawal_plan="taper_completed")
    body = get(api, f"Device/{pump.pk}").json()
    Device.model_validate(body)
    assert body["status"] == "inactive"
    assert "udiCarrier" not in body
    assert ext(body, "explanted-on")["valueDate"] == "2026-02-01"


def test_device_search_by_patient_is_a_valid_searchset_bundle(api, history, pump, clinic):
    make_pump(make_patient(clinic, mrn="MRN002"), serial="SN-0002")
    for value in (str(pump.patient_id), f"Patient/{pump.patient_id}"):
        response = get(api, "Device", patient=value)
        assert response.status_code == 200
        bundle = response.json()
        parsed = Bundle.model_validate(bundle)
        assert bundle["type"] == "searchset"
        assert bundle["total"] == 1
        assert bundle["link"] == [
            {"relation": "self", "url": f"{BASE}/Device?patient={value.replace('/', '%2F')}&_count=100"}
        ]
        (entry,) = bundle["entry"]
        assert entry["fullUrl"] == f"{BASE}/Device/{pump.pk}"
        assert entry["search"] == {"mode": "match"}
        assert entry["resource"] == get(api, f"Device/{pump.pk}").json()
        assert isinstance(parsed.entry[0].resource, Device)


def test_search_with_a_malformed_patient_is_400_operation_outcome(api):
    response = get(api, "Device", patient="Device/3")
    assert response.status_code == 400
    body = response.json()
    OperationOutcome.model_validate(body)
    assert body["issue"] == [
        {
            "severity": "error",
            "code": "invalid",
            "diagnostics": "patient=Device/3: give a Patient id, e.g. patient=12 or Patient/12.",
        }
    ]
    assert get(api, "Device", _count="ten").json()["issue"][0]["diagnostics"] == (
        "_count=ten: give a whole number, 0 or more."
    )


def test_search_pages_with_count_and_offset(api, history, pump):
    bundle = get(api, "MedicationAdministration", patient=pump.patient_id, _count=1).json()
    Bundle.model_validate(bundle)
    assert bundle["total"] == 2
    assert [e["resource"]["id"] for e in bundle["entry"]] == [str(history["first"].pk)]
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert links == {
        "self": f"{BASE}/MedicationAdministration?patient={pump.patient_id}&_count=1",
        "next": f"{BASE}/MedicationAdministration?patient={pump.patient_id}&_count=1&_offset=1",
    }
    page2 = get(api, "MedicationAdministration", patient=pump.patient_id, _count=1, _offset=1).json()
    assert [e["resource"]["id"] for e in page2["entry"]] == [str(history["second"].pk)]
    assert {link["relation"] for link in page2["link"]} == {"self", "previous"}
    summary = get(api, "MedicationAdministration", patient=pump.patient_id, _count=0).json()
    assert summary["total"] == 2 and "entry" not in summary


# -------------------------------------------------------------- MedicationRequest


def test_continuous_program_is_a_completed_medication_request_in_ug_per_day(api, history, pump):
    program = history["program"]
    body = get(api, f"MedicationRequest/{program.pk}").json()
    MedicationRequest.model_validate(body)
    assert body["status"] == "completed"  # the flex program superseded it
    assert body["intent"] == "order"
    assert body["medicationCodeableConcept"] == {
        "coding": [RXNORM_BACLOFEN],
        "text": "baclofen 1000 mcg/mL, intrathecal",
    }
    assert body["subject"] == {"reference": f"Patient/{pump.patient_id}", "display": "MRN MRN001"}
    assert body["authoredOn"] == "2026-02-02T10:00:00-06:00"  # entered_at
    assert body["requester"] == {"display": "dr_pat"}
    assert body["note"] == [
        {"text": "Concentration 1000 ug/mL"},
        {"text": "Basal 450 ug/d, 0.45 mL/d"},
        {"text": "Not yet verified by a second clinician"},
    ]
    assert body["dosageInstruction"] == [
        {
            "sequence": 1,
            "text": "450 mcg/day by continuous intrathecal infusion",
            "timing": {
                "repeat": {"boundsPeriod": {"start": "2026-02-02T09:00:00-06:00", "end": "2026-02-20T09:00:00-06:00"}}
            },
            "route": INTRATHECAL,
            "doseAndRate": [
                {"type": ORDERED, "rateQuantity": {"value": 450, "unit": "mcg/day", "system": UCUM, "code": "ug/d"}}
            ],
        }
    ]
    assert ext(body, "pump")["valueReference"] == {"reference": f"Device/{pump.pk}", "display": "8637-40 #SN-0001"}
    assert ext(body, "concentration")["valueQuantity"] == {
        "value": 1000,
        "unit": "mcg/mL",
        "system": UCUM,
        "code": "ug/mL",
    }


def test_flex_program_is_active_with_one_instruction_per_step_in_ug_per_hour_and_the_bolus(api, history):
    body = get(api, f"MedicationRequest/{history['flex'].pk}").json()
    MedicationRequest.model_validate(body)
    assert body["status"] == "active"
    # 20 mcg/h × 12.5 h + 15.5 mcg/h × 11.5 h = 428.25 mcg/day
    assert body["note"][1] == {"text": "Basal 428.25 ug/d, 0.428 mL/d"}
    bounds = {"start": "2026-02-20T09:00:00-06:00"}
    first, second, bolus = body["dosageInstruction"]
    assert first["text"] == "20 mcg/h from 07:00 to 19:30 (local time, America/Chicago)"
    assert first["timing"] == {
        "repeat": {
            "boundsPeriod": bounds,
            "duration": 750,
            "durationUnit": "min",
            "frequency": 1,
            "period": 1,
            "periodUnit": "d",
            "timeOfDay": ["07:00:00"],
        }
    }
    assert first["doseAndRate"] == [
        {"type": ORDERED, "rateQuantity": {"value": 20, "unit": "mcg/h", "system": UCUM, "code": "ug/h"}}
    ]
    assert second["text"] == "15.5 mcg/h from 19:30 to 07:00 (local time, America/Chicago)"
    assert second["timing"]["repeat"]["timeOfDay"] == ["19:30:00"]
    assert second["timing"]["repeat"]["duration"] == 690
    assert second["doseAndRate"][0]["rateQuantity"]["value"] == 15.5
    assert bolus == {
        "sequence": 1,
        "text": "On-demand (patient-activated) bolus of 50 mcg, at most 4 per day",
        "timing": {"repeat": {"boundsPeriod": bounds, "frequency": 4, "period": 1, "periodUnit": "d"}},
        "asNeededBoolean": True,
        "route": INTRATHECAL,
        "doseAndRate": [{"type": ORDERED, "doseQuantity": {"value": 50, "unit": "mcg", "system": UCUM, "code": "ug"}}],
        "maxDosePerPeriod": {
            "numerator": {"value": 200, "unit": "mcg", "system": UCUM, "code": "ug"},
            "denominator": {"value": 1, "unit": "day", "system": UCUM, "code": "d"},
        },
    }


def test_voided_program_is_entered_in_error_and_the_previous_one_is_active_again(api, history):
    services.void_record(
        record=history["flex"], reason="entered on the wrong patient", actor=SYSTEM, now=at(2026, 3, 2, 11)
    )
    voided = get(api, f"MedicationRequest/{history['flex'].pk}").json()
    MedicationRequest.model_validate(voided)
    assert voided["status"] == "entered-in-error"
    assert voided["statusReason"] == {"text": "entered on the wrong patient"}
    restored = get(api, f"MedicationRequest/{history['program'].pk}").json()
    assert restored["status"] == "active"
    assert restored["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"] == {
        "start": "2026-02-02T09:00:00-06:00"
    }


def test_verified_program_notes_who_verified(api, history, clinic):
    make_user("dr_two", clinic, "prescriber")  # a second prescriber: dr_pat entered it
    services.verify_program(program=history["flex"], verified_by="dr_two", actor=SYSTEM, now=at(2026, 2, 20, 15))
    body = get(api, f"MedicationRequest/{history['flex'].pk}").json()
    assert body["note"][-1] == {"text": "Verified by dr_two at 2026-02-20T15:00:00-06:00"}


def test_last_program_of_an_explanted_pump_is_stopped(api, history, pump):
    services.explant_pump(pump=pump, explanted_on=date(2026, 3, 3), actor=SYSTEM, now=at(2026, 3, 3, 12),
                          withdrawal_plan="taper_completed")
    assert get(api, f"MedicationRequest/{history['flex'].pk}").json()["status"] == "stopped"


# ------------------------------------------------------- MedicationAdministration


def test_first_fill_is_a_medication_administration_in_ml_with_the_device(api, history, pump):
    refill = history["first"]
    body = get(api, f"MedicationAdministration/{refill.pk}").json()
    MedicationAdministration.model_validate(body)
    assert body["status"] == "completed"
    assert body["medicationCodeableConcept"] == {"coding": [RXNORM_BACLOFEN], "text": "Gablofen 1000 mcg/mL"}
    assert body["effectiveDateTime"] == "2026-02-02T09:00:00-06:00"
    assert body["device"] == [{"reference": f"Device/{pump.pk}", "display": "8637-40 #SN-0001"}]
    assert body["request"] == {"reference": f"MedicationRequest/{history['program'].pk}"}
    assert body["performer"] == [{"actor": {"display": "nina"}}]
    assert body["dosage"] == {
        "text": "36 mL of baclofen 1000 mcg/mL added to the pump reservoir",
        "route": INTRATHECAL,
        "dose": {"value": 36, "unit": "mL", "system": UCUM, "code": "mL"},
    }
    assert body["note"] == [
        {"text": "Concentration 1000 ug/mL"},
        {"text": "First fill after implant: no residual extracted"},
        {"text": "Lot L123, expires 2027-01-31"},
    ]
    urls = [e["url"] for e in body["extension"]]
    assert SD + "extracted-volume" not in urls and SD + "residual-discrepancy" not in urls
    assert ext(body, "residual-discrepancy-flagged")["valueBoolean"] is False


def test_refill_carries_extracted_residual_expected_and_flagged_discrepancy(api, history):
    """36 mL on 2 Feb 09:00 at 0.45 mL/day for 18 days (8.1 mL), then 428.25 mcg/day at
    1000 mcg/mL for 10 days (4.2825 mL): 23.6175 → expected 23.618 mL; 20 extracted →
    -3.618 mL, flagged (> 2 mL for a 40 mL reservoir): less drug than expected."""
    body = get(api, f"MedicationAdministration/{history['second'].pk}").json()
    MedicationAdministration.model_validate(body)
    ml = lambda v: {"value": v, "unit": "mL", "system": UCUM, "code": "mL"}  # noqa: E731
    assert ext(body, "extracted-volume")["valueQuantity"] == ml(20)
    assert ext(body, "expected-residual-volume")["valueQuantity"] == ml(23.618)
    assert ext(body, "residual-discrepancy")["valueQuantity"] == ml(-3.618)
    assert ext(body, "residual-discrepancy-flagged")["valueBoolean"] is True
    assert body["note"] == [
        {"text": "Concentration 1000 ug/mL"},
        {"text": "Extracted residual 20 mL, expected 23.618 mL, discrepancy -3.618 mL (flagged)"},
        {"text": "less drug than expected remained: suggests over-infusion, a leak or an earlier pocket fill"},
    ]
    assert body["performer"] == [{"actor": {"display": "Dr. External 42"}}]
    assert "request" not in body
    assert body["medicationCodeableConcept"]["text"] == "baclofen 1000 mcg/mL"


def test_voided_refill_is_entered_in_error(api, history):
    services.void_record(record=history["second"], reason="duplicate entry", actor=SYSTEM, now=at(2026, 3, 2, 11))
    body = get(api, f"MedicationAdministration/{history['second'].pk}").json()
    MedicationAdministration.model_validate(body)
    assert body["status"] == "entered-in-error"
    assert body["statusReason"] == [{"text": "duplicate entry"}]


# -------------------------------------------------------------------- Appointment


@pytest.mark.parametrize(
    ("status", "fhir_status"),
    [("scheduled", "booked"), ("done", "fulfilled"), ("cancelled", "cancelled"), ("missed", "noshow")],
)
def test_appointment_status_mapping_and_times(api, history, pump, status, fhir_status):
    appointment = history["appointment"]
    services.update_appointment(appointment=appointment, status=status, actor=SYSTEM)
    body = get(api, f"Appointment/{appointment.pk}").json()
    FhirAppointment.model_validate(body)
    assert body["status"] == fhir_status
    assert body["start"] == "2026-03-30T10:00:00-05:00"
    assert body["end"] == "2026-03-30T10:30:00-05:00"
    assert body["minutesDuration"] == 30
    assert body["serviceType"] == [
        {"coding": [{"system": CS + "appointment-kind", "code": "refill", "display": "refill"}], "text": "refill"}
    ]
    assert body["participant"] == [
        {
            "actor": {"reference": f"Patient/{pump.patient_id}", "display": "MRN MRN001"},
            "required": "required",
            "status": "accepted",
        },
        {
            "actor": {"reference": f"Device/{pump.pk}", "display": "8637-40 #SN-0001"},
            "required": "information-only",
            "status": "accepted",
        },
    ]


def test_replacement_surgery_lasts_two_hours_and_a_voided_appointment_is_entered_in_error(api, pump):
    appointment = services.schedule_appointment(
        pump=pump,
        scheduled_for=at(2026, 6, 1, 8),
        kind=Appointment.Kind.REPLACEMENT,
        actor=SYSTEM,
        now=at(2026, 3, 1, 12),
    )
    body = get(api, f"Appointment/{appointment.pk}").json()
    assert (body["start"], body["end"], body["minutesDuration"]) == (
        "2026-06-01T08:00:00-05:00",
        "2026-06-01T10:00:00-05:00",
        120,
    )
    services.void_record(record=appointment, reason="booked twice", actor=SYSTEM, now=at(2026, 3, 1, 13))
    body = get(api, f"Appointment/{appointment.pk}").json()
    FhirAppointment.model_validate(body)
    assert body["status"] == "entered-in-error"
    assert body["comment"] == "Voided: booked twice"


# --------------------------------------------------------------------------- Flag


def test_active_critical_alert_is_a_clinical_flag(api, history, pump):
    alert = history["alert"]
    body = get(api, f"Flag/{alert.pk}").json()
    Flag.model_validate(body)
    assert body["status"] == "active"
    assert body["category"] == [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/flag-category",
                    "code": "clinical",
                    "display": "Clinical",
                }
            ],
            "text": "clinical",
        }
    ]
    assert body["code"] == {
        "coding": [{"system": CS + "alert-kind", "code": "low_reservoir", "display": "low reservoir"}],
        "text": "low reservoir",
    }
    assert body["subject"] == {"reference": f"Patient/{pump.patient_id}", "display": "MRN MRN001"}
    assert body["period"] == {"start": "2026-04-16T13:30:00-05:00"}
    assert ext(body, "http://hl7.org/fhir/StructureDefinition/flag-priority")["valueCodeableConcept"] == {
        "coding": [{"system": "http://hl7.org/fhir/flag-priority-code", "code": "PH", "display": "High priority"}]
    }
    assert ext(body, "pump")["valueReference"]["reference"] == f"Device/{pump.pk}"


def test_flag_search_finds_only_active_critical_alerts(api, history, pump, clinic):
    resolved = Alert.objects.create(
        clinic=clinic,
        pump=pump,
        kind="withdrawal_risk",
        episode="fill:old",
        severity="critical",
        created_at=at(2026, 2, 28, 8),
        resolved_at=at(2026, 3, 2, 9),
        resolution="a new refill was recorded",
    )
    warning = Alert.objects.create(
        clinic=clinic,
        pump=pump,
        kind="refill_overdue",
        episode="fill:w",
        severity="warning",
        created_at=at(2026, 4, 20, 7),
    )
    bundle = get(api, "Flag", patient=pump.patient_id).json()
    Bundle.model_validate(bundle)
    assert [e["resource"]["id"] for e in bundle["entry"]] == [str(history["alert"].pk)]
    assert bundle["total"] == 1
    # a resolved critical alert still reads, as inactive with an end
    body = get(api, f"Flag/{resolved.pk}").json()
    Flag.model_validate(body)
    assert body["status"] == "inactive"
    assert body["period"] == {"start": "2026-02-28T08:00:00-06:00", "end": "2026-03-02T09:00:00-06:00"}
    # a warning is not a Flag
    assert get(api, f"Flag/{warning.pk}").status_code == 404


# --------------------------------------------------------------------- everything


def test_every_search_bundle_and_its_resources_validate_with_the_r4b_models(api, history, pump):
    expected_totals = {"Device": 1, "MedicationRequest": 2, "MedicationAdministration": 2, "Appointment": 1, "Flag": 1}
    for resource_type, total in expected_totals.items():
        bundle = get(api, resource_type, patient=pump.patient_id).json()
        parsed = Bundle.model_validate(bundle)
        assert bundle["total"] == total, resource_type
        assert len(parsed.entry) == total
        for entry, raw in zip(parsed.entry, bundle["entry"], strict=True):
            assert type(entry.resource) is get_fhir_model_class(resource_type)
            assert raw["fullUrl"] == f"{BASE}/{resource_type}/{raw['resource']['id']}"
    bundle = get(api, "Patient", _id=pump.patient_id).json()
    Bundle.model_validate(bundle)
    assert bundle["total"] == 1


def test_every_instant_carries_the_clinics_offset(api, history, pump):
    def instants(value, key=""):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from instants(v, k)
        elif isinstance(value, list):
            for item in value:
                yield from instants(item, key)
        elif isinstance(value, str) and len(value) > 10 and value[4] == "-" and value[10] == "T":
            yield key, value

    seen = 0
    for resource_type in ("Device", "MedicationRequest", "MedicationAdministration", "Appointment", "Flag"):
        for entry in get(api, resource_type, patient=pump.patient_id).json()["entry"]:
            for key, value in instants(entry["resource"]):
                seen += 1
                assert value[-6:] in ("-06:00", "-05:00"), (resource_type, key, value)
    assert seen > 20


def test_search_query_count_does_not_grow_with_entries(api, history, pump):
    get(api, "Device")  # the token's last_used_at is stamped on first use
    for resource_type in ("MedicationRequest", "MedicationAdministration"):
        counts = []
        for count in (1, 2):
            with CaptureQueriesContext(connection) as queries:
                bundle = get(api, resource_type, patient=pump.patient_id, _count=count).json()
            assert len(bundle["entry"]) == count
            counts.append(len(queries.captured_queries))
        # token, count, page, and the access log's one INSERT of the patients shown
        assert counts[0] == counts[1] == 4, resource_type
        assert queries.captured_queries[-1]["sql"].startswith('INSERT INTO "pumps_patientaccess"')
