"""What the API tells about a pump's safety: its open alerts and its status in words on
pump detail, pump list and worklist rows; a projection as of an instant that honours the
explant date; list reads logged in the access audit (one INSERT per page)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pumps.alerting.sweep import sweep
from pumps.models import Alert, PatientAccess, Pump
from tests.api_support import API, CHICAGO, QUERY_CLOCK, token_client, travel, worked_example_refill
from tests.factories import make_patient, make_pump

LRA = datetime(2026, 4, 18, 23, 20, tzinfo=CHICAGO)  # the worked example's worst-case alarm
SWEPT = LRA + timedelta(minutes=40)


@pytest.fixture
def api(clinic):
    return token_client(clinic)[0]


@pytest.fixture
def filled(api, pump):
    with travel(datetime(2026, 2, 2, 10, tzinfo=CHICAGO)):
        assert api.post(f"{API}/refills/", worked_example_refill(pump.pk), format="json").status_code == 201
    return pump


@pytest.fixture
def alarm(filled):
    sweep(SWEPT)
    return filled


# ------------------------------------------------------------------- open alerts


def test_pump_detail_lists_its_open_alerts_most_severe_first(api, alarm):
    # most severe first; newest first within a severity (same instant here: the higher id)
    low = Alert.objects.get(kind="low_reservoir")
    overdue = Alert.objects.get(kind="refill_overdue")
    unverified = Alert.objects.get(kind="unverified_program")
    with travel(SWEPT):
        body = api.get(f"{API}/pumps/{alarm.pk}/").json()
    assert body["open_alerts"] == [
        {"id": low.pk, "kind": "low_reservoir", "severity": "critical", "raised_at": "2026-04-19T00:00:00-05:00",
         "acknowledged_at": None, "acknowledged_by": None, "acknowledgement_reason": ""},
        {"id": unverified.pk, "kind": "unverified_program", "severity": "warning",
         "raised_at": "2026-04-19T00:00:00-05:00", "acknowledged_at": None, "acknowledged_by": None,
         "acknowledgement_reason": ""},
        {"id": overdue.pk, "kind": "refill_overdue", "severity": "warning",
         "raised_at": "2026-04-19T00:00:00-05:00", "acknowledged_at": None, "acknowledged_by": None,
         "acknowledgement_reason": ""},
    ]
    assert body["status"] == "alarm"
    assert body["status_reason"] == (
        "at the low-reservoir alarm since 2026-04-18 23:20 CDT (40 minutes ago) (worst case); "
        "empty 2026-04-23 10:00 CDT (in 4 days)"
    )


def test_an_acknowledged_alert_stays_listed_with_who_and_why(api, alarm, clinic):
    low = Alert.objects.get(kind="low_reservoir")
    with travel(SWEPT + timedelta(minutes=5)):
        assert api.post(
            f"{API}/alerts/{low.pk}/acknowledge/", {"reason": "Refill booked at 08:00."}, format="json"
        ).status_code == 200
        rows = api.get(f"{API}/worklist/").json()["results"]
    assert rows[0]["open_alerts"][0] == {
        "id": low.pk, "kind": "low_reservoir", "severity": "critical", "raised_at": "2026-04-19T00:00:00-05:00",
        "acknowledged_at": "2026-04-19T00:05:00-05:00", "acknowledged_by": "api client EHR",
        "acknowledgement_reason": "Refill booked at 08:00.",
    }


def test_resolved_alerts_are_not_listed(api, alarm):
    Alert.objects.filter(pump=alarm).update(resolved_at=SWEPT)
    with travel(SWEPT):
        assert api.get(f"{API}/pumps/{alarm.pk}/").json()["open_alerts"] == []
        assert api.get(f"{API}/pumps/").json()["results"][0]["open_alerts"] == []


def test_worklist_and_pump_list_rows_carry_alerts_and_reasons(api, alarm, clinic):
    quiet = make_pump(make_patient(clinic, mrn="Q1"), serial="Q1")
    with travel(SWEPT):
        worklist = api.get(f"{API}/worklist/").json()["results"]
        pumps = api.get(f"{API}/pumps/").json()["results"]
    assert [(r["id"], r["status"], [a["kind"] for a in r["open_alerts"]]) for r in worklist] == [
        (alarm.pk, "alarm", ["low_reservoir", "unverified_program", "refill_overdue"]),
        (quiet.pk, "incomplete", []),
    ]
    assert worklist[1]["status_reason"] == "incomplete: no fill, or no program in force, to project from"
    assert {r["id"]: len(r["open_alerts"]) for r in pumps} == {alarm.pk: 3, quiet.pk: 0}


def test_explanted_pump_reason_names_the_date(api, pump):
    with travel(datetime(2026, 2, 2, 10, tzinfo=CHICAGO)):
        api.post(f"{API}/pumps/{pump.pk}/explant/", {"explanted_on": "2026-02-01"}, format="json")
        body = api.get(f"{API}/pumps/{pump.pk}/").json()
    assert (body["status"], body["status_reason"]) == ("inactive", "inactive: explanted on 2026-02-01")


# ------------------------------------------------------------ projection at an instant


def test_projection_before_the_explant_projects_from_the_records(api, filled):
    with travel(datetime(2026, 3, 30, 10, tzinfo=CHICAGO)):
        assert api.post(
            f"{API}/pumps/{filled.pk}/explant/", {"explanted_on": "2026-03-30", "reason": "infection"}, format="json"
        ).status_code == 200
        before = api.get(f"{API}/pumps/{filled.pk}/projection/", {"at": "2026-03-29T23:59:00-05:00"}).json()
        on_the_day = api.get(f"{API}/pumps/{filled.pk}/projection/", {"at": "2026-03-30T00:00:00-05:00"}).json()
        after = api.get(f"{API}/pumps/{filled.pk}/projection/", {"at": "2026-04-20T12:00:00-05:00"}).json()
    assert before == {
        "at": "2026-03-29T23:59:00-05:00",
        "status": "due_soon",
        "status_reason": "due soon: refill due on 2026-04-10 (in 12 days); low-reservoir alarm 2026-04-18 23:20 CDT "
        "(in 19 days)",
        # 55 d 13 h 59 min after the refill at 0.45 mL/day: 36 - 25.012
        "reservoir_volume_ml": "10.988",
        "daily_volume_ml": "0.450",
        "worst_case_daily_volume_ml": "0.450",
        "low_reservoir_alarm_at": "2026-04-18T23:20:00-05:00",
        "empty_at": "2026-04-23T10:00:00-05:00",
        "expected_low_reservoir_alarm_at": "2026-04-18T23:20:00-05:00",
        "expected_empty_at": "2026-04-23T10:00:00-05:00",
        "drug_expires_at": "2026-08-01T10:00:00-05:00",
        "refill_due_on": "2026-04-10",
    }
    inactive = {
        "status": "inactive", "status_reason": "inactive: explanted on 2026-03-30", "reservoir_volume_ml": None,
        "daily_volume_ml": None, "worst_case_daily_volume_ml": None, "low_reservoir_alarm_at": None,
        "empty_at": None, "expected_low_reservoir_alarm_at": None, "expected_empty_at": None,
        "drug_expires_at": None, "refill_due_on": None,
    }
    assert on_the_day == {"at": "2026-03-30T00:00:00-05:00", **inactive}
    assert after == {"at": "2026-04-20T12:00:00-05:00", **inactive}


def test_projection_reason_comes_from_the_projection_not_the_stored_row(api, filled):
    # stored: due_soon as of today; asked about the day after the alarm: alarm
    body = api.get(f"{API}/pumps/{filled.pk}/projection/", {"at": "2026-04-19T12:00:00-05:00"}).json()
    assert (body["status"], body["status_reason"]) == (
        "alarm",
        "at the low-reservoir alarm since 2026-04-18 23:20 CDT (12 hours ago) (worst case); "
        "empty 2026-04-23 10:00 CDT (in 3 days)",
    )


# ------------------------------------------------------------------- query counts


@pytest.mark.parametrize("url", ["worklist", "pumps"])
def test_pump_rows_cost_the_same_queries_at_any_page_size(api, clinic, url):
    def add(start, count):
        for i in range(start, start + count):
            pump = make_pump(make_patient(clinic, mrn=f"N{i}"), serial=f"N{i}")
            Alert.objects.create(clinic=clinic, pump=pump, kind="battery_replacement", episode="180",
                                 severity="info", created_at=QUERY_CLOCK)

    add(0, 2)
    with travel(QUERY_CLOCK):
        api.get(f"{API}/{url}/")  # the token's last_used_at is stamped once a minute
        counts = []
        for total in (2, 17):
            if total == 17:
                add(2, 15)
            with CaptureQueriesContext(connection) as queries:
                assert api.get(f"{API}/{url}/").json()["count"] == total
            counts.append([q["sql"].split()[0] for q in queries.captured_queries])
    # the token, the count (worklist: from the status tally), the page, their open alerts
    # (one query), the access log (one INSERT)
    assert counts[0] == counts[1] == ["SELECT", "SELECT", "SELECT", "SELECT", "INSERT"]


# -------------------------------------------------------------------- access log


def test_list_reads_log_each_patient_shown_once_without_the_query_string(clinic, filled, other_clinic):
    api, client = token_client(clinic, write=False, name="Reader")
    second = make_pump(make_patient(clinic, mrn="MRN002"), serial="SN-2")
    make_pump(make_patient(other_clinic, mrn="S1"), serial="S1")  # another clinic's: never shown
    Pump.objects.filter(pk=second.pk).update(explanted_on=date(2026, 2, 1))
    with travel(QUERY_CLOCK):
        for path in ("patients", "pumps", "worklist", "refills", "programs", "readings", "events", "appointments",
                     "alerts"):
            assert api.get(f"{API}/{path}/", {"page_size": 50}).status_code == 200
        assert api.get(f"{API}/patients/", {"mrn": "MRN002"}).json()["count"] == 1
    rows = list(PatientAccess.objects.order_by("id").values_list("patient_id", "api_client_id", "channel", "path",
                                                                   "at"))
    p1, p2 = filled.patient_id, second.patient_id
    assert rows == [
        (p1, client.pk, "api", "/api/v1/patients/", QUERY_CLOCK), (p2, client.pk, "api", "/api/v1/patients/", QUERY_CLOCK),
        (p1, client.pk, "api", "/api/v1/pumps/", QUERY_CLOCK), (p2, client.pk, "api", "/api/v1/pumps/", QUERY_CLOCK),
        (p1, client.pk, "api", "/api/v1/worklist/", QUERY_CLOCK),  # the explanted pump is not on the worklist
        (p1, client.pk, "api", "/api/v1/refills/", QUERY_CLOCK),  # one refill, one program: one patient each
        (p1, client.pk, "api", "/api/v1/programs/", QUERY_CLOCK),
        (p2, client.pk, "api", "/api/v1/patients/", QUERY_CLOCK),  # ?mrn=MRN002: the path alone is kept
    ]


def test_fhir_searches_log_the_patients_shown(clinic, filled):
    api, client = token_client(clinic, write=False)
    with travel(QUERY_CLOCK):
        assert api.get("/fhir/r4/Device", {"patient": filled.patient_id}).json()["total"] == 1
        assert api.get("/fhir/r4/Flag").json()["total"] == 0  # no alert: no patient shown, no row
        assert api.get("/fhir/r4/MedicationAdministration", {"patient": filled.patient_id}).json()["total"] == 1
    assert list(PatientAccess.objects.order_by("id").values_list("patient_id", "channel", "path")) == [
        (filled.patient_id, "fhir", "/fhir/r4/Device"),
        (filled.patient_id, "fhir", "/fhir/r4/MedicationAdministration"),
    ]


def test_session_reads_are_logged_as_the_user(nurse, filled):
    from tests.api_support import session_client

    with travel(QUERY_CLOCK):
        assert session_client(nurse).get(f"{API}/pumps/").status_code == 200
    assert list(PatientAccess.objects.values_list("patient_id", "user_id", "api_client_id", "channel")) == [
        (filled.patient_id, nurse.pk, None, "api"),
    ]



@pytest.mark.parametrize(("url", "statements"), [
    # the token, the count, the page, and the access log's one INSERT of the patients shown
    ("patients", ["SELECT", "SELECT", "SELECT", "INSERT"]), ("refills", ["SELECT", "SELECT", "SELECT", "INSERT"]),
    ("programs", ["SELECT", "SELECT", "SELECT", "INSERT"]), ("alerts", ["SELECT", "SELECT", "SELECT", "INSERT"]),
    # nothing to list: the token and the count, no page, no patient shown, nothing logged
    ("readings", ["SELECT", "SELECT"]), ("events", ["SELECT", "SELECT"]), ("appointments", ["SELECT", "SELECT"]),
])
def test_other_lists_add_one_insert_when_they_show_a_patient(api, alarm, url, statements):
    with travel(QUERY_CLOCK):
        api.get(f"{API}/{url}/")  # the token's last_used_at is stamped once a minute
        with CaptureQueriesContext(connection) as queries:
            assert api.get(f"{API}/{url}/").status_code == 200
    assert [q["sql"].split()[0] for q in queries.captured_queries] == statements
