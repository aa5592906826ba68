# ruff: noqa: F811 - the fixtures of tests/test_alerts.py are imported and used by name
"""Dose and response through the services (docs/clinical-rules.md §15): visit assessments
(alone or with a refill), CNS-depressant co-medication and the confirmation of a dose
increase while one is active, and no stop of delivery without a withdrawal plan. Exact
messages; nothing half-saved; who acted from the actor."""

from datetime import date, datetime, timedelta
from decimal import Decimal as D

import pytest

from pumps import services as s
from pumps.errors import Forbidden, ServiceValidationError
from pumps.importer import import_clinic_csv
from pumps.models import (
    Alert,
    Assessment,
    CoMedication,
    Notification,
    Program,
    Pump,
    PumpModel,
    Refill,
    WithdrawalPlan,
)
from pumps.services import comedications as cm
from pumps.services import withdrawal as wd
from tests.conftest import CHICAGO
from tests.factories import make_user
from tests.test_admin import admin_client, local_days_ago, records, superuser  # noqa: F401 - fixtures
from tests.test_admin import url as admin_url
from tests.test_alerts import T0, WRITE_NOW, filled, recipients  # noqa: F401 - fixtures
from tests.test_import_csv import AFTER_REFILL, csv_text, row, travel

VISIT = datetime(2026, 2, 20, 10, 0, tzinfo=CHICAGO)
AFTER_VISIT = VISIT + timedelta(minutes=30)
RAISE_AT = datetime(2026, 2, 10, 9, 0, tzinfo=CHICAGO)


def refused(call) -> dict:
    with pytest.raises(ServiceValidationError) as caught:
        call()
    return caught.value.message_dict


def program(daily, **extra) -> s.ProgramInput:
    return s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(daily), **extra)


# -------------------------------------------------------------------- assessments


def test_an_assessment_is_saved_with_who_assessed_from_the_actor(filled, nurse):
    data = s.AssessmentInput(
        ashworth_upper_left="1+", ashworth_lower_right="3", penn_spasm_frequency=2, pain_score=4,
        goal_note="Walk to the bus stop", signs={"withdrawal_pruritus": False, "overdose_dizziness": False},
    )
    version = Pump.objects.get(pk=filled.pk).version
    saved = s.record_assessment(pump=filled, assessed_at=VISIT, data=data, actor=s.Actor(nurse), now=AFTER_VISIT)
    row_ = Assessment.objects.get()
    assert row_ == saved
    assert (row_.assessed_at, row_.assessed_by, row_.assessed_by_external, row_.refill) == (VISIT, nurse, "", None)
    assert (row_.ashworth_upper_left, row_.ashworth_upper_right, row_.ashworth_lower_left,
            row_.ashworth_lower_right) == ("1+", "", "", "3")
    assert (row_.penn_spasm_frequency, row_.pain_score, row_.goal_note) == (2, 4, "Walk to the bus stop")
    assert (row_.withdrawal_signs(), row_.overdose_signs()) == ([], [])
    assert Pump.objects.get(pk=filled.pk).version == version + 1  # the pump's ETag moves
    assert row_.history.get().history_user == nurse
    assert not Alert.objects.filter(kind__in=["withdrawal_symptoms", "overdose_symptoms"]).exists()


def test_an_integration_may_name_the_assessor_a_user_may_not(filled, nurse):
    api = s.Actor(None, "api client EHR")
    made = s.record_assessment(pump=filled, assessed_at=VISIT, actor=api, now=AFTER_VISIT,
                               data=s.AssessmentInput(penn_spasm_frequency=1, assessed_by="Dr. Outside"))
    assert (made.assessed_by, made.assessed_by_external) == (None, "Dr. Outside")
    named = s.record_assessment(pump=filled, assessed_at=VISIT + timedelta(minutes=1), actor=api, now=AFTER_VISIT,
                                data=s.AssessmentInput(penn_spasm_frequency=1, assessed_by="nina"))
    assert (named.assessed_by, named.assessed_by_external) == (nurse, "")
    assert refused(lambda: s.record_assessment(
        pump=filled, assessed_at=VISIT, actor=s.Actor(nurse), now=AFTER_VISIT,
        data=s.AssessmentInput(assessed_by="dr_pat"),
    )) == {"assessed_by": ["You are signed in as nina: this is recorded as yours. Leave assessed_by empty "
                           "(only an integration names another clinician)."]}
    assert Assessment.objects.count() == 2


