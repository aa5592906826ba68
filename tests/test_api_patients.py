"""/api/v1/patients/: create, PATCH (through services.update_patient), filters, scoping."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clinic.models import Membership
from pumps.models import Patient
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

NOW = datetime(2026, 2, 2, 10, 0, tzinfo=CHICAGO)
ANA = {
    "mrn": " MRN900 ", "family_name": "Lopez", "given_name": "Ana", "birth_date": "1980-05-17",
    "spasticity_origin": "cerebral", "withdrawal_high_risk": True, "high_risk_reason": "T4 injury",
    "phone": "+1 312 555 0100",
}


@pytest.fixture
def api(clinic):
    return token_client(clinic)[0]


def test_create_answers_201_with_the_patient(api):
    with travel(NOW):
        response = api.post(f"{API}/patients/", ANA, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert response["Location"] == f"http://testserver/api/v1/patients/{body['id']}/"
    assert body == {
        "id": body["id"], "clinic": "north", "mrn": "MRN900", "family_name": "Lopez", "given_name": "Ana",
        "birth_date": "1980-05-17", "spasticity_origin": "cerebral", "withdrawal_high_risk": True,
        "high_risk_reason": "T4 injury", "phone": "+1 312 555 0100", "caregiver_phone": "", "status": "active",
        "created_at": "2026-02-02T10:00:00-06:00", "updated_at": "2026-02-02T10:00:00-06:00",
    }
    assert Patient.objects.get().history.first().history_change_reason == "api client EHR"


def test_required_fields(api):
    response = api.post(f"{API}/patients/", {"mrn": "X"}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "family_name": ["This field is required."],
        "given_name": ["This field is required."],
        "birth_date": ["This field is required."],
        "spasticity_origin": ["This field is required."],
        "withdrawal_high_risk": ["This field is required."],
    }


def test_wrong_types_and_choices(api):
    response = api.post(
        f"{API}/patients/",
        {**ANA, "birth_date": "17/05/1980", "spasticity_origin": "spine", "withdrawal_high_risk": "perhaps"},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {
        "birth_date": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."],
        "spasticity_origin": ['"spine" is not a valid choice.'],
        "withdrawal_high_risk": ["Must be a valid boolean."],
    }


def test_duplicate_mrn_and_future_birth_date_come_from_the_service(api, patient):
    with travel(NOW):
        response = api.post(f"{API}/patients/", {**ANA, "mrn": "MRN001", "birth_date": "2027-01-01"}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "birth_date": ["The birth date is in the future."],
        "mrn": ["A patient with this MRN already exists in this clinic."],
    }


def test_patch_high_risk_recomputes_the_pump_due_date(api, pump, patient):
    with travel(AFTER_REFILL):
        api.post(f"{API}/refills/", worked_example_refill(pump.pk), format="json")
        assert api.get(f"{API}/pumps/{pump.pk}/").json()["refill_due_on"] == "2026-04-10"
        response = api.patch(
            f"{API}/patients/{patient.pk}/",
            {"withdrawal_high_risk": True, "high_risk_reason": "previous withdrawal"},
            format="json",
        )
    assert response.status_code == 200, response.json()
    assert response.json()["withdrawal_high_risk"] is True
    assert response.json()["mrn"] == "MRN001"  # untouched
    # 2026-04-18 - 7 - 7 = Saturday 2026-04-04 -> Friday 2026-04-03.
    assert api.get(f"{API}/pumps/{pump.pk}/").json()["refill_due_on"] == "2026-04-03"


def test_patch_cannot_move_a_patient_to_another_clinic(api, patient):
    response = api.patch(f"{API}/patients/{patient.pk}/", {"clinic": "north"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"clinic": ["A patient cannot move to another clinic."]}


def test_put_and_delete_are_not_allowed(api, patient):
    assert api.put(f"{API}/patients/{patient.pk}/", ANA, format="json").status_code == 405
    response = api.delete(f"{API}/patients/{patient.pk}/")
    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "DELETE" not allowed.', "code": "method_not_allowed"}


def test_filters(api, clinic, patient):
    inactive = make_patient(clinic, mrn="MRN002", status="inactive")

    def ids(**params):
        return [p["id"] for p in api.get(f"{API}/patients/", params).json()["results"]]

    assert sorted(ids()) == sorted([patient.pk, inactive.pk])
    assert ids(mrn="MRN002") == [inactive.pk]
    assert ids(status="active") == [patient.pk]
    assert ids(updated_since="2999-01-01T00:00:00Z") == []
    assert len(ids(updated_since="2000-01-01T00:00:00+01:00")) == 2
    naive = api.get(f"{API}/patients/", {"updated_since": "2026-01-01T00:00:00"})
    assert naive.status_code == 400
    assert naive.json() == {
        "updated_since": ["Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z)."]
    }


def test_another_clinics_patient_is_404(patient, other_clinic):
    api, _ = token_client(other_clinic)
    response = api.get(f"{API}/patients/{patient.pk}/")
    assert response.status_code == 404
    assert api.patch(f"{API}/patients/{patient.pk}/", {"phone": "1"}, format="json").status_code == 404
    assert api.get(f"{API}/patients/").json()["count"] == 0


def test_staff_of_several_clinics_names_the_clinic(clinic, other_clinic, nurse):
    Membership.objects.create(user=nurse, clinic=other_clinic, role="nurse")
    api = session_client(nurse)
    with travel(NOW):
        unnamed = api.post(f"{API}/patients/", ANA, format="json")
        named = api.post(f"{API}/patients/", {**ANA, "clinic": "south"}, format="json")
        unknown = api.post(f"{API}/patients/", {**ANA, "clinic": "west"}, format="json")
    assert unnamed.status_code == 400
    assert unnamed.json() == {"clinic": ["Name the clinic (its code): you may record in several clinics."]}
    assert named.status_code == 201
    assert named.json()["clinic"] == "south"
    assert named.json()["created_at"] == "2026-02-03T03:00:00+11:00"  # Sydney
    assert unknown.json() == {"clinic": ["Object with code=west does not exist."]}


def test_staff_with_one_writable_clinic_records_there(clinic, nurse):
    with travel(NOW):
        response = session_client(nurse).post(f"{API}/patients/", ANA, format="json")
    assert response.status_code == 201
    assert response.json()["clinic"] == "north"
    assert Patient.objects.get().history.first().history_user == nurse


def test_viewer_may_read_but_not_write(clinic, patient):
    viewer = make_user("vic", clinic, "viewer")
    api = session_client(viewer)
    assert api.get(f"{API}/patients/{patient.pk}/").status_code == 200
    response = api.post(f"{API}/patients/", ANA, format="json")
    assert response.status_code == 403
    assert response.json() == {"detail": "Your role in this clinic does not allow changes.", "code": "permission_denied"}


def test_list_query_count_does_not_grow(api, clinic, django_assert_max_num_queries):
    for i in range(2):
        make_patient(clinic, mrn=f"A{i}")
    with travel(QUERY_CLOCK):
        api.get(f"{API}/patients/")
        with CaptureQueriesContext(connection) as few:
            api.get(f"{API}/patients/")
        baseline = len(few.captured_queries)
        for i in range(2, 20):
            make_patient(clinic, mrn=f"A{i}")
        with django_assert_max_num_queries(baseline):
            assert api.get(f"{API}/patients/").json()["count"] == 20
