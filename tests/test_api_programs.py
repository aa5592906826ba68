"""/api/v1/programs/: prescribers only, titration limit, flex steps, verification, voids."""

from __future__ import annotations

from datetime import datetime

import pytest

from pumps.models import Program
from tests.api_support import (
    AFTER_REFILL,
    API,
    CHICAGO,
    session_client,
    token_client,
    travel,
    worked_example_refill,
)
from tests.factories import make_user

LATER = datetime(2026, 2, 10, 10, 0, tzinfo=CHICAGO)
FLEX_STEPS = [{"start": "00:00", "dose_mcg_per_hour": "18"}, {"start": "08:00", "dose_mcg_per_hour": 20}]


@pytest.fixture
def filled(clinic, pump):
    """The worked example's refill with its 450 mcg/day program (by an API client)."""
    api, _ = token_client(clinic, name="Pharmacy")
    with travel(AFTER_REFILL):
        assert api.post(f"{API}/refills/", worked_example_refill(pump.pk), format="json").status_code == 201
    return pump


@pytest.fixture
def doctor(prescriber):
    return session_client(prescriber)


def program(pump_id, **overrides):
    body = {
        "pump": pump_id, "effective_at": "2026-02-10T09:00:00-06:00", "concentration_mcg_per_ml": "1000",
        "mode": "continuous", "daily_dose_mcg": "500",
    }
    body.update(overrides)
    return body


def post(api, body, **headers):
    with travel(LATER):
        return api.post(f"{API}/programs/", body, format="json", **headers)


def test_prescriber_records_a_program(doctor, filled):
    response = post(doctor, program(filled.pk, ptm_bolus_mcg=25, ptm_max_per_day=4))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert {k: body[k] for k in (
        "pump", "refill", "effective_at", "concentration_mcg_per_ml", "mode", "daily_dose_mcg", "steps",
        "ptm_bolus_mcg", "ptm_max_per_day", "daily_volume_ml", "worst_case_daily_volume_ml", "entered_by",
        "verified_by", "verified_at",
    )} == {
        "pump": filled.pk, "refill": None, "effective_at": "2026-02-10T09:00:00-06:00",
        "concentration_mcg_per_ml": "1000.000", "mode": "continuous", "daily_dose_mcg": "500.000", "steps": [],
        "ptm_bolus_mcg": "25.000", "ptm_max_per_day": 4, "daily_volume_ml": "0.500",
        "worst_case_daily_volume_ml": "0.600", "entered_by": "dr_pat", "verified_by": None, "verified_at": None,
    }


def test_nurse_may_not_enter_a_program(nurse, filled):
    response = post(session_client(nurse), program(filled.pk))
    assert response.status_code == 403
    assert response.json() == {"detail": "Only a prescriber (physician) enters, verifies or voids a program.",
                               "code": "permission_denied"}
    assert Program.objects.count() == 1


def test_api_client_names_the_external_prescriber(clinic, filled):
    api, _ = token_client(clinic)
    response = post(api, program(filled.pk, entered_by="NPI:1234567890"))
    assert response.status_code == 201
    assert response.json()["entered_by"] == "NPI:1234567890"


def test_titration_limit_needs_an_override_reason(doctor, filled):
    refused = post(doctor, program(filled.pk, daily_dose_mcg=600))
    assert refused.status_code == 400
    assert refused.json() == {
        "override_reason": [
            "the basal daily dose rises from 450 to 600 mcg/day, above the titration limit of +30 % in 24 h "
            "(at most 585 mcg/day); give an override reason to proceed"
        ]
    }
    allowed = post(doctor, program(filled.pk, daily_dose_mcg=600, override_reason="severe spasms, inpatient"))
    assert allowed.status_code == 201
    assert allowed.json()["override_reason"] == "severe spasms, inpatient"


def test_flex_program_total_and_worst_case(doctor, filled):
    response = post(doctor, program(filled.pk, mode="flex", daily_dose_mcg=None, steps=FLEX_STEPS,
                                    ptm_bolus_mcg=50, ptm_max_per_day=4))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["daily_dose_mcg"] == "464.000"  # 8 h x 18 + 16 h x 20
    assert body["daily_volume_ml"] == "0.464"
    assert body["worst_case_daily_volume_ml"] == "0.664"
    assert body["steps"] == [
        {"start": "00:00", "dose_mcg_per_hour": "18.000"}, {"start": "08:00", "dose_mcg_per_hour": "20.000"}
    ]