@pytest.mark.parametrize(("data", "errors"), [
    (s.AssessmentInput(ashworth_upper_left="5"),
     {"ashworth_upper_left": ["Must be one of: 0, 1, 1+, 2, 3, 4 (or blank: not assessed)."]}),
    (s.AssessmentInput(penn_spasm_frequency=5),
     {"penn_spasm_frequency": ["Must be a whole number from 0 to 4 (or blank: not assessed)."]}),
    (s.AssessmentInput(penn_spasm_frequency=-1),
     {"penn_spasm_frequency": ["Must be a whole number from 0 to 4 (or blank: not assessed)."]}),
    (s.AssessmentInput(pain_score=11), {"pain_score": ["Must be a whole number from 0 to 10 (or blank: not assessed)."]}),
    (s.AssessmentInput(pain_score=True), {"pain_score": ["Must be a whole number from 0 to 10 (or blank: not assessed)."]}),
    (s.AssessmentInput(goal_note="x" * 1001), {"goal_note": ["Ensure this field has no more than 1000 characters."]}),
    (s.AssessmentInput(signs={"overdose_hiccups": True}), {"signs": ["Unknown signs: overdose_hiccups."]}),
    (s.AssessmentInput(signs={"withdrawal_high_fever": "yes"}), {"withdrawal_high_fever": ["Must be true or false."]}),
])
def test_bad_assessments_are_refused_field_by_field_and_nothing_is_saved(filled, nurse, data, errors):
    assert refused(lambda: s.record_assessment(pump=filled, assessed_at=VISIT, data=data, actor=s.Actor(nurse),
                                               now=AFTER_VISIT)) == errors
    assert not Assessment.objects.exists() and not Alert.objects.filter(kind="withdrawal_symptoms").exists()


def test_an_assessment_instant_is_checked_like_every_instant(filled, nurse):
    def at(moment):
        return refused(lambda: s.record_assessment(pump=filled, assessed_at=moment, data=s.AssessmentInput(),
                                                   actor=s.Actor(nurse), now=AFTER_VISIT))
    assert at(AFTER_VISIT + timedelta(minutes=6)) == {
        "assessed_at": ["This time is in the future; record what has happened (at most 5 minutes ahead)."]}
    assert at(datetime(2026, 1, 14, 12, tzinfo=CHICAGO)) == {
        "assessed_at": ["This time is before the pump's implant date (2026-01-15)."]}
    assert at(datetime(2026, 2, 20, 10)) == {
        "assessed_at": ["Datetime has no offset: give one (for example 2026-02-02T09:00:00-06:00 or Z)."]}
    assert at(None) == {"assessed_at": ["This field is required."]}


def test_a_viewer_records_no_assessment(filled, clinic):
    viewer = make_user("vic", clinic, "viewer")
    with pytest.raises(Forbidden) as caught:
        s.record_assessment(pump=filled, assessed_at=VISIT, data=s.AssessmentInput(), actor=s.Actor(viewer),
                            now=AFTER_VISIT)
    assert caught.value.message == "Your role in this clinic does not allow changes."


def test_an_assessment_with_a_refill_is_saved_in_its_transaction_or_not_at_all(filled, nurse):
    at = datetime(2026, 3, 20, 9, 0, tzinfo=CHICAGO)

    def refill(assessment):
        return s.record_refill(pump=filled, performed_at=at, added_volume_ml=D(20), extracted_volume_ml=D(5),
                               concentration_mcg_per_ml=D(1000), actor=s.Actor(nurse), now=at + timedelta(minutes=5),
                               assessment=assessment)

    assert refused(lambda: refill(s.AssessmentInput(penn_spasm_frequency=7, pain_score=12))) == {
        "assessment.penn_spasm_frequency": ["Must be a whole number from 0 to 4 (or blank: not assessed)."],
        "assessment.pain_score": ["Must be a whole number from 0 to 10 (or blank: not assessed)."],
    }
    assert Refill.objects.count() == 1 and not Assessment.objects.exists()
    made = refill(s.AssessmentInput(ashworth_lower_left="2", penn_spasm_frequency=1))
    saved = Assessment.objects.get()
    assert (saved.refill, saved.assessed_at, saved.assessed_by, saved.ashworth_lower_left) == (made, at, nurse, "2")
    assert made.assessment == saved


