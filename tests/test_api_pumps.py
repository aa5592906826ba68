"""/api/v1/pumps/: implant, detail with ETag, PATCH with If-Match, explant, projection,
filters and the worklist."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pumps import services
from pumps.models import Appointment, Pump
from tests.api_support import (
    AFTER_REFILL,
    API,
    CHICAGO,
    QUERY_CLOCK,
    token_client,
    travel,
    worked_example_refill,
)
from tests.factories import make_clinic, make_patient, make_pump, query_plan, stored_status

NOW = datetime(2026, 2, 2, 10, 0, tzinfo=CHICAGO)


@pytest.fixture
def api(clinic):
    return token_client(clinic)[0]


def implant(api, patient_id, **overrides):
    body = {"patient": patient_id, "model": "8637-40", "serial_number": "NGP1", "implanted_on": "2026-01-15"}
    body.update(overrides)
    with travel(NOW):
        return api.post(f"{API}/pumps/", body, format="json")


def test_implant_answers_201_with_model_version_and_stored_projection(api, patient):
    response = implant(api, patient.pk, udi="(01)00643169001763")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert response["Location"] == f"http://testserver/api/v1/pumps/{body['id']}/"
    assert response["ETag"] == '"1"'
    assert {k: body[k] for k in (
        "clinic", "patient", "model", "model_name", "reservoir_ml", "volume_is", "serial_number", "udi",
        "implanted_on", "explanted_on", "low_reservoir_alarm_ml", "expected_end_of_service", "version", "status",
        "low_reservoir_alarm_at", "empty_at", "refill_due_on", "projected_at",
    )} == {
        "clinic": "north", "patient": patient.pk, "model": "8637-40", "model_name": "Medtronic SynchroMed II",
        "reservoir_ml": "40.000", "volume_is": "calculated", "serial_number": "NGP1", "udi": "(01)00643169001763",
        "implanted_on": "2026-01-15", "explanted_on": None, "low_reservoir_alarm_ml": "2.000",
        "expected_end_of_service": "2033-01-15", "version": 1, "status": "incomplete",
        "low_reservoir_alarm_at": None, "empty_at": None, "refill_due_on": None,
        "projected_at": "2026-02-02T10:00:00-06:00",
    }


def test_unknown_model_code_is_a_field_error(api, patient):
    response = implant(api, patient.pk, model="9999-99")
    assert response.status_code == 400
    assert response.json() == {"model": ['Unknown pump model code "9999-99".']}
    assert not Pump.objects.exists()


def test_required_fields(api):
    with travel(NOW):
        response = api.post(f"{API}/pumps/", {}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "patient": ["This field is required."],
        "model": ["This field is required."],
        "serial_number": ["This field is required."],
        "implanted_on": ["This field is required."],
    }


def test_second_implanted_pump_for_a_patient_is_refused(api, pump, patient):
    response = implant(api, patient.pk, serial_number="NGP2")
    assert response.status_code == 400
    assert response.json() == {
        "patient": ["This patient already has an implanted pump: record its explant (or a replacement) first."]
    }


def test_alarm_volume_is_rounded_and_checked_against_capacity(api, patient, clinic):
    raised = implant(api, patient.pk, low_reservoir_alarm_ml="4.0005")
    assert raised.status_code == 201
    assert raised.json()["low_reservoir_alarm_ml"] == "4.001"
    other = make_patient(clinic, mrn="MRN002")
    too_high = implant(api, other.pk, low_reservoir_alarm_ml=40)
    assert too_high.status_code == 400
    assert too_high.json() == {"low_reservoir_alarm_ml": ["Must be below the reservoir capacity of 40 mL."]}


def test_implant_naming_another_clinics_patient_is_the_same_400_as_a_missing_one(api, other_clinic):
    foreign = make_patient(other_clinic, mrn="S-1")
    response = implant(api, foreign.pk)
    missing = implant(api, 424242)
    assert response.status_code == missing.status_code == 400
    assert response.json() == {"patient": [f'Invalid pk "{foreign.pk}" - object does not exist.']}
    assert missing.json() == {"patient": ['Invalid pk "424242" - object does not exist.']}


def test_detail_carries_the_version_as_etag(api, pump):
    response = api.get(f"{API}/pumps/{pump.pk}/")
    assert response.status_code == 200
    assert response["ETag"] == '"1"'
    assert response.json()["version"] == 1


def test_patch_with_if_match(api, pump):
    with travel(NOW):
        stale = api.patch(f"{API}/pumps/{pump.pk}/", {"low_reservoir_alarm_ml": 4}, format="json", HTTP_IF_MATCH="7")
        fresh = api.patch(
            f"{API}/pumps/{pump.pk}/", {"low_reservoir_alarm_ml": 4}, format="json", HTTP_IF_MATCH='W/"1"'
        )
    assert stale.status_code == 412
    assert stale.json() == {
        "detail": "The pump changed meanwhile (version 1, not 7): reload it and try again.", "code": "stale_version",
    }
    assert fresh.status_code == 200, fresh.json()
    assert fresh.json()["low_reservoir_alarm_ml"] == "4.000"
    assert fresh.json()["version"] == 2
    assert fresh["ETag"] == '"2"'


def test_raising_the_alarm_volume_moves_the_stored_alarm_and_due_date_earlier(api, pump):
    with travel(AFTER_REFILL):
        assert api.post(f"{API}/refills/", worked_example_refill(pump.pk), format="json").status_code == 201
        response = api.patch(f"{API}/pumps/{pump.pk}/", {"low_reservoir_alarm_ml": "4"}, format="json")
    # (36 - 4) / 0.45 = 71.111 days = 71 d 2 h 40 min after 2026-02-02 09:00 CST.
    assert response.json()["low_reservoir_alarm_at"] == "2026-04-14T12:40:00-05:00"
    assert response.json()["refill_due_on"] == "2026-04-07"


TAPERED = {"plan": "taper_completed"}


def test_explant(api, pump):
    with travel(NOW):
        response = api.post(
            f"{API}/pumps/{pump.pk}/explant/",
            {"explanted_on": "2026-02-01", "reason": "infection", "withdrawal_plan": TAPERED}, format="json",
        )
        again = api.post(
            f"{API}/pumps/{pump.pk}/explant/", {"explanted_on": "2026-02-02", "withdrawal_plan": TAPERED}, format="json"
        )
    assert response.status_code == 200
    assert (response.json()["explanted_on"], response.json()["explant_reason"]) == ("2026-02-01", "infection")
    assert response.json()["status"] == "inactive"
    plan = pump.withdrawal_plans.get()
    assert response.json()["withdrawal_plan"] == {
        "id": plan.pk, "stop": "explant", "stopped_at": "2026-02-01T00:00:00-06:00", "plan": "taper_completed",
        "oral_bridge_dose": "", "reason": "", "recorded_by": "api client EHR", "voided_at": None,
    }
    assert again.status_code == 400
    assert again.json() == {"pump": ["This pump was already explanted on 2026-02-01."]}


def test_explant_before_implant_is_refused(api, pump):
    with travel(NOW):
        response = api.post(
            f"{API}/pumps/{pump.pk}/explant/", {"explanted_on": "2026-01-01", "withdrawal_plan": TAPERED}, format="json"
        )
    assert response.status_code == 400
    assert response.json() == {"explanted_on": ["The explant date is before the implant date (2026-01-15)."]}


def test_explant_without_a_withdrawal_plan_is_refused_and_saves_nothing(api, pump):
    with travel(NOW):
        for body in ({"explanted_on": "2026-02-01"}, {"explanted_on": "2026-02-01", "withdrawal_plan": None}):
            response = api.post(f"{API}/pumps/{pump.pk}/explant/", body, format="json")
            assert response.status_code == 400
            assert response.json() == {"withdrawal_plan": [
                "An explant stops intrathecal baclofen: give the withdrawal plan (taper_completed, oral_bridge with "
                "its dose, or none with a reason)."
            ]}
    pump.refresh_from_db()
    assert pump.explanted_on is None and not pump.withdrawal_plans.exists()


@pytest.mark.parametrize(("plan", "errors"), [
    ({"plan": "oral_bridge"},
     {"withdrawal_plan.oral_bridge_dose": ["Give the oral baclofen bridge dose (for example 10 mg four times a day)."]}),
    ({"plan": "none"}, {"withdrawal_plan.reason": ["Give the reason there is no plan against withdrawal."]}),
    ({"plan": "taper_completed", "oral_bridge_dose": "10 mg", "reason": "why"},
     {"withdrawal_plan.oral_bridge_dose": ["Only an oral bridge has a dose: leave this empty."],
      "withdrawal_plan.reason": ["Only a plan of none has a reason here: leave this empty."]}),
    ({"plan": "oral_bridge", "oral_bridge_dose": "10 mg\tqid"},
     {"withdrawal_plan.oral_bridge_dose": ["Remove line breaks, tabs and other control characters from this field."]}),
    ({"plan": "stop"}, {"withdrawal_plan.plan": ['"stop" is not a valid choice.']}),
    ({}, {"withdrawal_plan.plan": ["This field is required."]}),
    ("none", {"withdrawal_plan.non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}),
])
def test_explant_plan_errors_name_the_body_fields(api, pump, plan, errors):
    with travel(NOW):
        response = api.post(
            f"{API}/pumps/{pump.pk}/explant/", {"explanted_on": "2026-02-01", "withdrawal_plan": plan}, format="json"
        )
    assert response.status_code == 400
    assert response.json() == errors
    assert not Pump.objects.filter(pk=pump.pk, explanted_on__isnull=False).exists()


def test_explant_with_an_oral_bridge_or_no_plan(api, pump, clinic):
    other = make_pump(make_patient(clinic, mrn="MRN-2"), serial="SN-2")
    with travel(NOW):
        bridged = api.post(f"{API}/pumps/{pump.pk}/explant/", {
            "explanted_on": "2026-02-01",
            "withdrawal_plan": {"plan": "oral_bridge", "oral_bridge_dose": " 10 mg four times a day "},
        }, format="json")
        unplanned = api.post(f"{API}/pumps/{other.pk}/explant/", {
            "explanted_on": "2026-02-02", "withdrawal_plan": {"plan": "none", "reason": "patient declined"},
        }, format="json")
    assert bridged.status_code == 200, bridged.json()
    assert {k: bridged.json()["withdrawal_plan"][k] for k in ("plan", "oral_bridge_dose", "reason")} == {
        "plan": "oral_bridge", "oral_bridge_dose": "10 mg four times a day", "reason": "",
    }
    assert unplanned.status_code == 200, unplanned.json()
    assert {k: unplanned.json()["withdrawal_plan"][k] for k in ("plan", "oral_bridge_dose", "reason")} == {
        "plan": "none", "oral_bridge_dose": "", "reason": "patient declined",
    }
    (alert,) = unplanned.json()["open_alerts"]
    assert (alert["kind"], alert["severity"]) == ("withdrawal_risk", "critical")
    listed = {p["id"]: p["withdrawal_plan"] for p in api.get(f"{API}/pumps/", {"implanted": "false"}).json()["results"]}
    assert listed == {pump.pk: bridged.json()["withdrawal_plan"], other.pk: unplanned.json()["withdrawal_plan"]}
    assert api.get(f"{API}/pumps/{other.pk}/").json()["withdrawal_plan"] == unplanned.json()["withdrawal_plan"]


def test_projection_of_an_incomplete_pump_has_null_numbers(api, pump):
    response = api.get(f"{API}/pumps/{pump.pk}/projection/", {"at": "2026-02-01T00:00:00Z"})
    assert response.status_code == 200
    assert response.json() == {
        "at": "2026-01-31T18:00:00-06:00",
        "status": "incomplete",
        "status_reason": "incomplete: no fill, or no program in force, to project from",
        "reservoir_volume_ml": None,
        "daily_volume_ml": None,
        "worst_case_daily_volume_ml": None,
        "low_reservoir_alarm_at": None,
        "empty_at": None,
        "expected_low_reservoir_alarm_at": None,
        "expected_empty_at": None,
        "drug_expires_at": None,
        "refill_due_on": None,
    }


def test_projection_defaults_to_now(api, pump):
    with travel(AFTER_REFILL):
        api.post(f"{API}/refills/", worked_example_refill(pump.pk), format="json")
    with travel(datetime(2026, 4, 19, 12, 0, tzinfo=CHICAGO)):
        response = api.get(f"{API}/pumps/{pump.pk}/projection/")
    assert response.json()["at"] == "2026-04-19T12:00:00-05:00"
    assert response.json()["status"] == "alarm"
    # 76 d 2 h of real time after the refill (76 d 3 h of wall clock: DST) at 0.45 mL/day.
    assert response.json()["reservoir_volume_ml"] == "1.763"


@pytest.mark.parametrize(
    ("at", "message"),
    [
        ("2026-03-28T12:00:00", "Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z)."),
        ("yesterday", "Datetime has wrong format: use ISO 8601 with an offset, for example "
                      "2026-02-02T09:00:00-06:00 or 2026-02-02T15:00:00Z."),
    ],
)
def test_projection_at_must_have_an_offset(api, pump, at, message):
    response = api.get(f"{API}/pumps/{pump.pk}/projection/", {"at": at})
    assert response.status_code == 400
    assert response.json() == {"at": [message]}


def test_filters(api, pump, clinic):
    second = make_pump(make_patient(clinic, mrn="MRN002"), serial="SN-0002")
    Pump.objects.filter(pk=pump.pk).update(**stored_status("due_soon"), refill_due_on=date(2026, 4, 10))
    Pump.objects.filter(pk=second.pk).update(**stored_status("alarm"), refill_due_on=date(2026, 3, 1))

    def ids(**params):
        return [p["id"] for p in api.get(f"{API}/pumps/", params).json()["results"]]

    assert ids() == [pump.pk, second.pk]
    assert ids(status="alarm") == [second.pk]
    assert ids(status="alarm,due_soon") == [pump.pk, second.pk]
    assert ids(due_before="2026-04-09") == [second.pk]
    assert ids(due_before="2026-04-10") == [pump.pk, second.pk]
    assert ids(due_after="2026-03-02") == [pump.pk]
    assert ids(mrn="MRN002") == [second.pk]
    assert ids(serial_number="SN-0001") == [pump.pk]
    assert ids(patient=second.patient_id) == [second.pk]
    assert ids(implanted="false") == []
    assert api.get(f"{API}/pumps/", {"status": "late"}).json() == {
        "status": ["Unknown status late: use empty, alarm, overdue, due_soon, ok, incomplete, inactive."]
    }
    assert api.get(f"{API}/pumps/", {"due_before": "10/04/2026"}).json() == {"due_before": ["Enter a valid date."]}
    assert api.get(f"{API}/pumps/", {"due_before": "2026-4-1x"}).status_code == 400


def test_pagination_envelope(api, clinic):
    for i in range(3):
        make_pump(make_patient(clinic, mrn=f"P{i}"), serial=f"P{i}")
    body = api.get(f"{API}/pumps/", {"page_size": 2}).json()
    assert body["count"] == 3
    assert body["next"] == "http://testserver/api/v1/pumps/?page=2&page_size=2"
    assert body["previous"] is None
    assert len(body["results"]) == 2


def test_another_clinics_pump_is_404(pump, other_clinic):
    api, _ = token_client(other_clinic, name="South EHR")
    for url in (f"{API}/pumps/{pump.pk}/", f"{API}/pumps/{pump.pk}/projection/"):
        response = api.get(url)
        assert response.status_code == 404
        assert response.json() == {"detail": "No Pump matches the given query.", "code": "not_found"}
    assert api.get(f"{API}/pumps/").json()["count"] == 0


def test_worklist_sorts_by_urgency_then_due_date(api, clinic, other_clinic):
    layout = [
        ("ok", date(2026, 6, 1)), ("incomplete", None), ("alarm", date(2026, 3, 1)), ("due_soon", date(2026, 4, 10)),
        ("empty", date(2026, 2, 20)), ("overdue", date(2026, 3, 5)), ("due_soon", date(2026, 4, 3)),
        ("inactive", None),
    ]
    pumps = []
    for i, (status, due) in enumerate(layout):
        pump = make_pump(make_patient(clinic, mrn=f"W{i}"), serial=f"W{i}")
        Pump.objects.filter(pk=pump.pk).update(**stored_status(status), refill_due_on=due)
        pumps.append(pump)
    explanted = make_pump(make_patient(clinic, mrn="GONE"), serial="GONE")
    services.explant_pump(pump=explanted, explanted_on=date(2026, 1, 16), actor=services.Actor.system(),
                          withdrawal_plan="taper_completed", now=datetime(2026, 1, 17, tzinfo=CHICAGO))
    make_pump(make_patient(other_clinic, mrn="S1"), serial="S1")
    with travel(datetime(2026, 3, 1, 9, tzinfo=CHICAGO)):
        Appointment.objects.create(pump=pumps[3], scheduled_for=datetime(2026, 4, 8, 9, tzinfo=CHICAGO))
        body = api.get(f"{API}/worklist/").json()
    order = [(r["status"], r["refill_due_on"]) for r in body["results"]]
    assert order == [
        ("empty", "2026-02-20"), ("alarm", "2026-03-01"), ("overdue", "2026-03-05"), ("due_soon", "2026-04-03"),
        ("due_soon", "2026-04-10"), ("ok", "2026-06-01"), ("incomplete", None), ("inactive", None),
    ]
    due_soon = body["results"][4]
    assert due_soon["id"] == pumps[3].pk
    assert due_soon["days_to_due"] == 40
    assert due_soon["next_appointment_at"] == "2026-04-08T09:00:00-05:00"
    assert due_soon["patient"] == {
        "id": pumps[3].patient_id, "mrn": "W3", "initials": "AG", "withdrawal_high_risk": False, "status": "active",
    }
    assert api.get(f"{API}/worklist/", {"status": "empty,alarm"}).json()["count"] == 2


def test_worklist_and_list_query_counts_do_not_grow(api, clinic, django_assert_max_num_queries):
    def add(start, count):
        for i in range(start, start + count):
            pump = make_pump(make_patient(clinic, mrn=f"N{i}"), serial=f"N{i}")
            Appointment.objects.create(pump=pump, scheduled_for=datetime(2027, 1, 1, tzinfo=CHICAGO) + timedelta(i))

    add(0, 2)
    with travel(QUERY_CLOCK):
        api.get(f"{API}/worklist/")
        counts = {}
        for url in (f"{API}/worklist/", f"{API}/pumps/"):
            with CaptureQueriesContext(connection) as queries:
                assert api.get(url).json()["count"] == 2
            counts[url] = len(queries.captured_queries)
        add(2, 15)
        for url, count in counts.items():
            with django_assert_max_num_queries(count):
                assert api.get(url).json()["count"] == 17


def test_decimal_alarm_values_are_strings(api, pump):
    Pump.objects.filter(pk=pump.pk).update(low_reservoir_alarm_ml=Decimal("2.5"))
    assert api.get(f"{API}/pumps/{pump.pk}/").json()["low_reservoir_alarm_ml"] == "2.500"


def test_clinic_offset_follows_the_clinic(db):
    sydney = make_clinic(code="syd", name="Sydney", timezone="Australia/Sydney")
    pump = make_pump(make_patient(sydney, mrn="AU1"), serial="AU1")
    api, _ = token_client(sydney)
    body = api.get(f"{API}/pumps/{pump.pk}/projection/", {"at": "2026-02-01T00:00:00Z"}).json()
    assert body["at"] == "2026-02-01T11:00:00+11:00"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="plans are PostgreSQL's")
@pytest.mark.parametrize("params", [{}, {"status": "ok"}, {"status": "alarm,empty"}, {"clinic": "north"},
                                    {"clinic": "north", "status": "due_soon"}])
def test_a_worklist_page_is_a_range_of_the_clinics_worklist_index(api, clinic, params):
    """The status filter is its rank (``urgency``) and the clinic filter the clinic's id,
    the columns ``pump_clinic_urgency_idx`` starts with: a page is read from the index in
    the worklist's order, not found by walking every pump of the clinic (at 100k pumps a
    page of "ok" pumps took 45 ms, 19 with the index)."""
    for i, status in enumerate(["ok", "alarm", "empty", "due_soon"]):
        pump = make_pump(make_patient(clinic, mrn=f"I{i}"), serial=f"I{i}")
        Pump.objects.filter(pk=pump.pk).update(**stored_status(status), refill_due_on=date(2026, 4, 1 + i))
    with CaptureQueriesContext(connection) as captured:
        body = api.get(f"{API}/worklist/", params).json()
    wanted = set(params.get("status", "ok,alarm,empty,due_soon").split(","))
    assert {row["status"] for row in body["results"]} == wanted and body["count"] == len(wanted)
    [sql] = [q["sql"] for q in captured.captured_queries if 'ORDER BY "pumps_pump"."urgency" ASC' in q["sql"]]
    assert '"clinic_clinic"."code" =' not in sql and '"pumps_pump"."status" IN' not in sql
    plan = query_plan(sql)
    assert "pump_clinic_urgency_idx" in plan and "Sort Key" not in plan.split("SubPlan")[0], plan


def test_worklist_count_is_the_number_of_pumps_listed_whatever_the_filters(api, clinic, other_clinic):
    # Without filters, or with status and clinic only, the count comes from the status
    # tally; with any other filter the rows are counted. Both give the rows listed.
    statuses = ["ok", "ok", "alarm", "due_soon", "empty", "incomplete"]
    for i, status in enumerate(statuses):
        pump = make_pump(make_patient(clinic, mrn=f"C{i}"), serial=f"C{i}")
        Pump.objects.filter(pk=pump.pk).update(**stored_status(status), refill_due_on=date(2026, 4, 1 + i))
    make_pump(make_patient(other_clinic, mrn="OTHER"), serial="OTHER")  # not the client's clinic
    gone = make_pump(make_patient(clinic, mrn="GONE"), serial="GONE")
    Pump.objects.filter(pk=gone.pk).update(explanted_on=date(2026, 2, 1))
    for params, expected in [
        ({}, 6), ({"status": "ok"}, 2), ({"status": "ok,alarm,ok"}, 3), ({"status": "inactive"}, 0),
        ({"clinic": clinic.code}, 6), ({"clinic": other_clinic.code}, 0), ({"clinic": "nowhere"}, 0),
        ({"status": "empty", "clinic": clinic.code}, 1), ({"due_before": "2026-04-02"}, 2),
        ({"serial_number": "C3"}, 1), ({"page_size": 2}, 6), ({"page_size": 2, "page": 3}, 6),
    ]:
        body = api.get(f"{API}/worklist/", params).json()
        assert body["count"] == expected, params
        if "page_size" not in params:
            assert len(body["results"]) == expected, params
    assert api.get(f"{API}/worklist/", {"page_size": 2, "page": 4}).status_code == 404
