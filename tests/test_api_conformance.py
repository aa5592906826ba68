"""Every answer under /api/ is JSON in the API's error shape (unrouted paths, wrong
methods, unexpected errors included); datetime parameters are limited to years 1900–2999;
instants are RFC 3339 with whole-minute offsets; free text has a maximum length."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from rest_framework.test import APIClient

from pumps.formats import rfc3339
from tests.api_support import API, token_client, travel, worked_example_refill
from tests.factories import make_clinic, make_patient, make_pump

OUT_OF_RANGE = "Datetime out of range: give an instant between years 1900 and 2999."
BAD_FORMAT = (
    "Datetime has wrong format: use ISO 8601 with an offset, for example 2026-02-02T09:00:00-06:00 "
    "or 2026-02-02T15:00:00Z."
)


@pytest.fixture
def api(clinic):
    return token_client(clinic)[0]


# ------------------------------------------------------------------- JSON everywhere


@pytest.mark.parametrize(("method", "path", "detail"), [
    ("get", "/api/v1/patients/0.5/", "No endpoint at /api/v1/patients/0.5/."),
    ("get", "/api/v1/nope/", "No endpoint at /api/v1/nope/."),
    ("post", "/api/v1/nope/", "No endpoint at /api/v1/nope/."),
    ("delete", "/api/v1/nope/deeper/", "No endpoint at /api/v1/nope/deeper/."),
    ("get", "/api/v1/", "No endpoint at /api/v1/."),
    ("get", "/api/v1/patients", "No endpoint at /api/v1/patients. Did you mean /api/v1/patients/ (with the "
                                "trailing slash)?"),
])
def test_unrouted_paths_are_json_404(api, method, path, detail):
    response = getattr(api, method)(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": detail, "code": "not_found"}


def test_unrouted_paths_need_authentication_like_any_endpoint(db):
    response = APIClient().get("/api/v1/nope/")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize(("method", "path"), [("delete", "/api/v1/patients/1/"), ("put", "/api/v1/worklist/")])
def test_wrong_method_is_json_405(api, patient, method, path):
    response = getattr(api, method)(path)
    assert response.status_code == 405
    assert response.json() == {"detail": f'Method "{method.upper()}" not allowed.', "code": "method_not_allowed"}


def test_an_unexpected_error_is_a_json_500(api, pump, monkeypatch):
    from pumps.api import views

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(views, "project_at", broken)
    response = api.get(f"{API}/pumps/{pump.pk}/projection/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": "The server failed to answer this request; the error was logged. Try again, or report it.",
        "code": "server_error",
    }


def test_the_500_handler_answers_json_under_api_and_fhir(rf):
    from pumps.api.errors import server_error

    api = server_error(rf.get("/api/v1/pumps/"))
    assert (api.status_code, api["Content-Type"]) == (500, "application/json")
    fhir = server_error(rf.get("/fhir/r4/Device"))
    assert (fhir.status_code, fhir["Content-Type"]) == (500, "application/fhir+json")


# --------------------------------------------------------------- datetime parameters


@pytest.mark.parametrize("at", [
    "0540-11-04T07:45:54Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00",
    "1899-12-31T23:59:59Z", "3000-01-01T00:00:00Z",
])
def test_projection_at_outside_1900_to_2999_is_400(api, pump, at):
    response = api.get(f"{API}/pumps/{pump.pk}/projection/", {"at": at})
    assert response.status_code == 400
    assert response.json() == {"at": [OUT_OF_RANGE]}


@pytest.mark.parametrize("at", ["1900-01-01T00:00:00Z", "2999-12-31T23:59:00Z"])
def test_projection_at_the_bounds_is_answered(api, pump, at):
    assert api.get(f"{API}/pumps/{pump.pk}/projection/", {"at": at}).status_code == 200


@pytest.mark.parametrize(("path", "param"), [
    ("patients", "updated_since"), ("pumps", "updated_since"), ("worklist", "updated_since"),
    ("refills", "performed_after"), ("readings", "read_before"), ("appointments", "after"),
    ("alerts", "created_since"),
])
def test_datetime_filters_outside_the_range_are_400(api, path, param):
    response = api.get(f"{API}/{path}/", {param: "0540-11-04T07:45:54Z"})
    assert response.status_code == 400
    assert response.json() == {param: [OUT_OF_RANGE]}


def test_offsets_with_seconds_are_refused(api, pump):
    response = api.get(f"{API}/pumps/{pump.pk}/projection/", {"at": "2026-01-01T00:00:00+00:14:44"})
    assert response.status_code == 400
    assert response.json() == {"at": [BAD_FORMAT]}


def test_body_datetimes_are_bounded_too(api, pump):
    with travel(datetime(2026, 2, 2, 10, tzinfo=UTC)):
        response = api.post(
            f"{API}/refills/", worked_example_refill(pump.pk, performed_at="1800-02-02T09:00:00Z"), format="json"
        )
    assert response.status_code == 400
    assert response.json() == {"performed_at": [OUT_OF_RANGE]}


# ------------------------------------------------------------------- rendering


def test_local_mean_time_offsets_are_written_in_utc():
    amsterdam = ZoneInfo("Europe/Amsterdam")
    assert rfc3339(datetime(1930, 6, 1, 12, 0, tzinfo=UTC), amsterdam) == "1930-06-01T12:00:00+00:00"
    # from 1940 Amsterdam kept whole-minute offsets: written in the clinic's offset
    assert rfc3339(datetime(1950, 6, 1, 12, 0, tzinfo=UTC), amsterdam) == "1950-06-01T13:00:00+01:00"
    assert rfc3339(datetime(1971, 1, 1, 12, 0, tzinfo=UTC), ZoneInfo("Africa/Monrovia")) == "1971-01-01T12:00:00+00:00"
    assert rfc3339(datetime(2026, 1, 1, 12, 0, tzinfo=UTC), ZoneInfo("Asia/Kolkata")) == "2026-01-01T17:30:00+05:30"


def test_projection_in_a_local_mean_time_year_has_a_whole_minute_offset(db):
    amsterdam = make_clinic(code="ams", name="Amsterdam", timezone="Europe/Amsterdam")
    pump = make_pump(make_patient(amsterdam, mrn="NL1"), serial="NL1")
    api, _ = token_client(amsterdam)
    body = api.get(f"{API}/pumps/{pump.pk}/projection/", {"at": "1930-06-01T12:00:00Z"}).json()
    assert body["at"] == "1930-06-01T12:00:00+00:00"


# --------------------------------------------------------------------- free text


@pytest.mark.parametrize(("path", "field", "limit"), [
    ("refills", "notes", 2000), ("readings", "notes", 2000), ("events", "notes", 2000),
    ("appointments", "notes", 2000),
])
def test_notes_are_at_most_2000_characters(api, pump, path, field, limit):
    body = {"pump": pump.pk, field: "x" * (limit + 1)}
    response = api.post(f"{API}/{path}/", body, format="json")
    assert response.status_code == 400
    assert response.json()[field] == [f"Ensure this field has no more than {limit} characters."]


def test_reasons_are_at_most_500_characters(api, pump):
    with travel(datetime(2026, 2, 2, 16, tzinfo=UTC)):
        refill = api.post(f"{API}/refills/", worked_example_refill(pump.pk), format="json").json()
        void = api.post(f"{API}/refills/{refill['id']}/void/", {"reason": "x" * 501}, format="json")
        program = api.post(f"{API}/refills/", worked_example_refill(pump.pk, program={
            "concentration_mcg_per_ml": 1000, "mode": "continuous", "daily_dose_mcg": "450",
            "override_reason": "y" * 501,
        }), format="json")
    assert (void.status_code, void.json()) == (400, {"reason": ["Ensure this field has no more than 500 characters."]})
    assert program.status_code == 400
    assert program.json()["program.override_reason"] == ["Ensure this field has no more than 500 characters."]