def test_voiding_an_assessment_needs_a_reason_and_keeps_it_in_the_history(filled, nurse):
    made = s.record_assessment(pump=filled, assessed_at=VISIT, data=s.AssessmentInput(pain_score=3),
                               actor=s.Actor(nurse), now=AFTER_VISIT)
    assert refused(lambda: s.void_record(record=made, reason=" ", actor=s.Actor(nurse))) == {
        "reason": ["Give the reason for voiding this record."]}
    s.void_record(record=made, reason="wrong patient", actor=s.Actor(nurse), now=AFTER_VISIT)
    made.refresh_from_db()
    assert (made.voided_at, made.void_reason, made.voided_by) == (AFTER_VISIT, "wrong patient", nurse)
    assert refused(lambda: s.void_assessment(assessment=made, reason="again", actor=s.Actor(nurse))) == {
        "non_field_errors": ["This record is already voided."]}


def test_voiding_a_refill_voids_the_assessment_recorded_with_it(filled, nurse):
    at = datetime(2026, 3, 20, 9, 0, tzinfo=CHICAGO)
    made = s.record_refill(pump=filled, performed_at=at, added_volume_ml=D(20), extracted_volume_ml=D(5),
                           concentration_mcg_per_ml=D(1000), actor=s.Actor(nurse), now=at,
                           assessment=s.AssessmentInput(signs={"withdrawal_high_fever": True}))
    assert Alert.objects.get(kind="withdrawal_symptoms").resolved_at is None
    s.void_record(record=made, reason="entered on the wrong pump", actor=s.Actor(nurse), now=at + timedelta(hours=1))
    assessment = Assessment.objects.get()
    assert (assessment.voided_at, assessment.void_reason) == (
        at + timedelta(hours=1), "refill voided: entered on the wrong pump")
    alert = Alert.objects.get(kind="withdrawal_symptoms")
    assert (alert.resolved_at, alert.resolution) == (at + timedelta(hours=1), "the assessment was voided")


# ------------------------------------------------------------------ co-medication


def test_co_medication_is_recorded_stopped_and_voided_by_the_actor(filled, nurse):
    patient = filled.patient
    made = s.record_comedication(patient=patient, name="oxycodone 10 mg twice a day", category="opioid",
                                 started_on=date(2026, 2, 1), actor=s.Actor(nurse), now=WRITE_NOW)
    assert (made.recorded_by, made.recorded_by_external, made.stopped_on) == (nurse, "", None)
    assert s.active_comedications(patient, date(2026, 2, 2)) == [made]
    s.stop_comedication(comedication=made, stopped_on=date(2026, 2, 10), actor=s.Actor(nurse), now=WRITE_NOW)
    assert s.active_comedications(patient, date(2026, 2, 10)) == [made]  # the stop day is included
    assert s.active_comedications(patient, date(2026, 2, 11)) == []
    assert refused(lambda: s.stop_comedication(comedication=made, stopped_on=date(2026, 2, 12), actor=s.Actor(nurse))) \
        == {"non_field_errors": ["This co-medication was already stopped on 2026-02-10."]}
    s.void_comedication(comedication=made, reason="duplicate entry", actor=s.Actor(nurse), now=WRITE_NOW)
    made.refresh_from_db()
    assert (made.voided_at, made.void_reason, made.voided_by) == (WRITE_NOW, "duplicate entry", nurse)
    assert s.active_comedications(patient, date(2026, 2, 5)) == []
    integration = s.record_comedication(patient=patient, name="diazepam 5 mg", category="benzodiazepine",
                                        started_on=date(2026, 2, 1), actor=s.Actor(None, "api client EHR"),
                                        now=WRITE_NOW)
    assert (integration.recorded_by, integration.recorded_by_external) == (None, "api client EHR")


