"""``/api/v1/refill-plan/``: the plan (capacity, proposals, shortfalls) and booking its
proposals with a write token, scoped to the token's clinic, Idempotency-Key honoured."""

from __future__ import annotations

from datetime import datetime

import pytest

from pumps import services as s
from pumps.models import Appointment
from tests.api_support import token_client, travel
from tests.pages_support import CHICAGO, DUE_SOON_AT, new_patient, worked_example

PLAN = "/api/v1/refill-plan/"
BOOK = "/api/v1/refill-plan/book/"


@pytest.fixture
def pumps(clinic, patient, prescriber):
    actor = s.Actor(prescriber)
    return (worked_example(patient, actor),
            worked_example(new_patient(clinic, "MRN002", "Baker", "Ben"), actor, serial="SN-0002"))


def test_plan(pumps, clinic):
    api, _ = token_client(clinic, write=False)
    with travel(DUE_SOON_AT):
        response = api.get(PLAN, {"horizon_days": 28})
    assert response.status_code == 200
    body = response.json()
    assert body["horizon_days"] == 28 and body["first_day"] == "2026-03-29" and body["last_day"] == "2026-04-25"
    assert body["capacity"]["slots_per_day"] == 8 and body["capacity"]["earliest_days"] == 14
    friday = next(d for d in body["capacity"]["days"] if d["date"] == "2026-04-10")
    assert friday == {"date": "2026-04-10", "capacity": 8, "booked": 0, "proposed": 2, "suggested": 0, "free": 6}
    assert [(p["pump"], p["refill_due_on"], p["date"], p["window_start"]) for p in body["proposals"]] == [
        (pumps[0].pk, "2026-04-10", "2026-04-10", "2026-03-29"), (pumps[1].pk, "2026-04-10", "2026-04-10", "2026-03-29")]
    assert body["shortfalls"] == []
    with travel(DUE_SOON_AT):
        assert api.get(PLAN, {"horizon_days": 0}).status_code == 400
        assert api.get(PLAN, {"horizon_days": "x"}).json()["horizon_days"]


def test_shortfalls_reasons(pumps, clinic):
    clinic.refill_slots_per_day = 1
    clinic.refill_earliest_days = 0
    clinic.save()
    api, _ = token_client(clinic, write=False)
    with travel(DUE_SOON_AT):
        body = api.get(PLAN).json()
    assert [p["pump"] for p in body["proposals"]] == [pumps[0].pk]
    (short,) = body["shortfalls"]
    assert (short["pump"], short["reason"], short["suggested_date"]) == (pumps[1].pk, "capacity", "2026-04-09")


def test_book_and_replay(pumps, clinic):
    api, _ = token_client(clinic, write=True)
    first, second = pumps
    with travel(DUE_SOON_AT):
        response = api.post(BOOK, {"pumps": [first.pk, second.pk, first.pk]}, format="json",
                            HTTP_IDEMPOTENCY_KEY="plan-1")
        assert response.status_code == 200, response.content
        body = response.json()
        assert [(b["pump"], b["date"]) for b in body["booked"]] == [(first.pk, "2026-04-10"), (second.pk, "2026-04-10")]
        assert datetime.fromisoformat(body["booked"][1]["scheduled_for"]) == datetime(2026, 4, 10, 9, 30, tzinfo=CHICAGO)
        assert body["skipped"] == []
        replay = api.post(BOOK, {"pumps": [first.pk, second.pk, first.pk]}, format="json",
                          HTTP_IDEMPOTENCY_KEY="plan-1")
        assert replay.status_code == 200 and replay.json() == body and replay["Idempotent-Replayed"] == "true"
        again = api.post(BOOK, {"pumps": [first.pk]}, format="json")
    assert Appointment.objects.filter(kind="refill").count() == 2
    assert again.json()["booked"] == []
    assert again.json()["skipped"][0]["code"] == "not_planned"
    appointment = Appointment.objects.get(pump=first)
    assert appointment.scheduled_for == datetime(2026, 4, 10, 9, 0, tzinfo=CHICAGO)
    assert appointment.history.first().history_change_reason.startswith("api client")


def test_book_is_scoped_and_needs_a_write_token(pumps, clinic, other_clinic):
    reader, _ = token_client(clinic, write=False)
    other, _ = token_client(other_clinic, write=True, name="South EHR")
    with travel(DUE_SOON_AT):
        assert reader.post(BOOK, {"pumps": [pumps[0].pk]}, format="json").status_code == 403
        response = other.post(BOOK, {"pumps": [pumps[0].pk]}, format="json")
        assert other.get(PLAN).json()["proposals"] == []
    assert response.status_code == 200
    assert response.json() == {"booked": [], "skipped": [
        {"pump": pumps[0].pk, "code": "not_found", "reason": "no such pump in this clinic"}]}
    assert Appointment.objects.count() == 0
    with travel(DUE_SOON_AT):
        assert reader.post(BOOK, {"pumps": []}, format="json").status_code == 403
        writer, _ = token_client(clinic, write=True, name="EHR 2")
        assert writer.post(BOOK, {"pumps": []}, format="json").status_code == 400
