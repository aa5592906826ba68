"""FHIR Observation of a visit assessment (docs/fhir.md, docs/clinical-rules.md §15): the
resource validates with the R4B models of ``fhir.resources``; every limb, Penn, pain and
sign is a component with the codes of the local code systems; search by patient and date;
clinic scoping and the access log as for the other resources."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from django.conf import settings
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome

from pumps import services, symptoms
from pumps.fhir import mapping
from pumps.models import Assessment, PatientAccess
from tests.api_support import CHICAGO, token_client, travel
from tests.factories import make_patient, make_pump

FHIR = "/fhir/r4"
BASE = "https://pumps.example.org/fhir/r4"  # SITE_URL of the tests (conftest)
CS = "https://pumps.example.org/fhir/CodeSystem/"
SD = "https://pumps.example.org/fhir/StructureDefinition/"
CONTENT_TYPE = "application/fhir+json; charset=utf-8"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
NOT_PERFORMED = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-performed",
         "display": "Not Performed"}
    ],
    "text": "not assessed",
}


def at(*args) -> datetime:
    return datetime(*args, tzinfo=CHICAGO)


def get(api, path, **params):
    response = api.get(f"{FHIR}/{path}", params)
    assert response["Content-Type"] == CONTENT_TYPE, response.content
    return response


def code(name: str, display: str) -> dict:
    return {"coding": [{"system": CS + "assessment", "code": name, "display": display}], "text": display}


def assess(pump, moment: datetime, **fields) -> Assessment:
    with travel(moment):
        return Assessment.objects.create(pump=pump, assessed_at=moment, **fields)


@pytest.fixture
def api(clinic):
    return token_client(clinic, write=False)[0]


@pytest.fixture
def visit(pump, nurse):
    """A visit assessment with every score, one withdrawal and one overdose sign present."""
    return assess(
        pump, at(2026, 2, 2, 9, 30), assessed_by=nurse, ashworth_upper_left="1", ashworth_upper_right="0",
        ashworth_lower_left="1+", ashworth_lower_right="3", penn_spasm_frequency=2, pain_score=4,
        goal_note="Walk to the mailbox with a cane.", withdrawal_pruritus=True, overdose_drowsiness=True,
    )


def test_assessment_is_an_observation_with_a_component_per_limb_score_and_sign(api, visit, pump):
    response = get(api, f"Observation/{visit.pk}")
    assert response.status_code == 200
    body = response.json()
    Observation.model_validate(body)
    components = body.pop("component")
    assert body == {
        "resourceType": "Observation",
        "id": str(visit.pk),
        "meta": {"lastUpdated": "2026-02-02T09:30:00-06:00"},
        "extension": [
            {"url": SD + "pump", "valueReference": {"reference": f"Device/{pump.pk}", "display": "8637-40 #SN-0001"}}
        ],
        "status": "final",
        "category": [
            {"coding": [{"system": CATEGORY, "code": "exam", "display": "Exam"}]},
            {"coding": [{"system": CATEGORY, "code": "survey", "display": "Survey"}]},
        ],
        "code": code("itb_visit_assessment", "Intrathecal baclofen visit assessment"),
        "subject": {"reference": f"Patient/{pump.patient_id}", "display": "MRN MRN001"},
        "effectiveDateTime": "2026-02-02T09:30:00-06:00",
        "issued": "2026-02-02T09:30:00-06:00",
        "performer": [{"display": "nina"}],
        "note": [{"text": "Goal: Walk to the mailbox with a cane."}],
    }
    ashworth = CS + "modified-ashworth-grade"
    assert components[:6] == [
        {"code": code("ashworth_upper_left", "Modified Ashworth Scale, left arm"),
         "valueCodeableConcept": {"coding": [{"system": ashworth, "code": "1",
                                              "display": "1: slight increase, a catch and release at the end of the "
                                              "range"}], "text": "1"}},
        {"code": code("ashworth_upper_right", "Modified Ashworth Scale, right arm"),
         "valueCodeableConcept": {"coding": [{"system": ashworth, "code": "0",
                                              "display": "0: no increase in muscle tone"}], "text": "0"}},
        {"code": code("ashworth_lower_left", "Modified Ashworth Scale, left leg"),
         "valueCodeableConcept": {"coding": [{"system": ashworth, "code": "1+",
                                              "display": "1+: slight increase, a catch then minimal resistance "
                                              "through less than half the range"}], "text": "1+"}},
        {"code": code("ashworth_lower_right", "Modified Ashworth Scale, right leg"),
         "valueCodeableConcept": {"coding": [{"system": ashworth, "code": "3",
                                              "display": "3: considerable increase, passive movement difficult"}],
                                  "text": "3"}},
        {"code": code("penn_spasm_frequency", "Penn Spasm Frequency Scale"), "valueInteger": 2},
        {"code": code("pain_score", "Pain score (0-10)"), "valueInteger": 4},
    ]
    signs = components[6:]
    assert len(signs) == 16
    assert signs[0] == {
        "code": code("withdrawal_baseline_spasticity", "Withdrawal sign: return of baseline spasticity"),
        "valueBoolean": False,
    }
    assert signs[1] == {"code": code("withdrawal_pruritus", "Withdrawal sign: pruritus (itching)"), "valueBoolean": True}
    assert signs[8] == {"code": code("overdose_drowsiness", "Overdose sign: drowsiness"), "valueBoolean": True}
    assert signs[15] == {
        "code": code("overdose_loss_of_consciousness", "Overdose sign: loss of consciousness"), "valueBoolean": False,
    }
    assert [s["code"]["coding"][0]["code"] for s in signs] == [
        *symptoms.withdrawal_fields(), *symptoms.overdose_fields()
    ]
    assert [s["code"]["coding"][0]["code"] for s in signs if s["valueBoolean"]] == [
        "withdrawal_pruritus", "overdose_drowsiness",
    ]


def test_scores_not_assessed_have_a_data_absent_reason_and_no_performer_when_nobody_is_named(api, pump):
    bare = assess(pump, at(2026, 2, 3, 8), ashworth_lower_left="2")
    body = get(api, f"Observation/{bare.pk}").json()
    Observation.model_validate(body)
    assert "performer" not in body and "note" not in body and "partOf" not in body
    by_code = {c["code"]["coding"][0]["code"]: c for c in body["component"]}
    for name in ("ashworth_upper_left", "ashworth_upper_right", "ashworth_lower_right", "penn_spasm_frequency",
                 "pain_score"):
        assert by_code[name]["dataAbsentReason"] == NOT_PERFORMED, name
        assert set(by_code[name]) == {"code", "dataAbsentReason"}
    assert by_code["ashworth_lower_left"]["valueCodeableConcept"]["text"] == "2"
    assert all(by_code[f]["valueBoolean"] is False for f in symptoms.withdrawal_fields() + symptoms.overdose_fields())


def test_an_external_assessor_is_the_performer_and_a_refill_is_part_of(api, pump):
    refill = services.record_refill(
        pump=pump, performed_at=at(2026, 2, 2, 9), added_volume_ml=Decimal("36"),
        concentration_mcg_per_ml=Decimal("1000"), actor=services.Actor.system("test"), now=at(2026, 2, 2, 10),
    )
    linked = assess(pump, at(2026, 2, 2, 9), refill=refill, assessed_by_external="Dr. External 42", notes="Calm.")
    body = get(api, f"Observation/{linked.pk}").json()
    Observation.model_validate(body)
    assert body["partOf"] == [{"reference": f"MedicationAdministration/{refill.pk}"}]
    assert body["performer"] == [{"display": "Dr. External 42"}]
    assert body["note"] == [{"text": "Calm."}]


def test_voided_assessment_is_entered_in_error_with_the_reason(api, visit):
    Assessment.objects.filter(pk=visit.pk).update(voided_at=at(2026, 2, 3, 9), void_reason="wrong patient")
    body = get(api, f"Observation/{visit.pk}").json()
    Observation.model_validate(body)
    assert body["status"] == "entered-in-error"
    assert body["note"][0] == {"text": "Voided: wrong patient"}


def test_search_by_patient_is_a_valid_bundle_in_assessment_order(api, visit, pump, clinic):
    later = assess(pump, at(2026, 3, 2, 9), penn_spasm_frequency=1)
    other = make_patient(clinic, mrn="MRN002")
    assess(make_pump(other, serial="SN-0002"), at(2026, 2, 5, 9), pain_score=1)
    for value in (str(pump.patient_id), f"Patient/{pump.patient_id}"):
        bundle = get(api, "Observation", patient=value).json()
        parsed = Bundle.model_validate(bundle)
        assert bundle["total"] == 2
        assert [e["resource"]["id"] for e in bundle["entry"]] == [str(visit.pk), str(later.pk)]
        assert [e["fullUrl"] for e in bundle["entry"]] == [f"{BASE}/Observation/{visit.pk}",
                                                          f"{BASE}/Observation/{later.pk}"]
        assert all(isinstance(e.resource, Observation) for e in parsed.entry)
    assert get(api, "Observation").json()["total"] == 3
    shown = PatientAccess.objects.filter(path="/fhir/r4/Observation", list_read=True)
    assert sorted(shown.values_list("patient_id", flat=True)) == sorted(
        [pump.patient_id, pump.patient_id, pump.patient_id, other.pk]
    )


def test_search_by_date_compares_days_in_the_clinics_zone_and_instants(api, pump):
    # 2026-02-02 23:30 in Chicago is 2026-02-03 05:30 UTC: a day is the clinic's day
    late = assess(pump, at(2026, 2, 2, 23, 30), pain_score=1)
    next_day = assess(pump, at(2026, 2, 3, 8), pain_score=2)
    march = assess(pump, at(2026, 3, 1, 8), pain_score=3)

    def found(*dates):
        response = api.get(f"{FHIR}/Observation", [("patient", pump.patient_id), *(("date", d) for d in dates)])
        assert response.status_code == 200, response.json()
        Bundle.model_validate(response.json())
        return [e["resource"]["id"] for e in response.json().get("entry", [])]

    assert found("2026-02-02") == [str(late.pk)]
    assert found("eq2026-02-03") == [str(next_day.pk)]
    assert found("ge2026-02-03") == [str(next_day.pk), str(march.pk)]
    assert found("gt2026-02-02", "lt2026-03-01") == [str(next_day.pk)]
    assert found("le2026-02-03") == [str(late.pk), str(next_day.pk)]
    assert found("ge2026-02-03T08:00:00-06:00") == [str(next_day.pk), str(march.pk)]
    assert found("gt2026-02-03T08:00:00-06:00") == [str(march.pk)]
    assert found("2026-02-03T14:00:00Z") == [str(next_day.pk)]
    bundle = api.get(f"{FHIR}/Observation", {"patient": pump.patient_id, "date": "ge2026-02-03"}).json()
    assert bundle["link"][0] == {
        "relation": "self", "url": f"{BASE}/Observation?patient={pump.patient_id}&date=ge2026-02-03&_count=100",
    }


@pytest.mark.parametrize("value", ["yesterday", "ge2026-13-01", "ne2026-02-01", "2026-02-02T09:00:00",
                                   "2026-02-02T09:00:00+18:00"])
def test_a_malformed_date_is_400_operation_outcome(api, value):
    response = get(api, "Observation", date=value)
    assert response.status_code == 400
    body = response.json()
    OperationOutcome.model_validate(body)
    assert body["issue"] == [{
        "severity": "error", "code": "invalid",
        "diagnostics": f"date={value}: give a date or an instant with an offset, optionally prefixed with eq, ge, "
        "gt, le or lt, e.g. date=ge2026-02-01 or date=lt2026-02-02T09:00:00-06:00.",
    }]


def test_another_clinics_assessment_answers_404_and_is_never_found(visit, pump, other_clinic):
    south, _ = token_client(other_clinic, name="South EHR")
    response = get(south, f"Observation/{visit.pk}")
    assert response.status_code == 404
    assert response.json()["issue"] == [
        {"severity": "error", "code": "not-found", "diagnostics": f"Observation/{visit.pk} was not found."}
    ]
    assert get(south, "Observation", patient=pump.patient_id).json()["total"] == 0
    assert get(south, "Observation", date="2026-02-02").json()["total"] == 0


def test_capability_statement_lists_observation_with_its_date_search(api):
    body = get(api, "metadata").json()
    CapabilityStatement.model_validate(body)
    (observation,) = [r for r in body["rest"][0]["resource"] if r["type"] == "Observation"]
    assert [(p["name"], p["type"]) for p in observation["searchParam"]] == [
        ("_id", "token"), ("patient", "reference"), ("date", "date"),
    ]
    assert observation["documentation"].startswith("A visit assessment: Modified Ashworth grade per limb")


def _doc_table(heading: str) -> list[tuple[str, str]]:
    """(code, display) rows of the table under ``heading`` in docs/fhir.md."""
    text = (settings.BASE_DIR / "docs" / "fhir.md").read_text()
    section = text.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    return [(code.strip().strip("`"), display.strip()) for code, display in rows]


def test_docs_list_every_code_of_the_assessment_code_systems():
    assert _doc_table("`{SITE_URL}/fhir/CodeSystem/assessment`") == mapping.assessment_codes()
    assert _doc_table("`{SITE_URL}/fhir/CodeSystem/modified-ashworth-grade`") == list(symptoms.ASHWORTH_GRADES)


def test_medication_requests_note_a_confirmed_increase_and_the_plan_of_a_stop(api, pump, prescriber):
    system = services.Actor.system("test")
    services.record_refill(
        pump=pump, performed_at=at(2026, 2, 2, 9), added_volume_ml=Decimal("36"),
        concentration_mcg_per_ml=Decimal("1000"), actor=system, now=at(2026, 2, 2, 10),
        program=services.ProgramInput(concentration_mcg_per_ml=Decimal("1000"), daily_dose_mcg=Decimal("450"),
                                      entered_by="dr_pat"),
    )
    services.record_comedication(patient=pump.patient, name="oxycodone 10 mg twice a day", category="opioid",
                                 started_on=at(2026, 1, 20).date(), actor=system, now=at(2026, 2, 2, 10))
    raised = services.record_program(
        pump=pump, effective_at=at(2026, 2, 10, 9), actor=system, now=at(2026, 2, 10, 10),
        data=services.ProgramInput(concentration_mcg_per_ml=Decimal("1000"), daily_dose_mcg=Decimal("495"),
                                   entered_by="dr_pat", comedication_confirmed=True),
    )
    stopped = services.record_program(
        pump=pump, effective_at=at(2026, 2, 20, 9), actor=system, now=at(2026, 2, 20, 10),
        data=services.ProgramInput(concentration_mcg_per_ml=Decimal("1000"), daily_dose_mcg=Decimal("0"),
                                   entered_by="dr_pat", override_reason="pump to be explanted",
                                   withdrawal_plan="oral_bridge", oral_bridge_dose="10 mg four times a day"),
    )
    notes = {}
    for program in (raised, stopped):
        body = get(api, f"MedicationRequest/{program.pk}").json()
        MedicationRequest.model_validate(body)
        notes[program.pk] = [n["text"] for n in body["note"]]
    assert "Dose increase confirmed with CNS-depressant co-medication: oxycodone 10 mg twice a day (opioid)" in (
        notes[raised.pk]
    )
    assert "Delivery stops: withdrawal plan oral baclofen bridge (10 mg four times a day)" in notes[stopped.pk]
    assert not [n for n in notes[raised.pk] if n.startswith("Delivery stops")]
    assert not [n for n in notes[stopped.pk] if n.startswith("Dose increase")]
    bundle = get(api, "MedicationRequest", patient=pump.patient_id).json()
    Bundle.model_validate(bundle)
    assert bundle["total"] == 3