def test_bad_co_medication_is_refused_field_by_field(filled, nurse):
    assert refused(lambda: s.record_comedication(
        patient=filled.patient, name=" ", category="alcohol", started_on=date(2026, 3, 1),
        stopped_on=date(3026, 1, 1), actor=s.Actor(nurse), now=WRITE_NOW,
    )) == {
        "name": ["This field may not be blank."],
        "category": ["Must be one of: opioid, benzodiazepine, oral_baclofen, other_sedative."],
        "started_on": ["This date is in the future: record a co-medication from the day it starts."],
        "stopped_on": ["Enter a date between the years 1900 and 2999."],
    }
    assert refused(lambda: s.record_comedication(
        patient=filled.patient, name="morphine\r\nBcc: x", category="opioid", started_on=date(2026, 2, 1),
        stopped_on=date(2026, 1, 31), actor=s.Actor(nurse), now=WRITE_NOW,
    )) == {
        "name": ["Remove line breaks, tabs and other control characters from this field."],
        "stopped_on": ["The stop date is before the start date (2026-02-01)."],
    }
    assert refused(lambda: s.record_comedication(
        patient=filled.patient, name="x", category="opioid", started_on=None, actor=s.Actor(nurse), now=WRITE_NOW,
    )) == {"started_on": ["This field is required."]}
    assert not CoMedication.objects.exists()


def test_a_viewer_records_no_co_medication(filled, clinic):
    viewer = make_user("vic", clinic, "viewer")
    with pytest.raises(Forbidden):
        s.record_comedication(patient=filled.patient, name="x", category="opioid", started_on=date(2026, 2, 1),
                              actor=s.Actor(viewer), now=WRITE_NOW)


MSG_INTERACTION = (
    "The daily dose rises from 450 to 500 mcg/day while the patient takes oxycodone 10 mg twice a day (opioid); "
    "diazepam 5 mg at night (benzodiazepine): CNS depressants add to baclofen's sedation and respiratory depression. "
    "Confirm the increase with comedication_confirmed."
)


@pytest.fixture
def sedated(filled, nurse):
    s.record_comedication(patient=filled.patient, name="oxycodone 10 mg twice a day", category="opioid",
                          started_on=date(2026, 2, 1), actor=s.Actor(nurse), now=WRITE_NOW)
    s.record_comedication(patient=filled.patient, name="diazepam 5 mg at night", category="benzodiazepine",
                          started_on=date(2026, 2, 5), actor=s.Actor(nurse), now=RAISE_AT)
    return filled


def test_a_dose_increase_while_cns_depressants_are_active_needs_the_confirmation(sedated, prescriber):
    def raise_dose(**extra):
        return s.record_program(pump=sedated, effective_at=RAISE_AT, data=program(500, **extra),
                                actor=s.Actor(prescriber), now=RAISE_AT)

    assert refused(raise_dose) == {"comedication_confirmed": [MSG_INTERACTION]}
    assert refused(lambda: raise_dose(comedication_confirmed=False)) == {"comedication_confirmed": [MSG_INTERACTION]}
    assert Program.objects.count() == 1  # nothing saved
    made = raise_dose(comedication_confirmed=True)
    assert (made.comedication_confirmed, made.comedication_summary) == (
        True, "oxycodone 10 mg twice a day (opioid); diazepam 5 mg at night (benzodiazepine)")
    interaction = s.check_interaction(sedated, list(Program.objects.live().order_by("effective_at")),
                                      RAISE_AT + timedelta(days=1), D(550))
    assert (interaction.previous_daily_dose_mcg, interaction.daily_dose_mcg) == (D(500), D(550))


