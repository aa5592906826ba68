"""The API against its own OpenAPI schema (schemathesis): generated requests to every
operation, checked for no server error and for status code, content type and response
body conforming to the schema. Zero failures allowed."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal as D

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis import checks as C

from pumps import services as s
from tests.api_support import token_client
from tests.conftest import CHICAGO

CHECKS = [C.not_a_server_error, C.status_code_conformance, C.content_type_conformance, C.response_schema_conformance]


@pytest.mark.django_db(transaction=True)
def test_every_operation_conforms_to_the_schema(live_server, pump, nurse, monkeypatch):
    from clinic.auth import ApiClientRateThrottle

    monkeypatch.setattr(ApiClientRateThrottle, "THROTTLE_RATES", {"api_client": "100000/min"})
    s.record_refill(
        pump=pump, performed_at=datetime(2026, 2, 2, 9, tzinfo=CHICAGO), added_volume_ml=D(36),
        concentration_mcg_per_ml=D(1000), actor=s.Actor.system("test"), performed_by="nina",
        now=datetime(2026, 2, 2, 10, tzinfo=CHICAGO),
        program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450), entered_by="dr_pat"),
    )
    api, _ = token_client(pump.clinic, write=True)
    raw = api.get("/api/v1/schema/?format=json").json()
    token = api._credentials["HTTP_AUTHORIZATION"]
    schema = schemathesis.openapi.from_dict(raw)
    failures: list[str] = []
    calls = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30

    for operation in operations:
        @hsettings(max_examples=15, deadline=None, database=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def exercise(case):
            nonlocal calls
            calls += 1
            response = case.call(base_url=live_server.url, headers={"Authorization": token})
            try:
                case.validate_response(response, checks=CHECKS)
            except BaseException as exc:  # noqa: BLE001 - collected and reported below
                failures.append(f"{operation.label} -> {response.status_code}: {str(exc)[:120]} ... {str(exc)[-300:]}")  # noqa: B023 - called within the same iteration

        exercise()
    assert calls >= 10 * len(operations) // 2
    assert failures == []


@pytest.mark.parametrize("path", [
    "/api/v1/pumps/99999999999999999999999/", "/api/v1/refills/-1/", "/api/v1/pumps/abc/projection/",
    "/api/v1/pumps/99999999999999999999999/history/", "/api/v1/alerts/1e9/",
])
def test_ids_out_of_range_or_not_numbers_are_404(db, clinic, path):
    api, _ = token_client(clinic)
    response = api.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_datetime_filters_out_of_range_are_400(db, clinic):
    api, _ = token_client(clinic)
    response = api.get("/api/v1/patients/?updated_since=0001-01-01T00:00:00%2B14:00")
    assert response.status_code == 400
    assert response.json() == {
        "updated_since": ["Datetime out of range: give an instant between years 1900 and 2999."]
    }


def test_filter_values_with_percent_signs_are_echoed_not_crashing(db, clinic):
    api, _ = token_client(clinic)
    response = api.get("/api/v1/patients/?status=%25s%25d")
    assert response.status_code == 400
    assert response.json() == {"status": ["Unknown status %s%d: use active, inactive, deceased."]}


def test_offsets_beyond_fourteen_hours_are_400(db, clinic):
    api, _ = token_client(clinic)
    response = api.get("/api/v1/patients/?updated_since=2026-01-01T00:00:00%2B18:30")
    assert response.status_code == 400
    assert response.json() == {
        "updated_since": ["Datetime offset out of range: UTC offsets lie between -12:00 and +14:00."]
    }


def test_nul_characters_in_json_are_refused_with_400(db, pump):
    api, _ = token_client(pump.clinic)
    response = api.post(
        "/api/v1/pumps/", data=b'{"patient": 1, "model": "a\\u0000b", "serial_number": "x", "implanted_on": "2026-01-01"}',
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json() == {
        "non_field_errors": ["JSON parse error - strings must not contain NUL (\\u0000) characters"]
    }
    response = api.post(
        "/api/v1/pumps/", data=b'{"patient": 1, "model": "\\udb08", "serial_number": "x", "implanted_on": "2026-01-01"}',
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["JSON parse error - strings must not contain lone surrogates"]}
