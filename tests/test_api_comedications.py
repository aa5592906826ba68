"""/api/v1/comedications/ (a patient's CNS depressants: list, create, stop, void) and
what they change in /api/v1/programs/: a dose increase while one is active needs
``comedication_confirmed`` (docs/clinical-rules.md §15); a program that stops delivery
needs its withdrawal plan, also inside a refill."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pumps.models import Alert, CoMedication, PatientAccess, Program
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
from tests.factories import make_patient, make_user

NOW = datetime(2026, 2, 10, 10, 0, tzinfo=CHICAGO)
OXYCODONE = "oxycodone 10 mg twice a day"
INTERACTION = (
    "The daily dose rises from 450 to 495 mcg/day while the patient takes oxycodone 10 mg twice a day (opioid); "
    "diazepam 5 mg at night (benzodiazepine): CNS depressants add to baclofen's sedation and respiratory "
    "depression. Confirm the increase with comedication_confirmed."
)


@pytest.fixture
def api(clinic):
    return token_client(clinic)[0]


def comedication(patient_id, **overrides):
    body = {"patient": patient_id, "name": OXYCODONE, "category": "opioid", "started_on": "2026-01-20"}
    body.update(overrides)
    return body


def post(api, path, body, **headers):
    with travel(NOW):
        return api.post(f"{API}/{path}", body, format="json", **headers)


# ------------------------------------------------------------------ co-medication


def test_record_a_comedication_answers_201_active_today(api, patient):
    response = post(api, "comedications/", comedication(patient.pk, notes="for back pain"))
    assert response.status_code == 201, response.json()
    row = CoMedication.objects.get()
    assert response["Location"] == f"http://testserver/api/v1/comedications/{row.pk}/"
    assert response.json() == {
        "id": row.pk, "patient": patient.pk, "name": OXYCODONE, "category": "opioid", "started_on": "2026-01-20",
        "stopped_on": None, "active": True, "notes": "for back pain", "recorded_by": "api client EHR",
        "voided_at": None, "void_reason": "", "created_at": "2026-02-10T10:00:00-06:00",
        "updated_at": "2026-02-10T10:00:00-06:00",
    }


def test_a_signed_in_nurse_records_it_as_hers(patient, nurse):
    response = post(session_client(nurse), "comedications/", comedication(patient.pk))
    assert response.status_code == 201, response.json()
    assert response.json()["recorded_by"] == "nina"


@pytest.mark.parametrize(("overrides", "errors"), [
    ({"category": "opiate"}, {"category": ['"opiate" is not a valid choice.']}),
    ({"name": ""}, {"name": ["This field may not be blank."]}),
    ({"name": "oxy\ncodone"}, {"name": ["Remove line breaks, tabs and other control characters from this field."]}),
    ({"name": "x" * 201}, {"name": ["Ensure this field has no more than 200 characters."]}),
    ({"started_on": "2026-02-11"},
     {"started_on": ["This date is in the future: record a co-medication from the day it starts."]}),
    ({"stopped_on": "2026-01-19"}, {"stopped_on": ["The stop date is before the start date (2026-01-20)."]}),
    ({"started_on": "0999-01-01"}, {"started_on": ["Enter a date between the years 1900 and 2999."]}),
    ({"patient": 999999}, {"patient": ['Invalid pk "999999" - object does not exist.']}),
])
def test_bad_input_is_refused_on_its_field(api, patient, overrides, errors):
    response = post(api, "comedications/", comedication(patient.pk, **overrides))
    assert response.status_code == 400
    assert response.json() == errors
    assert not CoMedication.objects.exists()


def test_stop_with_patch_and_its_refusals(api, patient):
    created = post(api, "comedications/", comedication(patient.pk)).json()
    path = f"{API}/comedications/{created['id']}/"
    with travel(NOW):
        early = api.patch(path, {"stopped_on": "2026-01-01"}, format="json")
        missing = api.patch(path, {}, format="json")
        stopped = api.patch(path, {"stopped_on": "2026-02-09"}, format="json")
        again = api.patch(path, {"stopped_on": "2026-02-10"}, format="json")
    assert early.json() == {"stopped_on": ["The stop date is before the start date (2026-01-20)."]}
    assert missing.json() == {"stopped_on": ["This field is required."]}
    assert stopped.status_code == 200, stopped.json()
    assert (stopped.json()["stopped_on"], stopped.json()["active"]) == ("2026-02-09", False)
    assert again.status_code == 400
    assert again.json() == {"non_field_errors": ["This co-medication was already stopped on 2026-02-09."]}


def test_void_keeps_the_record_out_of_the_list(api, patient):
    created = post(api, "comedications/", comedication(patient.pk)).json()
    missing = post(api, f"comedications/{created['id']}/void/", {})
    voided = post(api, f"comedications/{created['id']}/void/", {"reason": "entered twice"})
    again = post(api, f"comedications/{created['id']}/void/", {"reason": "again"})
    assert missing.json() == {"reason": ["Give the reason for voiding this record."]}
    assert voided.status_code == 200, voided.json()
    assert (voided.json()["voided_at"], voided.json()["void_reason"], voided.json()["active"]) == (
        "2026-02-10T10:00:00-06:00", "entered twice", False,
    )
    assert again.json() == {"non_field_errors": ["This record is already voided."]}
    with travel(NOW):
        stop = api.patch(f"{API}/comedications/{created['id']}/", {"stopped_on": "2026-02-09"}, format="json")
        assert stop.json() == {"non_field_errors": ["This co-medication was voided."]}
        assert api.get(f"{API}/comedications/").json()["count"] == 0
        assert api.get(f"{API}/comedications/", {"include_voided": "true"}).json()["count"] == 1


def test_list_by_patient_scoped_to_the_clinic_logged_in_one_insert(api, patient, clinic, other_clinic):
    other = make_patient(clinic, mrn="MRN002")
    mine = post(api, "comedications/", comedication(patient.pk)).json()
    post(api, "comedications/", comedication(other.pk, name="diazepam 5 mg", category="benzodiazepine"))
    south_patient = make_patient(other_clinic, mrn="S1")
    south, _ = token_client(other_clinic, name="South EHR")
    refused = post(south, "comedications/", comedication(patient.pk))
    assert refused.json() == {"patient": [f'Invalid pk "{patient.pk}" - object does not exist.']}
    post(south, "comedications/", comedication(south_patient.pk, started_on="2026-01-21"))
    with travel(QUERY_CLOCK):
        api.get(f"{API}/comedications/")
        PatientAccess.objects.all().delete()
        with CaptureQueriesContext(connection) as queries:
            listed = api.get(f"{API}/comedications/", {"patient": patient.pk}).json()
    assert [row["id"] for row in listed["results"]] == [mine["id"]]
    assert queries.captured_queries[-1]["sql"].startswith('INSERT INTO "pumps_patientaccess"')
    assert list(PatientAccess.objects.values_list("patient_id", "path", "list_read")) == [
        (patient.pk, "/api/v1/comedications/", True)
    ]
    assert api.get(f"{API}/comedications/").json()["count"] == 2
    assert api.get(f"{API}/comedications/", {"category": "benzodiazepine"}).json()["count"] == 1
    assert south.get(f"{API}/comedications/").json()["count"] == 1
    assert south.get(f"{API}/comedications/{mine['id']}/").status_code == 404


def test_read_only_tokens_and_viewers_may_not_record(patient, clinic):
    reader, _ = token_client(clinic, write=False, name="Reader")
    assert post(reader, "comedications/", comedication(patient.pk)).status_code == 403
    viewer = session_client(make_user("vic", clinic, "viewer"))
    assert post(viewer, "comedications/", comedication(patient.pk)).status_code == 403
    assert not CoMedication.objects.exists()


# ------------------------------------------------------------ programs: confirmation


@pytest.fixture
def filled(clinic, pump):
    """The worked example's refill with its 450 mcg/day program."""
    api, _ = token_client(clinic, name="Pharmacy")
    with travel(AFTER_REFILL):
        assert api.post(f"{API}/refills/", worked_example_refill(pump.pk), format="json").status_code == 201
    return pump