def test_no_confirmation_without_an_increase_or_an_active_depressant(filled, nurse, prescriber):
    stopped = s.record_comedication(patient=filled.patient, name="tramadol 50 mg", category="opioid",
                                    started_on=date(2026, 2, 1), stopped_on=date(2026, 2, 9), actor=s.Actor(nurse),
                                    now=WRITE_NOW)
    made = s.record_program(pump=filled, effective_at=RAISE_AT, data=program(500, comedication_confirmed=True),
                            actor=s.Actor(prescriber), now=RAISE_AT)  # stopped the day before
    assert (made.comedication_confirmed, made.comedication_summary) == (False, "")
    s.record_comedication(patient=filled.patient, name="baclofen 10 mg orally", category="oral_baclofen",
                          started_on=date(2026, 2, 1), actor=s.Actor(nurse), now=WRITE_NOW)
    lower = s.record_program(pump=filled, effective_at=RAISE_AT + timedelta(days=2), data=program(480),
                             actor=s.Actor(prescriber), now=RAISE_AT + timedelta(days=2))
    assert (lower.comedication_confirmed, lower.comedication_summary) == (False, "")  # a decrease
    assert stopped.is_active_on(date(2026, 2, 10)) is False


def test_a_refill_carrying_an_increase_needs_the_confirmation_under_program(sedated, prescriber):
    at = datetime(2026, 3, 20, 9, 0, tzinfo=CHICAGO)

    def refill(**extra):
        return s.record_refill(pump=sedated, performed_at=at, added_volume_ml=D(20), extracted_volume_ml=D(5),
                               concentration_mcg_per_ml=D(1000), actor=s.Actor(prescriber), now=at,
                               program=program(500, **extra))

    assert refused(refill) == {"program.comedication_confirmed": [MSG_INTERACTION]}
    assert Refill.objects.count() == 1
    made = refill(comedication_confirmed=True)
    assert made.program.comedication_summary == "oxycodone 10 mg twice a day (opioid); diazepam 5 mg at night " \
                                                "(benzodiazepine)"


# ------------------------------------------------------------ no stop without a plan


def test_a_negative_daily_dose_is_refused_zero_stops_delivery(filled, prescriber):
    assert refused(lambda: s.record_program(pump=filled, effective_at=RAISE_AT, data=program(-1),
                                            actor=s.Actor(prescriber), now=RAISE_AT)) == {
        "daily_dose_mcg": ["Must be zero or more."]}
    assert refused(lambda: s.record_program(pump=filled, effective_at=RAISE_AT, data=program(0),
                                            actor=s.Actor(prescriber), now=RAISE_AT)) == {
        "withdrawal_plan": [wd.MSG_PLAN_PROGRAM]}
    assert wd.MSG_PLAN_PROGRAM == (
        "This program stops delivery (0 mcg/day and no on-demand bolus): give the withdrawal plan "
        "(taper_completed, oral_bridge with its dose, or none with a reason).")
    assert Program.objects.count() == 1 and not WithdrawalPlan.objects.exists()


def test_a_bolus_that_rounds_to_nothing_stops_delivery_too(filled, prescriber):
    """Stored to 0.001 mcg, a bolus of 0.0004 mcg is none: validation asks for the plan, as
    the save would treat the program (no 500 from a plan missing at the save)."""
    assert refused(lambda: s.record_program(
        pump=filled, effective_at=RAISE_AT, data=program(0, ptm_bolus_mcg=D("0.0004"), ptm_max_per_day=4),
        actor=s.Actor(prescriber), now=RAISE_AT)) == {"withdrawal_plan": [wd.MSG_PLAN_PROGRAM]}
    made = s.record_program(
        pump=filled, effective_at=RAISE_AT, actor=s.Actor(prescriber), now=RAISE_AT,
        data=program(0, ptm_bolus_mcg=D("0.0004"), ptm_max_per_day=4, withdrawal_plan="taper_completed"))
    assert made.withdrawal_plan.plan == "taper_completed"


