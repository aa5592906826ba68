"""/api/v1/readings/: a reading re-anchors the projection; validation, voids, filters."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pumps.models import Reading
from tests.api_support import (
    AFTER_REFILL,
    API,
    CHICAGO,
    QUERY_CLOCK,
    token_client,
    travel,
    worked_example_refill,
)
from tests.factories import make_patient, make_pump

READ_NOW = datetime(2026, 3, 1, 10, 0, tzinfo=CHICAGO)


@pytest.fixture
def api(clinic):
    return token_client(clinic)[0]


@pytest.fixture
def filled(api, pump):
    with travel(AFTER_REFILL):
        assert api.post(f"{API}/refills/", worked_example_refill(pump.pk), format="json").status_code == 201
    return pump


def reading(pump_id, **overrides):
    body = {"pump": pump_id, "read_at": "2026-03-01T09:00:00-06:00", "reservoir_volume_ml": "10"}
    body.update(overrides)
    return body


def post(api, body, **headers):
    with travel(READ_NOW):
        return api.post(f"{API}/readings/", body, format="json", **headers)


def test_reading_re_anchors_the_projection(api, filled):
    response = post(api, reading(filled.pk, eri=False, performed_by="tech-7", notes="telemetry"))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert {k: body[k] for k in ("pump", "read_at", "reservoir_volume_ml", "eri", "performed_by", "notes")} == {
        "pump": filled.pk, "read_at": "2026-03-01T09:00:00-06:00", "reservoir_volume_ml": "10.000", "eri": False,
        "performed_by": "tech-7", "notes": "telemetry",
    }
    projection = api.get(f"{API}/pumps/{filled.pk}/projection/", {"at": "2026-03-02T09:00:00-06:00"}).json()
    # 8 mL above the alarm at 0.45 mL/day: 17 d 18 h 40 min after 2026-03-01 15:00 UTC.
    assert projection == {
        "at": "2026-03-02T09:00:00-06:00",
        "status": "due_soon",
        "status_reason": "due soon: refill due on 2026-03-12 (in 10 days); low-reservoir alarm 2026-03-19 04:40 CDT "
        "(in 16 days)",
        "reservoir_volume_ml": "9.550",
        "daily_volume_ml": "0.450",
        "worst_case_daily_volume_ml": "0.450",
        "low_reservoir_alarm_at": "2026-03-19T04:40:00-05:00",
        "empty_at": "2026-03-23T15:20:00-05:00",
        "expected_low_reservoir_alarm_at": "2026-03-19T04:40:00-05:00",
        "expected_empty_at": "2026-03-23T15:20:00-05:00",
        "drug_expires_at": "2026-08-01T10:00:00-05:00",
        "refill_due_on": "2026-03-12",
    }
    assert api.get(f"{API}/pumps/{filled.pk}/").json()["anchor_at"] == "2026-03-01T09:00:00-06:00"


def test_eri_reading_sets_the_end_of_service(api, filled):
    assert post(api, reading(filled.pk, eri=True)).status_code == 201
    assert api.get(f"{API}/pumps/{filled.pk}/").json()["expected_end_of_service"] == "2026-05-30"


@pytest.mark.parametrize(
    ("overrides", "errors"),
    [
        ({"reservoir_volume_ml": "40.001"}, {"reservoir_volume_ml": ["Exceeds the reservoir capacity of 40 mL."]}),
        ({"reservoir_volume_ml": -1}, {"reservoir_volume_ml": ["Must be zero or more."]}),
        ({"reservoir_volume_ml": None}, {"reservoir_volume_ml": ["This field may not be null."]}),
        ({"read_at": "2026-03-01T09:00:00"}, {"read_at": [
            "Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z)."]}),
        ({"read_at": "2026-01-14T12:00:00-06:00"}, {"read_at": ["This time is before the pump's implant date (2026-01-15)."]}),
    ],
)
def test_invalid_readings(api, filled, overrides, errors):
    response = post(api, reading(filled.pk, **overrides))
    assert response.status_code == 400
    assert response.json() == errors
    assert not Reading.objects.exists()


def test_read_only_token_may_not_record(clinic, filled):
    read_only, _ = token_client(clinic, write=False, name="Dashboard")
    response = post(read_only, reading(filled.pk))
    assert response.status_code == 403
    assert response.json() == {"detail": "This token is read-only.", "code": "permission_denied"}
    assert read_only.get(f"{API}/readings/").status_code == 200


def test_void_a_reading_returns_to_the_refill_anchor(api, filled):
    created = post(api, reading(filled.pk)).json()
    with travel(READ_NOW):
        response = api.post(f"{API}/readings/{created['id']}/void/", {"reason": "other patient's pump"}, format="json")
    assert response.status_code == 200
    assert response.json()["voided_at"] == "2026-03-01T10:00:00-06:00"
    assert api.get(f"{API}/pumps/{filled.pk}/").json()["anchor_at"] == "2026-02-02T09:00:00-06:00"
    assert api.get(f"{API}/readings/{created['id']}/").json()["void_reason"] == "other patient's pump"


def test_void_with_stale_if_match_is_412(api, filled):
    created = post(api, reading(filled.pk)).json()  # version 3 now
    with travel(READ_NOW):
        stale = api.post(f"{API}/readings/{created['id']}/void/", {"reason": "x"}, format="json", HTTP_IF_MATCH='"2"')
        fresh = api.post(f"{API}/readings/{created['id']}/void/", {"reason": "x"}, format="json", HTTP_IF_MATCH='"3"')
    assert stale.status_code == 412
    assert stale.json()["code"] == "stale_version"
    assert Reading.objects.get().voided_at is not None
    assert fresh.status_code == 200


def test_filters_and_scoping(api, filled, clinic, other_clinic):
    first = post(api, reading(filled.pk)).json()
    second_pump = make_pump(make_patient(clinic, mrn="MRN002"), serial="SN-0002")
    post(api, reading(second_pump.pk, read_at="2026-03-01T08:00:00-06:00"))
    foreign_pump = make_pump(make_patient(other_clinic, mrn="S1"), serial="S1")
    foreign_api, _ = token_client(other_clinic, name="South")
    with travel(READ_NOW):
        foreign = foreign_api.post(
            f"{API}/readings/", reading(foreign_pump.pk, read_at="2026-03-01T09:00:00+11:00"), format="json"
        ).json()
    assert foreign["read_at"] == "2026-03-01T09:00:00+11:00"
    assert api.get(f"{API}/readings/").json()["count"] == 2
    assert [r["id"] for r in api.get(f"{API}/readings/", {"pump": filled.pk}).json()["results"]] == [first["id"]]
    assert api.get(f"{API}/readings/", {"mrn": "MRN002"}).json()["count"] == 1
    assert api.get(f"{API}/readings/", {"read_before": "2026-03-01T08:30:00-06:00"}).json()["count"] == 1
    assert api.get(f"{API}/readings/{foreign['id']}/").status_code == 404
    assert api.get(f"{API}/readings/", {"pump": foreign_pump.pk}).json()["count"] == 0


def test_list_query_count_does_not_grow(api, clinic, django_assert_max_num_queries):
    def add(start, count):
        for i in range(start, start + count):
            pump = make_pump(make_patient(clinic, mrn=f"R{i}"), serial=f"R{i}")
            post(api, reading(pump.pk, performed_by="nina"))

    add(0, 2)
    with travel(QUERY_CLOCK):
        api.get(f"{API}/readings/")
        with CaptureQueriesContext(connection) as few:
            api.get(f"{API}/readings/")
        baseline = len(few.captured_queries)  # now: the next requests clear the query log
        add(2, 10)
        with django_assert_max_num_queries(baseline):
            assert api.get(f"{API}/readings/").json()["count"] == 12