@pytest.fixture
def sedated(api, filled):
    """Two CNS depressants active from January."""
    post(api, "comedications/", comedication(filled.patient_id))
    post(api, "comedications/", comedication(filled.patient_id, name="diazepam 5 mg at night",
                                             category="benzodiazepine", started_on="2026-01-25"))
    return filled


def program(pump_id, **overrides):
    body = {
        "pump": pump_id, "effective_at": "2026-02-10T09:00:00-06:00", "concentration_mcg_per_ml": "1000",
        "mode": "continuous", "daily_dose_mcg": "495", "entered_by": "dr_pat",
    }
    body.update(overrides)
    return body


def test_an_increase_while_a_depressant_is_active_needs_the_confirmation(api, sedated, prescriber):
    refused = post(api, "programs/", program(sedated.pk))
    assert refused.status_code == 400
    assert refused.json() == {"comedication_confirmed": [INTERACTION]}
    assert post(api, "programs/", program(sedated.pk, comedication_confirmed=False)).json() == {
        "comedication_confirmed": [INTERACTION]
    }
    assert Program.objects.count() == 1
    confirmed = post(api, "programs/", program(sedated.pk, comedication_confirmed=True))
    assert confirmed.status_code == 201, confirmed.json()
    assert (confirmed.json()["comedication_confirmed"], confirmed.json()["comedication_summary"]) == (
        True, "oxycodone 10 mg twice a day (opioid); diazepam 5 mg at night (benzodiazepine)",
    )
    assert api.get(f"{API}/programs/{confirmed.json()['id']}/").json()["comedication_confirmed"] is True


