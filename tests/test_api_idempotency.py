"""Idempotency-Key on writes (README, REST API): replay, 422 on reuse, 24 h, per client, races."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from rest_framework.test import APIClient

from clinic.models import ApiClient, IdempotencyRecord
from pumps.models import Patient, Pump, Reading, Refill
from tests.api_support import (
    AFTER_REFILL,
    API,
    session_client,
    token_client,
    travel,
    worked_example_refill,
)
from tests.factories import make_clinic, make_patient, make_pump

READING_NOW = AFTER_REFILL


@pytest.fixture
def api(clinic):
    return token_client(clinic)[0]


def reading(pump_id, **overrides):
    body = {"pump": pump_id, "read_at": "2026-02-02T09:00:00-06:00", "reservoir_volume_ml": "12.5"}
    body.update(overrides)
    return body


def post(api, url, body, key, at=READING_NOW):
    with travel(at):
        return api.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_retry_with_the_same_key_replays_the_first_answer_and_creates_nothing(api, pump):
    first = post(api, f"{API}/readings/", reading(pump.pk), "k-1")
    version = Pump.objects.get(pk=pump.pk).version
    retry = post(api, f"{API}/readings/", reading(pump.pk), "k-1")
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert Reading.objects.count() == 1
    assert Pump.objects.get(pk=pump.pk).version == version
    record = IdempotencyRecord.objects.get()
    assert (record.key, record.method, record.path, record.status_code) == ("k-1", "POST", "/api/v1/readings/", 201)
    assert record.response_body == first.json()


def test_same_key_with_another_body_is_422(api, pump):
    post(api, f"{API}/readings/", reading(pump.pk), "k-2")
    response = post(api, f"{API}/readings/", reading(pump.pk, reservoir_volume_ml="13"), "k-2")
    assert response.status_code == 422
    assert response.json() == {
        "detail": "This Idempotency-Key was already used with another body: send a new key for a new request.",
        "code": "idempotency_key_reused",
    }
    assert Reading.objects.count() == 1


def test_same_key_on_another_endpoint_is_422(api, pump):
    post(api, f"{API}/readings/", reading(pump.pk), "k-3")
    response = post(api, f"{API}/refills/", reading(pump.pk), "k-3")
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "This Idempotency-Key was already used with another endpoint (POST /api/v1/readings/): "
        "send a new key for a new request."
    )
    assert not Refill.objects.exists()


def test_the_same_json_in_another_key_order_and_spacing_is_the_same_body(api, pump):
    body = reading(pump.pk)
    with travel(READING_NOW):
        first = api.post(f"{API}/readings/", json.dumps(body), content_type="application/json",
                         HTTP_IDEMPOTENCY_KEY="k-4")
        again = api.post(f"{API}/readings/", json.dumps(dict(reversed(body.items())), indent=2),
                         content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-4")
    assert first.status_code == 201
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert Reading.objects.count() == 1


def test_an_error_keeps_the_key_unused(api, pump):
    bad = post(api, f"{API}/readings/", reading(pump.pk, read_at="2026-02-02T09:00:00"), "k-5")
    assert bad.status_code == 400
    assert not IdempotencyRecord.objects.exists()
    good = post(api, f"{API}/readings/", reading(pump.pk), "k-5")
    assert good.status_code == 201
    assert not good.has_header("Idempotent-Replayed")


def test_a_conflict_is_not_kept_and_a_confirmed_retry_goes_through(api, pump):
    post(api, f"{API}/refills/", worked_example_refill(pump.pk), "fill")
    duplicate = worked_example_refill(pump.pk, performed_at="2026-02-02T09:20:00-06:00", extracted_volume_ml="35.9",
                                      added_volume_ml="4", program=None)
    refused = post(api, f"{API}/refills/", duplicate, "dup")
    assert refused.status_code == 409
    confirmed = post(api, f"{API}/refills/", {**duplicate, "confirm_duplicate": True}, "dup")
    assert confirmed.status_code == 201
    replay = post(api, f"{API}/refills/", {**duplicate, "confirm_duplicate": True}, "dup")
    assert replay.json()["id"] == confirmed.json()["id"]
    assert Refill.objects.count() == 2


def test_keys_expire_after_24_hours(api, pump):
    post(api, f"{API}/readings/", reading(pump.pk), "k-6")
    within = post(api, f"{API}/readings/", reading(pump.pk), "k-6", at=READING_NOW + timedelta(hours=23))
    assert within["Idempotent-Replayed"] == "true"
    after = post(api, f"{API}/readings/", reading(pump.pk), "k-6", at=READING_NOW + timedelta(hours=25))
    assert after.status_code == 201
    assert not after.has_header("Idempotent-Replayed")
    assert Reading.objects.count() == 2
    assert IdempotencyRecord.objects.count() == 1


def test_keys_are_scoped_to_the_api_client(clinic, pump):
    first, _ = token_client(clinic, name="EHR")
    second, _ = token_client(clinic, name="Pharmacy")
    assert post(first, f"{API}/readings/", reading(pump.pk), "shared").status_code == 201
    other = post(second, f"{API}/readings/", reading(pump.pk), "shared")
    assert other.status_code == 201
    assert not other.has_header("Idempotent-Replayed")
    assert Reading.objects.count() == 2


def test_patch_is_idempotent_too(api, patient):
    with travel(READING_NOW):
        first = api.patch(f"{API}/patients/{patient.pk}/", {"phone": "555"}, format="json", HTTP_IDEMPOTENCY_KEY="p")
        history = Patient.history.filter(id=patient.pk).count()
        again = api.patch(f"{API}/patients/{patient.pk}/", {"phone": "555"}, format="json", HTTP_IDEMPOTENCY_KEY="p")
    assert first.status_code == again.status_code == 200
    assert again["Idempotent-Replayed"] == "true"
    assert Patient.history.filter(id=patient.pk).count() == history


def test_session_users_may_send_the_header_but_it_is_not_kept(nurse, pump):
    api = session_client(nurse)
    assert post(api, f"{API}/readings/", reading(pump.pk), "s").status_code == 201
    assert post(api, f"{API}/readings/", reading(pump.pk), "s").status_code == 201
    assert not IdempotencyRecord.objects.exists()


def test_key_length_is_checked(api, pump):
    response = post(api, f"{API}/readings/", reading(pump.pk), "x" * 201)
    assert response.status_code == 400
    assert response.json() == {"Idempotency-Key": ["Give a key of 1 to 200 characters."]}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_create_one_refill():
    """Four copies of one request at once: the first to insert the key runs; the others
    wait on the key's unique index until it commits, then replay its answer."""
    clinic = make_clinic(code="race", name="Race", timezone="America/Chicago")
    pump = make_pump(make_patient(clinic, mrn="R1"), serial="R1")
    _, token = ApiClient.create_with_token(clinic=clinic, name="EHR", can_write=True)
    barrier = threading.Barrier(4)
    results = []

    def send():
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            barrier.wait()
            response = api.post(f"{API}/refills/", worked_example_refill(pump.pk), format="json",
                                HTTP_IDEMPOTENCY_KEY="race-key")
            results.append((response.status_code, response.json()["id"], response.has_header("Idempotent-Replayed")))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    with travel(AFTER_REFILL):  # time-machine patches the clock of every thread
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert len(results) == 4
    assert {code for code, _, _ in results} == {201}
    assert len({refill_id for _, refill_id, _ in results}) == 1
    assert sorted(replayed for _, _, replayed in results) == [False, True, True, True]
    assert Refill.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1
