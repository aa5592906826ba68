"""/api/v1/assessments/ (docs/clinical-rules.md §15): a visit assessment posted alone or
with a refill; the limbs and signs keyed by their codes; the critical alert a sign opens,
in the response; who assessed from the token or the session; Idempotency-Key; filters,
clinic scoping and the access log; void."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pumps.models import Alert, Assessment, PatientAccess
from tests.api_support import (
    AFTER_REFILL,
    API,
    CHICAGO,
    QUERY_CLOCK,
    session_client,
    token_client,
    travel,
    worked_example_refill,
)
from tests.factories import make_patient, make_pump, make_user

NOW = datetime(2026, 2, 2, 10, 0, tzinfo=CHICAGO)
NO_SIGNS_W = {
    "baseline_spasticity": False, "pruritus": False, "hypotension": False, "paresthesias": False,
    "high_fever": False, "altered_mental_status": False, "rebound_spasticity": False, "muscle_rigidity": False,
}
NO_SIGNS_O = {
    "drowsiness": False, "lightheadedness": False, "dizziness": False, "somnolence": False,
    "respiratory_depression": False, "seizures": False, "rostral_hypotonia": False, "loss_of_consciousness": False,
}


@pytest.fixture
def api(clinic):
    return token_client(clinic)[0]


def body(pump_id, **overrides):
    data = {
        "pump": pump_id,
        "assessed_at": "2026-02-02T09:00:00-06:00",
        "ashworth": {"upper_left": "1", "upper_right": "0", "lower_left": "1+", "lower_right": "2"},
        "penn_spasm_frequency": 2,
        "pain_score": 3,
        "goal_note": "Walk to the mailbox with a cane.",
    }
    data.update(overrides)
    return data


def post(api, data, **headers):
    with travel(NOW):
        return api.post(f"{API}/assessments/", data, format="json", **headers)


def test_a_negative_screen_answers_201_with_every_limb_and_sign_and_no_alert(api, pump, nurse):
    response = post(api, body(pump.pk, assessed_by="nina"))
    assert response.status_code == 201, response.json()
    created = response.json()
    assessment = Assessment.objects.get()
    assert response["Location"] == f"http://testserver/api/v1/assessments/{assessment.pk}/"
    assert created == {
        "id": assessment.pk, "pump": pump.pk, "patient": pump.patient_id, "refill": None,
        "assessed_at": "2026-02-02T09:00:00-06:00", "assessed_by": "nina",
        "ashworth": {"upper_left": "1", "upper_right": "0", "lower_left": "1+", "lower_right": "2"},
        "penn_spasm_frequency": 2, "pain_score": 3, "goal_note": "Walk to the mailbox with a cane.",
        "withdrawal_signs": NO_SIGNS_W, "overdose_signs": NO_SIGNS_O, "notes": "", "alerts": [],
        "voided_at": None, "void_reason": "", "created_at": "2026-02-02T10:00:00-06:00",
        "updated_at": "2026-02-02T10:00:00-06:00",
    }
    assert assessment.assessed_by == nurse
    assert api.get(f"{API}/assessments/{assessment.pk}/").json() == created
    assert not Alert.objects.exists()


def test_a_sign_opens_one_critical_alert_per_family_shown_in_the_response(api, pump):
    response = post(api, body(pump.pk, withdrawal_signs={"pruritus": True, "high_fever": True},
                              overdose_signs={"somnolence": True, "drowsiness": False}))
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["withdrawal_signs"] == {**NO_SIGNS_W, "pruritus": True, "high_fever": True}
    assert created["overdose_signs"] == {**NO_SIGNS_O, "somnolence": True}
    withdrawal = Alert.objects.get(kind="withdrawal_symptoms")
    overdose = Alert.objects.get(kind="overdose_symptoms")
    assert created["alerts"] == [
        {"id": overdose.pk, "kind": "overdose_symptoms", "severity": "critical", "state": "open",
         "message": "Overdose signs recorded at 2026-02-02 09:00 CST: somnolence.",
         "raised_at": "2026-02-02T10:00:00-06:00", "acknowledged_at": None, "acknowledged_by": None,
         "resolved_at": None},
        {"id": withdrawal.pk, "kind": "withdrawal_symptoms", "severity": "critical", "state": "open",
         "message": "Withdrawal signs recorded at 2026-02-02 09:00 CST: pruritus (itching), high fever.",
         "raised_at": "2026-02-02T10:00:00-06:00", "acknowledged_at": None, "acknowledged_by": None,
         "resolved_at": None},
    ]
    assert (withdrawal.episode, overdose.episode) == (f"assessment:{created['id']}",) * 2


def test_idempotency_key_replays_the_first_answer_and_opens_no_second_alert(api, pump):
    data = body(pump.pk, withdrawal_signs={"pruritus": True})
    first = post(api, data, HTTP_IDEMPOTENCY_KEY="visit-1")
    again = post(api, data, HTTP_IDEMPOTENCY_KEY="visit-1")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Assessment.objects.count() == 1
    assert Alert.objects.filter(kind="withdrawal_symptoms").count() == 1
    other = post(api, body(pump.pk), HTTP_IDEMPOTENCY_KEY="visit-1")
    assert other.status_code == 422
    assert other.json() == {
        "detail": "This Idempotency-Key was already used with another body: send a new key for a new request.",
        "code": "idempotency_key_reused",
    }


@pytest.mark.parametrize(("overrides", "errors"), [
    ({"ashworth": {"upper_left": "5"}},
     {"ashworth.upper_left": ["Give a Modified Ashworth grade: 0, 1, 1+, 2, 3, 4 (or null: not assessed)."]}),
    ({"ashworth": {"left_arm": "1", "trunk": "2"}},
     {"ashworth": ["Unknown limb 'left_arm', 'trunk': use upper_left, upper_right, lower_left, lower_right."]}),
    ({"ashworth": ["1", "2"]}, {"ashworth": ['Give an object, e.g. {"upper_left": "1+", "lower_right": "2"}.']}),
    ({"withdrawal_signs": {"itching": True}},
     {"withdrawal_signs": ["Unknown withdrawal sign 'itching': use baseline_spasticity, pruritus, hypotension, "
                           "paresthesias, high_fever, altered_mental_status, rebound_spasticity, muscle_rigidity."]}),
    ({"overdose_signs": {"coma": True}},
     {"overdose_signs": ["Unknown overdose sign 'coma': use drowsiness, lightheadedness, dizziness, somnolence, "
                         "respiratory_depression, seizures, rostral_hypotonia, loss_of_consciousness."]}),
    ({"overdose_signs": {"seizures": "often"}}, {"overdose_signs.seizures": ["Must be a valid boolean."]}),
    ({"penn_spasm_frequency": 5},
     {"penn_spasm_frequency": ["Must be a whole number from 0 to 4 (or blank: not assessed)."]}),
    ({"pain_score": 11}, {"pain_score": ["Must be a whole number from 0 to 10 (or blank: not assessed)."]}),
    ({"pain_score": -1}, {"pain_score": ["Ensure this value is greater than or equal to 0."]}),
    ({"goal_note": "g" * 1001}, {"goal_note": ["Ensure this field has no more than 1000 characters."]}),
    ({"assessed_at": "2026-02-02T09:00:00"},
     {"assessed_at": ["Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z)."]}),
    ({"assessed_at": "2026-02-02T11:00:00-06:00"},
     {"assessed_at": ["This time is in the future; record what has happened (at most 5 minutes ahead)."]}),
    ({"assessed_at": "2026-01-14T09:00:00-06:00"},
     {"assessed_at": ["This time is before the pump's implant date (2026-01-15)."]}),
    ({"pump": 999999}, {"pump": ['Invalid pk "999999" - object does not exist.']}),
])
def test_bad_input_is_refused_on_its_field_and_saves_nothing(api, pump, overrides, errors):
    response = post(api, body(pump.pk, **overrides))
    assert response.status_code == 400
    assert response.json() == errors
    assert not Assessment.objects.exists()


def test_a_signed_in_nurse_is_the_assessor_and_may_not_name_another(pump, nurse):
    api = session_client(nurse)
    response = post(api, body(pump.pk))
    assert response.status_code == 201, response.json()
    assert response.json()["assessed_by"] == "nina"
    refused = post(api, body(pump.pk, assessed_by="dr_pat"))
    assert refused.status_code == 400
    assert refused.json() == {"assessed_by": [
        "You are signed in as nina: this is recorded as yours. Leave assessed_by empty (only an integration names "
        "another clinician)."
    ]}


def test_a_token_names_an_external_assessor_or_nobody(api, pump):
    assert post(api, body(pump.pk, assessed_by="Dr. External 42")).json()["assessed_by"] == "Dr. External 42"
    assert post(api, body(pump.pk, assessed_at="2026-02-02T09:30:00-06:00")).json()["assessed_by"] is None


def test_read_only_tokens_viewers_and_other_clinics_may_not_record(pump, clinic, other_clinic):
    read_only, _ = token_client(clinic, write=False, name="Reader")
    assert post(read_only, body(pump.pk)).status_code == 403
    viewer = session_client(make_user("vic", clinic, "viewer"))
    response = post(viewer, body(pump.pk))
    assert response.status_code == 403
    assert response.json() == {"detail": "Your role in this clinic does not allow changes.", "code": "permission_denied"}
    south, _ = token_client(other_clinic, name="South EHR")
    assert post(south, body(pump.pk)).json() == {"pump": [f'Invalid pk "{pump.pk}" - object does not exist.']}
    assert not Assessment.objects.exists()


def test_if_match_with_a_stale_version_is_412(api, pump):
    response = post(api, body(pump.pk), HTTP_IF_MATCH='"99"')
    assert response.status_code == 412
    assert response.json()["code"] == "stale_version"


def test_list_filters_by_pump_patient_and_since_scoped_to_the_clinic(api, pump, clinic, other_clinic):
    other = make_pump(make_patient(clinic, mrn="MRN002"), serial="SN-0002")
    first = post(api, body(pump.pk, assessed_at="2026-02-01T09:00:00-06:00")).json()
    second = post(api, body(pump.pk, withdrawal_signs={"pruritus": True})).json()
    theirs = post(api, body(other.pk)).json()
    make_pump(make_patient(other_clinic, mrn="S1"), serial="S1")

    def ids(**params):
        response = api.get(f"{API}/assessments/", params)
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()["results"]]

    assert ids() == [first["id"], second["id"], theirs["id"]]
    assert ids(pump=pump.pk) == [first["id"], second["id"]]
    assert ids(patient=other.patient_id) == [theirs["id"]]
    assert ids(since="2026-02-02T00:00:00-06:00") == [second["id"], theirs["id"]]
    assert api.get(f"{API}/assessments/", {"since": "2026-02-02"}).json() == {
        "since": ["Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z)."]
    }
    listed = api.get(f"{API}/assessments/", {"pump": pump.pk}).json()
    assert listed["count"] == 2
    assert [a["kind"] for a in listed["results"][1]["alerts"]] == ["withdrawal_symptoms"]
    south, _ = token_client(other_clinic, name="South EHR")
    assert south.get(f"{API}/assessments/").json()["count"] == 0
    assert south.get(f"{API}/assessments/{first['id']}/").status_code == 404


def test_a_list_logs_its_patients_in_one_insert_and_its_queries_do_not_grow(api, pump, clinic):
    for minute in range(2):
        post(api, body(pump.pk, assessed_at=f"2026-02-02T09:0{minute}:00-06:00", overdose_signs={"dizziness": True}))
    with travel(QUERY_CLOCK):
        api.get(f"{API}/assessments/")  # the token's last_used_at is stamped on first use
        PatientAccess.objects.all().delete()
        with CaptureQueriesContext(connection) as few:
            assert api.get(f"{API}/assessments/").json()["count"] == 2
        for n in range(3):
            other = make_pump(make_patient(clinic, mrn=f"M{n}"), serial=f"M{n}")
            Assessment.objects.create(pump=other, assessed_at=NOW)
        with CaptureQueriesContext(connection) as more:
            assert api.get(f"{API}/assessments/").json()["count"] == 5
    assert len(more.captured_queries) == len(few.captured_queries)
    assert more.captured_queries[-1]["sql"].startswith('INSERT INTO "pumps_patientaccess"')
    shown = PatientAccess.objects.filter(path="/api/v1/assessments/").order_by("id")
    assert shown.count() == 1 + 4  # the first list: one patient; the second: four


def test_void_resolves_its_alerts_and_keeps_the_record(api, pump):
    created = post(api, body(pump.pk, overdose_signs={"seizures": True})).json()
    with travel(NOW):
        missing = api.post(f"{API}/assessments/{created['id']}/void/", {}, format="json")
        voided = api.post(f"{API}/assessments/{created['id']}/void/", {"reason": "wrong patient"}, format="json")
        again = api.post(f"{API}/assessments/{created['id']}/void/", {"reason": "twice"}, format="json")
    assert missing.status_code == 400
    assert missing.json() == {"reason": ["Give the reason for voiding this record."]}
    assert voided.status_code == 200, voided.json()
    assert (voided.json()["voided_at"], voided.json()["void_reason"]) == ("2026-02-02T10:00:00-06:00", "wrong patient")
    (alert,) = voided.json()["alerts"]
    assert (alert["kind"], alert["state"], alert["resolved_at"]) == (
        "overdose_symptoms", "resolved", "2026-02-02T10:00:00-06:00"
    )
    assert again.json() == {"non_field_errors": ["This record is already voided."]}
    assert api.get(f"{API}/assessments/").json()["count"] == 0
    assert [a["id"] for a in api.get(f"{API}/assessments/", {"include_voided": "true"}).json()["results"]] == [
        created["id"]
    ]


# ------------------------------------------------------------------ with a refill


def test_a_refill_carries_its_assessment_in_one_transaction(api, pump, nurse):
    data = worked_example_refill(pump.pk, assessment={
        "ashworth": {"lower_left": "3", "lower_right": "3"}, "penn_spasm_frequency": 3,
        "withdrawal_signs": {"rebound_spasticity": True},
    })
    with travel(AFTER_REFILL):
        response = api.post(f"{API}/refills/", data, format="json")
    assert response.status_code == 201, response.json()
    refill = response.json()
    assessment = Assessment.objects.get()
    alert = Alert.objects.get(kind="withdrawal_symptoms")
    assert refill["assessment"] == {
        "id": assessment.pk, "pump": pump.pk, "patient": pump.patient_id, "refill": refill["id"],
        "assessed_at": "2026-02-02T09:00:00-06:00", "assessed_by": "nina",
        "ashworth": {"upper_left": None, "upper_right": None, "lower_left": "3", "lower_right": "3"},
        "penn_spasm_frequency": 3, "pain_score": None, "goal_note": "",
        "withdrawal_signs": {**NO_SIGNS_W, "rebound_spasticity": True}, "overdose_signs": NO_SIGNS_O, "notes": "",
        "alerts": [{"id": alert.pk, "kind": "withdrawal_symptoms", "severity": "critical", "state": "open",
                    "message": "Withdrawal signs recorded at 2026-02-02 09:00 CST: exaggerated rebound spasticity.",
                    "raised_at": "2026-02-02T10:00:00-06:00", "acknowledged_at": None, "acknowledged_by": None,
                    "resolved_at": None}],
        "voided_at": None, "void_reason": "", "created_at": "2026-02-02T10:00:00-06:00",
        "updated_at": "2026-02-02T10:00:00-06:00",
    }
    assert assessment.assessed_by == nurse  # the refill's performer
    assert api.get(f"{API}/refills/{refill['id']}/").json()["assessment"] == refill["assessment"]
    assert api.get(f"{API}/refills/").json()["results"][0]["assessment"] == refill["assessment"]
    assert api.get(f"{API}/assessments/{assessment.pk}/").json()["refill"] == refill["id"]


def test_a_refill_without_an_assessment_shows_null(api, pump):
    with travel(AFTER_REFILL):
        response = api.post(f"{API}/refills/", worked_example_refill(pump.pk), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["assessment"] is None


def test_a_bad_assessment_refuses_the_refill_with_dotted_fields(api, pump):
    data = worked_example_refill(pump.pk, assessment={
        "ashworth": {"upper_left": "x"}, "pain_score": 12, "overdose_signs": {"nausea": True},
    })
    with travel(AFTER_REFILL):
        response = api.post(f"{API}/refills/", data, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "assessment.ashworth.upper_left": [
            "Give a Modified Ashworth grade: 0, 1, 1+, 2, 3, 4 (or null: not assessed)."
        ],
        "assessment.overdose_signs": [
            "Unknown overdose sign 'nausea': use drowsiness, lightheadedness, dizziness, somnolence, "
            "respiratory_depression, seizures, rostral_hypotonia, loss_of_consciousness."
        ],
    }
    data["assessment"] = {"pain_score": 12}
    with travel(AFTER_REFILL):
        response = api.post(f"{API}/refills/", data, format="json")
    assert response.json() == {
        "assessment.pain_score": ["Must be a whole number from 0 to 10 (or blank: not assessed)."]
    }
    assert not Assessment.objects.exists() and not pump.refills.exists()


def test_voiding_the_refill_voids_its_assessment_and_resolves_the_alert(api, pump, prescriber):
    data = worked_example_refill(pump.pk, program=None, assessment={"overdose_signs": {"dizziness": True}})
    with travel(AFTER_REFILL):
        refill = api.post(f"{API}/refills/", data, format="json").json()
        voided = api.post(f"{API}/refills/{refill['id']}/void/", {"reason": "wrong pump"}, format="json")
    assert voided.status_code == 200, voided.json()
    assessment = voided.json()["assessment"]
    assert (assessment["voided_at"], assessment["void_reason"]) == (
        "2026-02-02T10:00:00-06:00", "refill voided: wrong pump"
    )
    assert assessment["alerts"][0]["state"] == "resolved"
