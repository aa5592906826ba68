"""Authentication and clinic scoping of the REST API (README, REST API and Security)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from clinic.models import Membership
from pumps.models import Reading
from tests.api_support import (
    AFTER_REFILL,
    API,
    session_client,
    token_client,
    travel,
    worked_example_refill,
)
from tests.factories import make_patient, make_pump, make_user

READING = {"read_at": "2026-02-02T09:30:00-06:00", "reservoir_volume_ml": "12"}


def test_no_credentials_is_401_with_a_bearer_challenge(db):
    response = APIClient().get(f"{API}/pumps/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"detail": "Authentication credentials were not provided.", "code": "not_authenticated"}


def test_unknown_token_is_401(db):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Bearer pc_not-a-token")
    response = api.get(f"{API}/pumps/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid or revoked token.", "code": "authentication_failed"}


def test_revoked_token_is_401(clinic):
    api, client = token_client(clinic)
    assert api.get(f"{API}/pumps/").status_code == 200
    client.revoke()
    response = api.get(f"{API}/pumps/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"detail": "Invalid or revoked token.", "code": "authentication_failed"}


def test_malformed_authorization_header_is_401(db):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Bearer two parts")
    response = api.get(f"{API}/pumps/")
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid Authorization header: expected 'Bearer <token>'."


def test_read_only_token_reads_but_every_write_is_403(clinic, pump, patient):
    api, _ = token_client(clinic, write=False)
    assert api.get(f"{API}/pumps/{pump.pk}/").status_code == 200
    writes = [
        ("post", f"{API}/patients/", {}), ("patch", f"{API}/patients/{patient.pk}/", {}),
        ("post", f"{API}/pumps/", {}), ("post", f"{API}/refills/", {}), ("post", f"{API}/readings/", {}),
        ("post", f"{API}/programs/", {}), ("post", f"{API}/pumps/{pump.pk}/explant/", {}),
    ]
    for method, url, body in writes:
        response = getattr(api, method)(url, body, format="json")
        assert response.status_code == 403, url
        assert response.json() == {"detail": "This token is read-only.", "code": "permission_denied"}


def test_another_clinics_token_gets_404_and_empty_lists(pump, other_clinic):
    with travel(AFTER_REFILL):
        own, _ = token_client(pump.clinic)
        refill = own.post(f"{API}/refills/", worked_example_refill(pump.pk), format="json").json()
    api, _ = token_client(other_clinic, name="South EHR")
    for url in (
        f"{API}/pumps/{pump.pk}/", f"{API}/patients/{pump.patient_id}/", f"{API}/refills/{refill['id']}/",
        f"{API}/programs/{refill['program']['id']}/", f"{API}/pumps/{pump.pk}/projection/",
    ):
        assert api.get(url).status_code == 404, url
    for url in ("pumps", "patients", "refills", "programs", "readings", "worklist"):
        assert api.get(f"{API}/{url}/").json()["count"] == 0, url
    with travel(AFTER_REFILL):
        void = api.post(f"{API}/refills/{refill['id']}/void/", {"reason": "x"}, format="json")
    assert void.status_code == 404


def test_write_naming_another_clinics_pump_is_400_like_a_missing_pump(pump, other_clinic):
    api, _ = token_client(other_clinic, name="South EHR")
    with travel(AFTER_REFILL):
        foreign = api.post(f"{API}/readings/", {"pump": pump.pk, **READING}, format="json")
        missing = api.post(f"{API}/readings/", {"pump": 987654, **READING}, format="json")
    assert foreign.status_code == missing.status_code == 400
    assert foreign.json() == {"pump": [f'Invalid pk "{pump.pk}" - object does not exist.']}
    assert missing.json() == {"pump": ['Invalid pk "987654" - object does not exist.']}
    assert not Reading.objects.exists()


def test_nurse_session_records_in_own_clinic(nurse, pump):
    with travel(AFTER_REFILL):
        response = session_client(nurse).post(f"{API}/readings/", {"pump": pump.pk, **READING}, format="json")
    assert response.status_code == 201
    assert response.json()["performed_by"] == "nina"
    assert Reading.objects.get().history.first().history_user == nurse


def test_viewer_session_writes_nothing(clinic, pump):
    viewer = session_client(make_user("vic", clinic, "viewer"))
    assert viewer.get(f"{API}/pumps/{pump.pk}/").status_code == 200
    with travel(AFTER_REFILL):
        response = viewer.post(f"{API}/readings/", {"pump": pump.pk, **READING}, format="json")
    assert response.status_code == 403
    assert response.json() == {"detail": "Your role in this clinic does not allow changes.", "code": "permission_denied"}


def test_role_is_checked_in_the_records_clinic(clinic, other_clinic, pump):
    """A nurse in one clinic who only views another may not write there."""
    user = make_user("split", clinic, "viewer")
    Membership.objects.create(user=user, clinic=other_clinic, role="nurse")
    with travel(AFTER_REFILL):
        response = session_client(user).post(f"{API}/readings/", {"pump": pump.pk, **READING}, format="json")
    assert response.status_code == 403
    assert response.json() == {"detail": "Your role in this clinic does not allow changes.", "code": "permission_denied"}


def test_staff_see_only_their_clinics_and_a_superuser_sees_all(clinic, other_clinic, pump, nurse):
    foreign = make_pump(make_patient(other_clinic, mrn="S1"), serial="S1")
    assert [p["id"] for p in session_client(nurse).get(f"{API}/pumps/").json()["results"]] == [pump.pk]
    assert session_client(nurse).get(f"{API}/pumps/{foreign.pk}/").status_code == 404
    root = make_user("root", is_superuser=True, is_staff=True)
    assert session_client(root).get(f"{API}/pumps/").json()["count"] == 2


def test_user_without_membership_sees_nothing_and_writes_nothing(pump):
    stranger = session_client(make_user("stranger"))
    assert stranger.get(f"{API}/pumps/").json()["count"] == 0
    assert stranger.get(f"{API}/pumps/{pump.pk}/").status_code == 404
    assert stranger.post(f"{API}/readings/", {"pump": pump.pk, **READING}, format="json").status_code == 403


@pytest.mark.parametrize("url", ["pumps", "patients", "refills", "readings", "programs", "worklist"])
def test_every_resource_needs_credentials(db, url):
    assert APIClient().get(f"{API}/{url}/").status_code == 401