@pytest.mark.parametrize(("plan", "errors"), [
    ({"withdrawal_plan": "cold_turkey"}, {"withdrawal_plan": ["Must be one of: taper_completed, oral_bridge, none."]}),
    ({"withdrawal_plan": "oral_bridge"},
     {"oral_bridge_dose": ["Give the oral baclofen bridge dose (for example 10 mg four times a day)."]}),
    ({"withdrawal_plan": "none", "withdrawal_plan_reason": "  "},
     {"withdrawal_plan_reason": ["Give the reason there is no plan against withdrawal."]}),
    ({"withdrawal_plan": "taper_completed", "oral_bridge_dose": "10 mg", "withdrawal_plan_reason": "why"},
     {"oral_bridge_dose": ["Only an oral bridge has a dose: leave this empty."],
      "withdrawal_plan_reason": ["Only a plan of none has a reason here: leave this empty."]}),
    ({"withdrawal_plan": "oral_bridge", "oral_bridge_dose": "10 mg\tfour times"},
     {"oral_bridge_dose": ["Remove line breaks, tabs and other control characters from this field."]}),
    ({"withdrawal_plan": "none", "withdrawal_plan_reason": "x" * 501},
     {"withdrawal_plan_reason": ["Ensure this field has no more than 500 characters."]}),
])
def test_an_explant_needs_a_complete_plan(filled, nurse, plan, errors):
    assert refused(lambda: s.explant_pump(pump=filled, explanted_on=date(2026, 3, 27), actor=s.Actor(nurse),
                                          now=datetime(2026, 3, 27, 12, tzinfo=CHICAGO), **plan)) == errors
    assert Pump.objects.get(pk=filled.pk).explanted_on is None and not WithdrawalPlan.objects.exists()


def test_an_explant_without_a_plan_is_refused(filled, nurse):
    assert refused(lambda: s.explant_pump(pump=filled, explanted_on=date(2026, 3, 27), actor=s.Actor(nurse),
                                          now=datetime(2026, 3, 27, 12, tzinfo=CHICAGO))) == {
        "withdrawal_plan": ["An explant stops intrathecal baclofen: give the withdrawal plan (taper_completed, "
                            "oral_bridge with its dose, or none with a reason)."]}
    assert Pump.objects.get(pk=filled.pk).explanted_on is None


def test_an_explant_saves_its_plan_in_its_transaction(filled, nurse):
    s.explant_pump(pump=filled, explanted_on=date(2026, 3, 27), actor=s.Actor(nurse), reason="infection",
                   withdrawal_plan="oral_bridge", oral_bridge_dose=" 10 mg four times a day ",
                   now=datetime(2026, 3, 27, 12, tzinfo=CHICAGO))
    plan = WithdrawalPlan.objects.get()
    assert (plan.pump_id, plan.stop, plan.program, plan.stopped_at, plan.plan, plan.oral_bridge_dose, plan.reason,
            plan.recorded_by) == (filled.pk, "explant", None, datetime(2026, 3, 27, 0, 0, tzinfo=CHICAGO),
                                  "oral_bridge", "10 mg four times a day", "", nurse)
    assert not Alert.objects.filter(episode__startswith="stop:").exists()  # a plan: no alert


def test_a_replacement_asks_for_no_plan(filled, nurse):
    new = s.replace_pump(old=filled, model=PumpModel.objects.get(code="8637-40"), serial_number="SN-0002",
                         replaced_on=date(2026, 3, 27), actor=s.Actor(nurse),
                         now=datetime(2026, 3, 27, 12, tzinfo=CHICAGO))
    assert new.serial_number == "SN-0002" and not WithdrawalPlan.objects.exists()


def test_a_program_that_stops_delivery_saves_its_plan_and_voiding_it_voids_the_plan(filled, prescriber):
    at = datetime(2026, 3, 1, 9, 0, tzinfo=CHICAGO)
    made = s.record_program(pump=filled, effective_at=at, actor=s.Actor(prescriber), now=at,
                            data=program(0, withdrawal_plan="taper_completed"))
    plan = WithdrawalPlan.objects.get()
    assert (plan.stop, plan.program, plan.stopped_at, plan.plan) == ("program", made, at, "taper_completed")
    assert made.withdrawal_plan == plan
    s.void_record(record=made, reason="entered in error", actor=s.Actor(prescriber), now=at + timedelta(hours=1))
    plan.refresh_from_db()
    assert (plan.voided_at, plan.void_reason) == (at + timedelta(hours=1), "program voided: entered in error")


