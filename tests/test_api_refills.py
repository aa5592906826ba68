"""POST/GET /api/v1/refills/: the worked example (docs/clinical-rules.md §12) end to end, residual checks,
duplicates, If-Match, decimals, datetimes, voids."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pumps import services
from pumps.models import Program, Pump, Refill
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
from tests.factories import make_clinic, make_patient, make_pump, make_user

NO_OFFSET = "Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z)."
SECOND_REFILL_NOW = datetime(2026, 3, 2, 10, 0, tzinfo=CHICAGO)


@pytest.fixture
def api(clinic):
    return token_client(clinic)[0]


@pytest.fixture
def filled(api, pump):
    """The worked example's first fill, recorded over the API."""
    with travel(AFTER_REFILL):
        response = api.post(f"{API}/refills/", worked_example_refill(pump.pk), format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def second_refill(pump_id, **overrides):
    body = {
        "pump": pump_id,
        "performed_at": "2026-03-02T09:00:00-06:00",
        "extracted_volume_ml": "20.0",
        "added_volume_ml": "30",
        "concentration_mcg_per_ml": 1000,
    }
    body.update(overrides)
    return body


def test_worked_example_end_to_end_over_the_api(db, clinic):
    """The worked example (docs/clinical-rules.md §12): America/Chicago, 8637-40, 36 mL of 1000 mcg/mL at 450 mcg/day."""
    api, _ = token_client(clinic)
    with travel(AFTER_REFILL):
        patient = api.post(
            f"{API}/patients/",
            {"mrn": "E-48", "family_name": "Example", "given_name": "Worked", "birth_date": "1970-01-01",
             "spasticity_origin": "spinal", "withdrawal_high_risk": False},
            format="json",
        )
        assert patient.status_code == 201, patient.json()
        pump = api.post(
            f"{API}/pumps/",
            {"patient": patient.json()["id"], "model": "8637-40", "serial_number": "NGP123456",
             "implanted_on": "2026-01-15"},
            format="json",
        )
        assert pump.status_code == 201, pump.json()
        pump_id = pump.json()["id"]
        refill = api.post(f"{API}/refills/", worked_example_refill(pump_id), format="json")
    assert refill.status_code == 201, refill.json()
    assert refill.json()["program"]["daily_volume_ml"] == "0.450"

    projection = api.get(f"{API}/pumps/{pump_id}/projection/", {"at": "2026-03-28T12:00:00-05:00"})
    assert projection.status_code == 200
    assert projection.json() == {
        "at": "2026-03-28T12:00:00-05:00",
        "status": "due_soon",
        "status_reason": "due soon: refill due on 2026-04-10 (in 13 days); low-reservoir alarm 2026-04-18 23:20 CDT "
        "(in 21 days)",
        "reservoir_volume_ml": "11.663",
        "daily_volume_ml": "0.450",
        "worst_case_daily_volume_ml": "0.450",
        "low_reservoir_alarm_at": "2026-04-18T23:20:00-05:00",
        "empty_at": "2026-04-23T10:00:00-05:00",
        "expected_low_reservoir_alarm_at": "2026-04-18T23:20:00-05:00",
        "expected_empty_at": "2026-04-23T10:00:00-05:00",
        "drug_expires_at": "2026-08-01T10:00:00-05:00",
        "refill_due_on": "2026-04-10",
    }
    earlier = api.get(f"{API}/pumps/{pump_id}/projection/", {"at": "2026-03-20T12:00:00-05:00"})
    assert (earlier.json()["status"], earlier.json()["status_reason"]) == (
        "ok", "ok: refill due on 2026-04-10 (in 21 days); low-reservoir alarm 2026-04-18 23:20 CDT (in 29 days)"
    )
    stored = api.get(f"{API}/pumps/{pump_id}/").json()
    assert (stored["low_reservoir_alarm_at"], stored["empty_at"], stored["refill_due_on"]) == (
        "2026-04-18T23:20:00-05:00", "2026-04-23T10:00:00-05:00", "2026-04-10",
    )


def test_first_fill_response_has_no_residual_check(filled, pump):
    assert filled["pump"] == pump.pk
    assert filled["performed_at"] == "2026-02-02T09:00:00-06:00"
    assert filled["extracted_volume_ml"] is None
    assert filled["added_volume_ml"] == "36.000"
    assert filled["volume_after_ml"] == "36.000"
    assert filled["concentration_mcg_per_ml"] == "1000.000"
    assert filled["drug_product"] == "gablofen-1000"
    assert filled["stability_days"] == 180
    assert (filled["expected_residual_ml"], filled["discrepancy_ml"], filled["discrepancy_flagged"]) == (None, None, False)
    assert filled["refilled_after_empty"] is False
    assert filled["flags"] == []
    assert filled["performed_by"] == "nina"
    assert filled["program"]["daily_dose_mcg"] == "450.000"
    assert filled["program"]["effective_at"] == "2026-02-02T09:00:00-06:00"


def test_second_refill_computes_expected_residual_and_flags_a_discrepancy(api, filled, pump):
    with travel(SECOND_REFILL_NOW):
        response = api.post(f"{API}/refills/", second_refill(pump.pk), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    # 28 days at 0.45 mL/day: 36 - 12.6 = 23.4 mL expected; 20.0 drawn back.
    assert body["expected_residual_ml"] == "23.400"
    assert body["discrepancy_ml"] == "-3.400"
    assert body["discrepancy_flagged"] is True
    assert body["flags"] == [
        "less drug than expected remained: suggests over-infusion, a leak or an earlier pocket fill"
    ]
    assert body["volume_after_ml"] == "30.000"
    assert body["program"] is None


def test_probable_duplicate_is_409_until_confirmed(api, filled, pump):
    body = second_refill(pump.pk, performed_at="2026-02-02T09:30:00-06:00", extracted_volume_ml="35.99",
                         added_volume_ml="4")
    with travel(AFTER_REFILL):
        refused = api.post(f"{API}/refills/", body, format="json")
        assert refused.status_code == 409
        assert refused.json() == {
            "detail": "Another refill of this pump was recorded at 2026-02-02 09:00 (within 60 minutes): "
            "probably a duplicate. Send confirm_duplicate: true if this is really a second refill.",
            "code": "probable_duplicate",
        }
        assert Refill.objects.count() == 1
        confirmed = api.post(f"{API}/refills/", {**body, "confirm_duplicate": True}, format="json")
    assert confirmed.status_code == 201, confirmed.json()
    assert confirmed.json()["expected_residual_ml"] == "35.991"
    assert confirmed.json()["discrepancy_ml"] == "-0.001"
    assert Refill.objects.count() == 2


def test_stale_if_match_is_412_and_saves_nothing(api, filled, pump):
    version = api.get(f"{API}/pumps/{pump.pk}/").json()["version"]
    assert version == 2
    with travel(SECOND_REFILL_NOW):
        stale = api.post(f"{API}/refills/", second_refill(pump.pk), format="json", HTTP_IF_MATCH='"1"')
        assert stale.status_code == 412
        assert stale.json() == {
            "detail": "The pump changed meanwhile (version 2, not 1): reload it and try again.",
            "code": "stale_version",
        }
        assert Refill.objects.count() == 1
        fresh = api.post(f"{API}/refills/", second_refill(pump.pk), format="json", HTTP_IF_MATCH='"2"')
    assert fresh.status_code == 201
    assert Pump.objects.get(pk=pump.pk).version == 3


def test_malformed_if_match_is_400(api, filled, pump):
    with travel(SECOND_REFILL_NOW):
        response = api.post(f"{API}/refills/", second_refill(pump.pk), format="json", HTTP_IF_MATCH="abc")
    assert response.status_code == 400
    assert response.json() == {"If-Match": ['Send the pump\'s version (its ETag), for example 3 or "3".']}


def test_datetime_without_offset_is_400(api, pump):
    with travel(AFTER_REFILL):
        response = api.post(
            f"{API}/refills/", worked_example_refill(pump.pk, performed_at="2026-02-02T09:00:00"), format="json"
        )
    assert response.status_code == 400
    assert response.json() == {"performed_at": [NO_OFFSET]}
    assert not Refill.objects.exists()


def test_datetime_in_utc_is_answered_in_the_clinic_offset(api, pump):
    with travel(AFTER_REFILL):
        response = api.post(
            f"{API}/refills/", worked_example_refill(pump.pk, performed_at="2026-02-02T15:00:00Z"), format="json"
        )
    assert response.status_code == 201
    assert response.json()["performed_at"] == "2026-02-02T09:00:00-06:00"


def test_unparseable_datetime_is_400(api, pump):
    with travel(AFTER_REFILL):
        response = api.post(
            f"{API}/refills/", worked_example_refill(pump.pk, performed_at="2 Feb 2026 9am"), format="json"
        )
    assert response.status_code == 400
    assert response.json() == {
        "performed_at": [
            "Datetime has wrong format: use ISO 8601 with an offset, for example 2026-02-02T09:00:00-06:00 "
            "or 2026-02-02T15:00:00Z."
        ]
    }


def test_decimals_of_any_scale_are_rounded_half_up_to_0_001(api, pump):
    body = worked_example_refill(
        pump.pk, added_volume_ml="1.23456", bridge_bolus_ml=0.0005, concentration_mcg_per_ml=1000.0004,
    )
    with travel(AFTER_REFILL):
        response = api.post(f"{API}/refills/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["added_volume_ml"] == "1.235"
    assert response.json()["bridge_bolus_ml"] == "0.001"
    assert response.json()["volume_after_ml"] == "1.234"
    assert response.json()["concentration_mcg_per_ml"] == "1000.000"
    refill = Refill.objects.get()
    assert refill.added_volume_ml == Decimal("1.235")
    assert refill.bridge_bolus_ml == Decimal("0.001")


@pytest.mark.parametrize("bad", ["abc", "NaN", True, [], "1e2000"])
def test_a_value_that_is_not_a_number_is_400(api, pump, bad):
    with travel(AFTER_REFILL):
        response = api.post(f"{API}/refills/", worked_example_refill(pump.pk, added_volume_ml=bad), format="json")
    assert response.status_code == 400
    message = ("Ensure that there are no more than 6 digits before the decimal point." if bad == "1e2000"
               else "A valid number is required.")
    assert response.json() == {"added_volume_ml": [message]}


def test_volume_above_capacity_is_a_field_error(api, pump):
    with travel(AFTER_REFILL):
        response = api.post(f"{API}/refills/", worked_example_refill(pump.pk, added_volume_ml="40.5"), format="json")
    assert response.status_code == 400
    assert response.json() == {
        "added_volume_ml": ["The volume after the refill (40.5 mL) exceeds the reservoir capacity of 40 mL."]
    }


def test_first_fill_with_an_extracted_volume_is_refused(api, pump):
    with travel(AFTER_REFILL):
        response = api.post(
            f"{API}/refills/", worked_example_refill(pump.pk, extracted_volume_ml="1"), format="json"
        )
    assert response.status_code == 400
    assert response.json() == {
        "extracted_volume_ml": ["A first fill after implant has no extracted volume: leave it empty."]
    }


def test_embedded_program_errors_are_dotted_keys(api, pump):
    body = worked_example_refill(pump.pk)
    body["program"] = {"concentration_mcg_per_ml": 500, "mode": "continuous", "daily_dose_mcg": 450}
    with travel(AFTER_REFILL):
        service_error = api.post(f"{API}/refills/", body, format="json")
        body["program"] = {"concentration_mcg_per_ml": 1000, "mode": "bolus"}
        parse_error = api.post(f"{API}/refills/", body, format="json")
    assert service_error.status_code == 400
    assert service_error.json() == {
        "program.concentration_mcg_per_ml": [
            "The new program's concentration differs from the refill's: they must be the same drug."
        ]
    }
    assert parse_error.status_code == 400
    assert parse_error.json() == {"program.mode": ['"bolus" is not a valid choice.']}
    assert not Refill.objects.exists() and not Program.objects.exists()


def test_concentration_change_without_a_program_is_refused(api, filled, pump):
    with travel(SECOND_REFILL_NOW):
        response = api.post(f"{API}/refills/", second_refill(pump.pk, concentration_mcg_per_ml=2000), format="json")
    assert response.status_code == 400
    assert response.json() == {
        "concentration_mcg_per_ml": [
            "The program in force is at 1000 mcg/mL: a concentration change needs a new program and a bridge bolus."
        ]
    }


def test_unknown_drug_product_is_a_field_error(api, pump):
    with travel(AFTER_REFILL):
        response = api.post(f"{API}/refills/", worked_example_refill(pump.pk, drug_product="nope"), format="json")
    assert response.status_code == 400
    assert response.json() == {"drug_product": ['Unknown drug product code "nope".']}


def test_malformed_json_is_400_and_wrong_content_type_415(api, pump):
    with travel(AFTER_REFILL):
        malformed = api.post(f"{API}/refills/", data='{"pump": 1,', content_type="application/json")
        text = api.post(f"{API}/refills/", data="pump=1", content_type="text/plain")
    assert malformed.status_code == 400
    assert malformed.json() == {
        "non_field_errors": ["JSON parse error - Expecting property name enclosed in double quotes: line 1 column 12 (char 11)"]
    }
    assert text.status_code == 415
    assert text.json() == {"detail": 'Unsupported media type "text/plain" in request.', "code": "unsupported_media_type"}


def test_void_takes_the_refill_and_its_program_out_of_the_projection(api, filled, pump):
    with travel(AFTER_REFILL):
        missing_reason = api.post(f"{API}/refills/{filled['id']}/void/", {}, format="json")
        voided = api.post(f"{API}/refills/{filled['id']}/void/", {"reason": "entered on the wrong pump"}, format="json")
    assert missing_reason.status_code == 400
    assert missing_reason.json() == {"reason": ["Give the reason for voiding this record."]}
    assert voided.status_code == 200
    assert voided.json()["voided_at"] == "2026-02-02T10:00:00-06:00"
    assert voided.json()["void_reason"] == "entered on the wrong pump"
    assert voided.json()["program"]["voided_at"] == "2026-02-02T10:00:00-06:00"
    projection = api.get(f"{API}/pumps/{pump.pk}/projection/", {"at": "2026-03-28T12:00:00-05:00"}).json()
    assert projection["status"] == "incomplete"
    assert projection["reservoir_volume_ml"] is None and projection["refill_due_on"] is None
    assert api.get(f"{API}/refills/").json()["count"] == 0
    assert api.get(f"{API}/refills/", {"include_voided": "true"}).json()["count"] == 1
    with travel(AFTER_REFILL):
        again = api.post(f"{API}/refills/{filled['id']}/void/", {"reason": "twice"}, format="json")
    assert again.status_code == 400
    assert again.json() == {"non_field_errors": ["This record is already voided."]}


def test_nurse_session_records_a_refill_but_not_an_embedded_program(pump, nurse, prescriber):
    api = session_client(nurse)
    with travel(AFTER_REFILL):
        with_program = api.post(f"{API}/refills/", worked_example_refill(pump.pk), format="json")
        assert with_program.status_code == 403
        assert with_program.json() == {
            "detail": "Only a prescriber (physician) enters, verifies or voids a program.", "code": "permission_denied",
        }
        by_prescriber = session_client(prescriber).post(
            f"{API}/refills/", worked_example_refill(pump.pk, performed_by=None), format="json"
        )
    assert by_prescriber.status_code == 201
    assert by_prescriber.json()["performed_by"] == "dr_pat"
    assert by_prescriber.json()["program"]["entered_by"] == "dr_pat"


def test_list_filters_by_pump_patient_and_flag(api, filled, pump, clinic):
    other_patient = make_patient(clinic, mrn="MRN002")
    other_pump = make_pump(other_patient, serial="SN-0002")
    with travel(AFTER_REFILL):
        services.record_refill(
            pump=other_pump, performed_at=datetime(2026, 2, 2, 8, tzinfo=CHICAGO), added_volume_ml=Decimal(20),
            concentration_mcg_per_ml=Decimal(500), actor=services.Actor.system("test"),
        )
    assert api.get(f"{API}/refills/").json()["count"] == 2
    by_pump = api.get(f"{API}/refills/", {"pump": pump.pk}).json()
    assert [r["id"] for r in by_pump["results"]] == [filled["id"]]
    assert api.get(f"{API}/refills/", {"patient": other_patient.pk}).json()["results"][0]["pump"] == other_pump.pk
    assert api.get(f"{API}/refills/", {"mrn": "MRN002"}).json()["count"] == 1
    assert api.get(f"{API}/refills/", {"serial_number": "SN-0001"}).json()["count"] == 1
    assert api.get(f"{API}/refills/", {"discrepancy_flagged": "true"}).json()["count"] == 0
    assert api.get(f"{API}/refills/", {"pump": "x"}).json() == {"pump": ["Enter a whole number."]}


def test_list_query_count_does_not_grow_with_rows(db, clinic, django_assert_max_num_queries):
    api, _ = token_client(clinic)
    prescriber = make_user("doc", clinic, "prescriber")

    def add_pumps(start, count):
        for i in range(start, start + count):
            pump = make_pump(make_patient(clinic, mrn=f"Q{i}"), serial=f"Q{i}")
            services.record_refill(
                pump=pump, performed_at=datetime(2026, 2, 2, 8, tzinfo=CHICAGO), added_volume_ml=Decimal(20),
                concentration_mcg_per_ml=Decimal(500), actor=services.Actor(prescriber), performed_by="doc",
                program=services.ProgramInput(concentration_mcg_per_ml=Decimal(500), daily_dose_mcg=Decimal(100),
                                              entered_by="doc"),
                now=AFTER_REFILL,
            )

    add_pumps(0, 2)
    with travel(QUERY_CLOCK):
        api.get(f"{API}/refills/")  # the token's first use also stamps last_used_at
        with CaptureQueriesContext(connection) as few:
            assert api.get(f"{API}/refills/").json()["count"] == 2
        baseline = len(few.captured_queries)
        add_pumps(2, 10)
        with django_assert_max_num_queries(baseline):
            response = api.get(f"{API}/refills/")
    assert response.json()["count"] == 12
    assert response.json()["results"][0]["program"]["entered_by"] == "doc"


def test_write_naming_another_clinics_pump_is_the_same_400_as_a_missing_pump(api, db):
    south = make_clinic(code="south", name="South", timezone="Australia/Sydney")
    foreign = make_pump(make_patient(south, mrn="S1"), serial="S1")
    with travel(AFTER_REFILL):
        foreign_response = api.post(f"{API}/refills/", worked_example_refill(foreign.pk), format="json")
        missing_response = api.post(f"{API}/refills/", worked_example_refill(999999), format="json")
    assert foreign_response.status_code == missing_response.status_code == 400
    assert foreign_response.json() == {"pump": [f'Invalid pk "{foreign.pk}" - object does not exist.']}
    assert missing_response.json() == {"pump": ['Invalid pk "999999" - object does not exist.']}
    assert not Refill.objects.exists()