def test_no_interaction_without_an_increase_or_an_active_depressant(api, sedated, prescriber):
    same = post(api, "programs/", program(sedated.pk, daily_dose_mcg="450", comedication_confirmed=True))
    assert same.status_code == 201, same.json()
    assert (same.json()["comedication_confirmed"], same.json()["comedication_summary"]) == (False, "")
    for row in CoMedication.objects.all():
        with travel(NOW):
            api.patch(f"{API}/comedications/{row.pk}/", {"stopped_on": "2026-02-09"}, format="json")
    later = post(api, "programs/", program(sedated.pk, effective_at="2026-02-10T09:30:00-06:00"))
    assert later.status_code == 201, later.json()
    assert later.json()["comedication_summary"] == ""


def test_a_refill_carrying_an_increase_needs_the_confirmation_too(api, sedated, prescriber):
    body = worked_example_refill(
        sedated.pk, performed_at="2026-02-10T09:00:00-06:00", extracted_volume_ml="32.4", added_volume_ml="36",
        program={"concentration_mcg_per_ml": 1000, "mode": "continuous", "daily_dose_mcg": "495",
                 "entered_by": "dr_pat"},
    )
    refused = post(api, "refills/", body)
    assert refused.status_code == 400
    assert refused.json() == {"program.comedication_confirmed": [INTERACTION]}
    body["program"]["comedication_confirmed"] = True
    accepted = post(api, "refills/", body)
    assert accepted.status_code == 201, accepted.json()
    assert accepted.json()["program"]["comedication_confirmed"] is True


# --------------------------------------------------------- programs: stop of delivery


PLAN_MISSING = (
    "This program stops delivery (0 mcg/day and no on-demand bolus): give the withdrawal plan (taper_completed, "
    "oral_bridge with its dose, or none with a reason)."
)


def test_a_program_that_stops_delivery_needs_a_withdrawal_plan(api, filled, prescriber):
    stop = program(filled.pk, daily_dose_mcg="0", override_reason="pump to be explanted")
    refused = post(api, "programs/", stop)
    assert refused.status_code == 400
    assert refused.json() == {"withdrawal_plan": [PLAN_MISSING]}
    bridge = post(api, "programs/", {**stop, "withdrawal_plan": {"plan": "oral_bridge"}})
    assert bridge.json() == {
        "withdrawal_plan.oral_bridge_dose": ["Give the oral baclofen bridge dose (for example 10 mg four times a day)."]
    }
    assert Program.objects.count() == 1
    saved = post(api, "programs/", {**stop, "withdrawal_plan": {"plan": "none", "reason": "family declined"}})
    assert saved.status_code == 201, saved.json()
    plan = saved.json()["withdrawal_plan"]
    assert {k: plan[k] for k in ("stop", "stopped_at", "plan", "oral_bridge_dose", "reason")} == {
        "stop": "program", "stopped_at": "2026-02-10T09:00:00-06:00", "plan": "none", "oral_bridge_dose": "",
        "reason": "family declined",
    }
    alert = Alert.objects.get(kind="withdrawal_risk", episode=f"stop:{plan['id']}")
    assert alert.severity == "critical" and alert.resolved_at is None
    assert api.get(f"{API}/programs/", {"pump": filled.pk}).json()["results"][1]["withdrawal_plan"] == plan


def test_a_plan_on_a_program_that_delivers_is_refused(api, filled, prescriber):
    response = post(api, "programs/", program(filled.pk, daily_dose_mcg="450",
                                              withdrawal_plan={"plan": "taper_completed"}))
    assert response.status_code == 400
    assert response.json() == {"withdrawal_plan": [
        "This program does not stop delivery: a withdrawal plan goes with an explant or a program that stops "
        "delivery. Leave it empty."
    ]}


def test_a_refill_carrying_a_stop_names_the_plan_fields_under_program(api, filled, prescriber):
    body = worked_example_refill(
        filled.pk, performed_at="2026-02-10T09:00:00-06:00", extracted_volume_ml="32.4", added_volume_ml="36",
        program={"concentration_mcg_per_ml": 1000, "mode": "continuous", "daily_dose_mcg": "0",
                 "override_reason": "pump to be explanted", "entered_by": "dr_pat",
                 "withdrawal_plan": {"plan": "none"}},
    )
    refused = post(api, "refills/", body)
    assert refused.status_code == 400
    assert refused.json() == {
        "program.withdrawal_plan.reason": ["Give the reason there is no plan against withdrawal."]
    }
    body["program"]["withdrawal_plan"] = {"plan": "taper_completed"}
    accepted = post(api, "refills/", body)
    assert accepted.status_code == 201, accepted.json()
    assert accepted.json()["program"]["withdrawal_plan"]["plan"] == "taper_completed"