@pytest.mark.parametrize(
    ("overrides", "errors"),
    [
        ({"mode": "flex", "steps": list(reversed(FLEX_STEPS))}, {"steps": ["steps must be sorted by start time"]}),
        ({"mode": "flex", "steps": [{"start": "8:00", "dose_mcg_per_hour": 1}]},
         {"steps": ["step 1: start must be a time as HH:MM (00:00 to 23:59)"]}),
        ({"mode": "flex", "steps": [{"start": "08:00"}]}, {"steps[0].dose_mcg_per_hour": ["This field is required."]}),
        ({"mode": "flex", "steps": FLEX_STEPS, "daily_dose_mcg": 460},
         {"daily_dose_mcg": ["daily_dose_mcg 460 disagrees with the steps, which deliver 464 mcg/day"]}),
        ({"daily_dose_mcg": None}, {"daily_dose_mcg": ["This field is required for a continuous program."]}),
        ({"concentration_mcg_per_ml": 2000}, {"concentration_mcg_per_ml": [
            "The reservoir holds 1000 mcg/mL: a program must use the concentration of the drug in the pump "
            "(a concentration change needs a refill with a new program)."]}),
        ({"ptm_bolus_mcg": 50}, {"ptm_max_per_day": [
            "An on-demand bolus needs both a dose (ptm_bolus_mcg) and a maximum per day (ptm_max_per_day)."]}),
        ({"effective_at": "2026-02-10T09:00:00"}, {"effective_at": [
            "Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z)."]}),
        ({"effective_at": "2026-02-11T09:00:00-06:00"}, {"effective_at": [
            "This time is in the future; record what has happened (at most 5 minutes ahead)."]}),
    ],
)
def test_invalid_programs_are_400_with_field_messages(doctor, filled, overrides, errors):
    response = post(doctor, program(filled.pk, **overrides))
    assert response.status_code == 400
    assert response.json() == errors
    assert Program.objects.count() == 1


def test_verification_by_a_second_clinician(clinic, doctor, filled, prescriber):
    created = post(doctor, program(filled.pk)).json()
    with travel(LATER):
        same = doctor.post(f"{API}/programs/{created['id']}/verify/", {}, format="json")
        nurse = session_client(make_user("nora", clinic, "nurse")).post(
            f"{API}/programs/{created['id']}/verify/", {}, format="json"
        )
        second = session_client(make_user("dr_two", clinic, "prescriber")).post(
            f"{API}/programs/{created['id']}/verify/", {}, format="json"
        )
        named_other = doctor.post(f"{API}/programs/{created['id']}/verify/", {"verified_by": "dr_two"}, format="json")
        twice = token_client(clinic)[0].post(
            f"{API}/programs/{created['id']}/verify/", {"verified_by": "NPI:3"}, format="json"
        )
    assert same.status_code == 400
    assert same.json() == {"verified_by": ["A second clinician must verify: not the one who entered the program."]}
    assert (nurse.status_code, nurse.json()) == (
        403, {"detail": "Only a prescriber (physician) enters, verifies or voids a program.", "code": "permission_denied"}
    )
    assert named_other.status_code == 400
    assert named_other.json() == {"verified_by": [
        "You are signed in as dr_pat: this is recorded as yours. Leave verified_by empty (only an integration "
        "names another clinician)."
    ]}
    assert second.status_code == 200
    assert second.json()["verified_by"] == "dr_two"
    assert second.json()["verified_at"] == "2026-02-10T10:00:00-06:00"
    assert twice.json() == {"non_field_errors": ["This program was already verified."]}


def test_api_client_verifies_naming_the_clinician(clinic, doctor, filled):
    created = post(doctor, program(filled.pk)).json()
    api, _ = token_client(clinic)
    with travel(LATER):
        unnamed = api.post(f"{API}/programs/{created['id']}/verify/", {}, format="json")
        named = api.post(f"{API}/programs/{created['id']}/verify/", {"verified_by": "NPI:99"}, format="json")
    assert unnamed.status_code == 400
    assert unnamed.json() == {"verified_by": ["Name the clinician who verified the program."]}
    assert named.json()["verified_by"] == "NPI:99"


def test_void_restores_the_previous_program_in_the_projection(doctor, filled, nurse):
    created = post(doctor, program(filled.pk)).json()
    at = {"at": "2026-02-12T09:00:00-06:00"}
    with travel(LATER):  # the session stays within its idle time
        assert doctor.get(f"{API}/pumps/{filled.pk}/projection/", at).json()["daily_volume_ml"] == "0.500"
        by_nurse = session_client(nurse).post(f"{API}/programs/{created['id']}/void/", {"reason": "x"}, format="json")
        voided = doctor.post(f"{API}/programs/{created['id']}/void/", {"reason": "wrong patient"}, format="json")
        after = doctor.get(f"{API}/pumps/{filled.pk}/projection/", at).json()
    assert by_nurse.status_code == 403
    assert voided.status_code == 200
    assert voided.json()["void_reason"] == "wrong patient"
    assert after["daily_volume_ml"] == "0.450"


def test_list_filters(doctor, filled):
    created = post(doctor, program(filled.pk)).json()
    with travel(LATER):  # the session stays within its idle time
        all_programs = doctor.get(f"{API}/programs/", {"pump": filled.pk}).json()
        assert [p["daily_dose_mcg"] for p in all_programs["results"]] == ["450.000", "500.000"]
        unverified = doctor.get(f"{API}/programs/", {"verified": "false", "mode": "continuous"}).json()
        assert unverified["count"] == 2
        assert doctor.get(f"{API}/programs/", {"verified": "true"}).json()["count"] == 0
        assert doctor.get(f"{API}/programs/", {"patient": filled.patient_id}).json()["count"] == 2
        detail = doctor.get(f"{API}/programs/{created['id']}/").json()
        assert detail["id"] == created["id"] and detail["effective_at"] == "2026-02-10T09:00:00-06:00"