def test_a_plan_on_a_program_that_delivers_is_refused(filled, prescriber):
    assert refused(lambda: s.record_program(pump=filled, effective_at=RAISE_AT, actor=s.Actor(prescriber),
                                            now=RAISE_AT, data=program(450, withdrawal_plan="taper_completed"))) == {
        "withdrawal_plan": ["This program does not stop delivery: a withdrawal plan goes with an explant or a "
                            "program that stops delivery. Leave it empty."]}
    # a zero basal with an on-demand bolus still delivers: no plan needed
    made = s.record_program(pump=filled, effective_at=RAISE_AT, actor=s.Actor(prescriber), now=RAISE_AT,
                            data=program(0, ptm_bolus_mcg=D(25), ptm_max_per_day=3))
    assert made.daily_dose_mcg == 0 and not WithdrawalPlan.objects.exists()


def test_a_refill_carrying_a_stop_needs_the_plan_under_program(filled, prescriber):
    at = datetime(2026, 3, 20, 9, 0, tzinfo=CHICAGO)
    assert refused(lambda: s.record_refill(
        pump=filled, performed_at=at, added_volume_ml=D(20), extracted_volume_ml=D(5),
        concentration_mcg_per_ml=D(1000), actor=s.Actor(prescriber), now=at, program=program(0),
    )) == {"program.withdrawal_plan": [wd.MSG_PLAN_PROGRAM]}
    made = s.record_refill(
        pump=filled, performed_at=at, added_volume_ml=D(20), extracted_volume_ml=D(5),
        concentration_mcg_per_ml=D(1000), actor=s.Actor(prescriber), now=at,
        program=program(0, withdrawal_plan="none", withdrawal_plan_reason="patient declined the taper"),
    )
    plan = WithdrawalPlan.objects.get()
    assert (plan.program, plan.plan, plan.reason) == (made.program, "none", "patient declined the taper")
    assert Alert.objects.get(episode=f"stop:{plan.pk}").kind == "withdrawal_risk"


def test_the_import_refuses_a_program_that_stops_delivery(clinic):
    with travel(AFTER_REFILL):
        report = import_clinic_csv(clinic=clinic, content=csv_text(row(daily_dose_mcg="0")), now=AFTER_REFILL)
    assert [(e.row, e.column, e.message) for e in report.errors] == [(2, "withdrawal_plan", wd.MSG_PLAN_PROGRAM)]


def test_the_interaction_message_lists_what_is_active(filled, nurse):
    made = s.record_comedication(patient=filled.patient, name="zolpidem 10 mg", category="other_sedative",
                                 started_on=date(2026, 2, 1), actor=s.Actor(nurse), now=WRITE_NOW)
    found = cm.Interaction(D(450), D("512.5"), [made])
    assert found.message == (
        "The daily dose rises from 450 to 512.5 mcg/day while the patient takes zolpidem 10 mg (other sedative): "
        "CNS depressants add to baclofen's sedation and respiratory depression. Confirm the increase with "
        "comedication_confirmed.")
    assert Notification.objects.filter(kind="withdrawal_symptoms").count() == 0


# --------------------------------------------------------------------------- admin


def test_the_admin_explant_asks_for_the_plan(admin_client, records):
    pump = Pump.objects.get(pk=records["pump"].pk)
    data = {
        "serial_number": pump.serial_number, "udi": "", "low_reservoir_alarm_ml": "2",
        "expected_end_of_service": pump.expected_end_of_service.isoformat(),
        "explanted_on": local_days_ago(1).date().isoformat(), "explant_reason": "infection",
        "withdrawal_plan": "", "oral_bridge_dose": "", "withdrawal_plan_reason": "",
    }
    page = admin_client.post(admin_url(Pump, "change", pump.pk), data)
    assert page.status_code == 200
    assert "An explant stops intrathecal baclofen: give the withdrawal plan" in page.content.decode()
    assert Pump.objects.get(pk=pump.pk).explanted_on is None
    done = admin_client.post(admin_url(Pump, "change", pump.pk),
                             {**data, "withdrawal_plan": "oral_bridge", "oral_bridge_dose": "10 mg three times a day"})
    assert done.status_code == 302, done.content.decode()[:2000]
    plan = WithdrawalPlan.objects.get(pump=pump)
    assert (plan.plan, plan.oral_bridge_dose, plan.recorded_by.username) == (
        "oral_bridge", "10 mg three times a day", "root")
