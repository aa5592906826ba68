"""Dose and response on the staff pages (docs/clinical-rules.md §15): the pump page's
assessments (signs in words, the alerts they opened, void), the patient's CNS depressants
(add, stop, void), the response chart with its table, the assessment page, the worksheet,
the co-medication confirmation on the program form and the withdrawal plan on a stop."""

import re
from datetime import date, datetime
from decimal import Decimal as D

import pytest

from pumps import services as s
from pumps import symptoms
from pumps.models import Alert, AlertKind, Assessment, CoMedication, Refill, WithdrawalPlan
from tests.pages_support import (
    CHICAGO,
    DUE_SOON_AT,
    assert_no_inline_script,
    signed_in,
    text_of,
    travel,
    worked_example,
)

SECOND = datetime(2026, 3, 1, 9, 0, tzinfo=CHICAGO)


@pytest.fixture
def filled(patient, prescriber):
    """The worked example (450 mcg/day from 2026-02-02 09:00 CST), raised to 540 mcg/day on
    2026-03-01, with two assessments and an opioid."""
    pump = worked_example(patient, s.Actor(prescriber))
    s.record_program(pump=pump, effective_at=SECOND, actor=s.Actor(prescriber), now=SECOND,
                     data=s.ProgramInput(concentration_mcg_per_ml=D("1000"), daily_dose_mcg=D("540")))
    return pump


def assess(pump, at, by, **values):
    return Assessment.objects.create(pump=pump, assessed_at=at, assessed_by=by, **values)


@pytest.fixture
def history(filled, nurse):
    first = assess(filled, datetime(2026, 2, 2, 10, 0, tzinfo=CHICAGO), nurse, ashworth_lower_left="3",
                   ashworth_lower_right="2", penn_spasm_frequency=3, pain_score=6, goal_note="Walk to the shop")
    second = assess(filled, datetime(2026, 3, 20, 10, 0, tzinfo=CHICAGO), nurse, ashworth_lower_left="1+",
                    ashworth_lower_right="1", penn_spasm_frequency=1, pain_score=2, overdose_somnolence=True,
                    overdose_dizziness=True)
    opioid = CoMedication.objects.create(patient=filled.patient, name="oxycodone 10 mg twice a day",
                                         category="opioid", started_on=date(2026, 1, 10), recorded_by=nurse)
    stopped = CoMedication.objects.create(patient=filled.patient, name="diazepam 5 mg at night",
                                          category="benzodiazepine", started_on=date(2026, 1, 1),
                                          stopped_on=date(2026, 2, 1), recorded_by=nurse)
    return first, second, opioid, stopped


def pump_page(client, pump) -> str:
    with travel(DUE_SOON_AT):
        response = client.get(f"/pumps/{pump.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def section(html: str, ident: str) -> str:
    return text_of(re.search(rf'<section aria-labelledby="{ident}".*?</section>', html, re.S).group(0))


def test_pump_page_lists_assessments_with_signs_in_words_and_the_co_medication(filled, history, nurse):
    html = pump_page(signed_in(nurse), filled)
    text = section(html, "dose-heading")
    assert ("Active CNS depressant: oxycodone 10 mg twice a day (opioid). Additive sedation and respiratory "
            "depression with intrathecal baclofen: watch for overdose signs after a dose increase.") in text
    assert ("oxycodone 10 mg twice a day opioid 2026-01-10 — active Stopped on Stop oxycodone 10 mg twice a day "
            "Void oxycodone 10 mg twice a day") in text
    assert "diazepam 5 mg at night benzodiazepine 2026-01-01 2026-02-01 stopped Void diazepam 5 mg at night" in text
    assert ("2026-03-20 10:00 CDT by nina —, —, 1+, 1 1 2 Overdose signs: dizziness, somnolence —") in text
    assert "2026-02-02 10:00 CST by nina —, —, 3, 2 3 6 none Walk to the shop" in text
    assert text.index("2026-03-20 10:00 CDT") < text.index("2026-02-02 10:00 CST")  # newest first
    assert "Record assessment" in text
    assert_no_inline_script(html)


def test_response_chart_and_its_table(filled, history, nurse):
    html = pump_page(signed_in(nurse), filled)
    chart = re.search(r'<svg class="chart" id="response-chart".*?</svg>', html, re.S).group(0)
    assert ("Dose 450 mcg/day at first, 540 mcg/day now. Highest Modified Ashworth grade of the limbs (1+ drawn as "
            "1.5): 3 on 2026-02-02, 1+ on 2026-03-20. Penn spasm frequency: 3 on 2026-02-02, 1 on 2026-03-20.") in chart
    table = text_of(re.search(r'<table class="stack" id="response-table">.*?</table>', html, re.S).group(0))
    assert table == (
        "Daily dose and spasticity scores over time Date Daily dose (mcg/day) Ashworth left arm Ashworth right arm "
        "Ashworth left leg Ashworth right leg Penn "
        "2026-02-02 09:00 CST new program 450 — — — — — "
        "2026-02-02 10:00 CST 450 — — 3 2 3 "
        "2026-03-01 09:00 CST new program 540 — — — — — "
        "2026-03-20 10:00 CDT 540 — — 1+ 1 1"
    )


def test_no_response_chart_without_a_scored_assessment(filled, nurse):
    html = pump_page(signed_in(nurse), filled)
    assert 'id="response-chart"' not in html
    assert "No assessment recorded." in html and "No CNS depressant recorded." in html


def test_a_viewer_sees_dose_and_response_without_forms(filled, history, clinic):
    from tests.factories import make_user

    html = pump_page(signed_in(make_user("vera", clinic, "viewer")), filled)
    text = section(html, "dose-heading")
    assert "oxycodone 10 mg twice a day" in text
    assert "Record assessment" not in text and "Void" not in text and "Add a co-medication" not in text


def test_worksheet_prints_the_last_assessment_and_the_active_co_medication(filled, history, nurse):
    with travel(DUE_SOON_AT):
        text = text_of(signed_in(nurse).get(f"/pumps/{filled.pk}/worksheet/").content.decode())
    assert ("Co-medication (CNS depressants) Active: oxycodone 10 mg twice a day (opioid, since 2026-01-10). "
            "Additive sedation and respiratory depression with intrathecal baclofen: ask about drowsiness and "
            "breathing.") in text
    assert ("Last assessment Assessed 2026-03-20 10:00 CDT by nina Modified Ashworth left arm —, right arm —, "
            "left leg 1+, right leg 1 Penn spasm frequency 1: mild spasms induced by stimulation Pain (0-10) 2 "
            "Signs overdose: dizziness, somnolence") in text
    assert "diazepam" not in text


def test_worksheet_without_assessment_or_co_medication(filled, nurse):
    with travel(DUE_SOON_AT):
        text = text_of(signed_in(nurse).get(f"/pumps/{filled.pk}/worksheet/").content.decode())
    assert "Co-medication (CNS depressants) None active." in text
    assert "Last assessment No assessment recorded." in text


# ------------------------------------------------------------------------- writes

LATER = datetime(2026, 3, 28, 11, 0, tzinfo=CHICAGO)
NO_SIGNS = {name: "no" for name in [*symptoms.withdrawal_fields(), *symptoms.overdose_fields()]}


def assessment_form(**overrides):
    data = {"assessed_at": "2026-03-28T11:00", "ashworth_upper_left": "", "ashworth_upper_right": "",
            "ashworth_lower_left": "1+", "ashworth_lower_right": "1", "penn_spasm_frequency": "2",
            "pain_score": "3", "goal_note": "Transfers alone", "notes": "", **NO_SIGNS}
    data.update(overrides)
    return data


def test_the_assessment_page_asks_every_sign_in_words(filled, nurse):
    with travel(DUE_SOON_AT):
        response = signed_in(nurse).get(f"/pumps/{filled.pk}/assessment/")
    html = response.content.decode()
    assert response.status_code == 200
    text = text_of(html)
    assert "Modified Ashworth, left arm: not assessed 0: no increase in muscle tone" in text
    assert ("Withdrawal signs (any yes: a critical alert to the escalation list at once) Return of baseline "
            "spasticity: no yes Pruritus (itching): no yes Hypotension: no yes") in text
    assert "Overdose signs (any yes: a critical alert to the escalation list at once) Drowsiness: no yes" in text
    assert "Rostral progression of hypotonia: no yes Loss of consciousness: no yes Notes:" in text
    assert 'name="pain_score" inputmode="numeric"' in html
    assert '<input type="radio" name="overdose_somnolence" value="no" class="yes-no" id="id_overdose_somnolence_0" ' \
           'checked>' in html
    assert 'value="2026-03-28T12:00"' in html
    assert_no_inline_script(html)


def test_an_assessment_with_an_overdose_sign_lands_on_the_pump_with_its_alert(filled, nurse):
    client = signed_in(nurse)
    with travel(DUE_SOON_AT):
        response = client.post(f"/pumps/{filled.pk}/assessment/", assessment_form(overdose_somnolence="yes"))
        assert response.status_code == 302 and response["Location"] == f"/pumps/{filled.pk}/#summary"
        html = client.get(response["Location"]).content.decode()
    saved = Assessment.objects.get()
    assert (saved.assessed_by, saved.assessed_at, saved.ashworth_lower_left, saved.penn_spasm_frequency,
            saved.pain_score, saved.overdose_signs()) == (nurse, LATER, "1+", 2, 3, ["somnolence"])
    alert = Alert.objects.get(kind=AlertKind.OVERDOSE_SYMPTOMS)
    assert alert.episode == f"assessment:{saved.pk}"
    summary = text_of(re.search(r'<section id="summary".*?</section>', html, re.S).group(0))
    assert ("Assessment recorded with overdose signs: somnolence. Critical alert raised: overdose symptoms."
            in summary)
    assert "Overdose symptoms — Overdose signs recorded at 2026-03-28 11:00 CDT: somnolence." in summary
    rows = section(html, "dose-heading")
    assert ("2026-03-28 11:00 CDT by nina —, —, 1+, 1 2 3 Overdose signs: somnolence Overdose symptoms alert "
            "(critical): open Transfers alone") in rows


def test_a_negative_screen_says_so(filled, nurse):
    client = signed_in(nurse)
    with travel(DUE_SOON_AT):
        response = client.post(f"/pumps/{filled.pk}/assessment/", assessment_form(), follow=True)
    assert "Assessment recorded." in text_of(response.content.decode())
    assert not Alert.objects.filter(kind__in=[AlertKind.OVERDOSE_SYMPTOMS, AlertKind.WITHDRAWAL_SYMPTOMS]).exists()


@pytest.mark.parametrize(("overrides", "errors"), [
    ({"assessed_at": "2026-03-29T11:00"},
     {"assessed_at": ["This time is in the future; record what has happened (at most 5 minutes ahead)."]}),
    ({"pain_score": "11"}, {"pain_score": ["Must be a whole number from 0 to 10 (or blank: not assessed)."]}),
    ({"pain_score": "a lot"}, {"pain_score": ["Enter a whole number from 0 to 10, e.g. 3"]}),
])
def test_assessment_messages_go_on_their_fields_and_nothing_is_saved(filled, nurse, overrides, errors):
    with travel(DUE_SOON_AT):
        response = signed_in(nurse).post(f"/pumps/{filled.pk}/assessment/", assessment_form(**overrides))
    assert response.status_code == 400
    assert response.context["form"].errors == errors
    assert 'value="Transfers alone"' in response.content.decode() or "Transfers alone" in response.content.decode()
    assert Assessment.objects.count() == 0


def test_a_viewer_may_not_record_an_assessment(filled, clinic):
    from tests.factories import make_user

    with travel(DUE_SOON_AT):
        response = signed_in(make_user("vera", clinic, "viewer")).post(f"/pumps/{filled.pk}/assessment/",
                                                                       assessment_form())
    assert response.status_code == 403 and Assessment.objects.count() == 0


def test_voiding_an_assessment_resolves_its_alert(filled, nurse):
    client = signed_in(nurse)
    with travel(DUE_SOON_AT):
        client.post(f"/pumps/{filled.pk}/assessment/", assessment_form(withdrawal_pruritus="yes"))
        saved = Assessment.objects.get()
        response = client.post(f"/void/assessment/{saved.pk}/", {"reason": "wrong patient"})
        assert response.status_code == 302
        rows = section(client.get(f"/pumps/{filled.pk}/").content.decode(), "dose-heading")
    saved.refresh_from_db()
    assert saved.void_reason == "wrong patient"
    assert "voided: wrong patient" in rows and "Withdrawal symptoms alert (critical): resolved" in rows
    assert Alert.objects.get(kind=AlertKind.WITHDRAWAL_SYMPTOMS).resolved_at is not None


# -------------------------------------------------------------- with a refill

def refill_form(**overrides):
    data = {"performed_at": "2026-03-28T11:00", "extracted_volume_ml": "12", "residual_left_ml": "0",
            "added_volume_ml": "38", "drug_product": "gablofen-1000", "concentration_mcg_per_ml": "1000",
            "lot_number": "L77", "lot_expiry": "2027-01-31", "notes": "", "program_mode": "continuous",
            "confirm_duplicate": ""}
    data.update({f"assessment_{k}": v for k, v in NO_SIGNS.items()})
    data.update(overrides)
    return data


def test_a_refill_saves_its_assessment_in_the_same_action(filled, nurse):
    client = signed_in(nurse)
    with travel(DUE_SOON_AT):
        html = client.get(f"/pumps/{filled.pk}/refill/").content.decode()
        assert '<details id="assessment-section">' in html
        assert 'name="assessment_withdrawal_pruritus"' in html
        response = client.post(f"/pumps/{filled.pk}/refill/", refill_form(
            assessment_ashworth_lower_left="2", assessment_penn_spasm_frequency="1",
            assessment_withdrawal_pruritus="yes"))
        assert response.status_code == 302
        landed = text_of(client.get(response["Location"]).content.decode())
    assert ("Assessment recorded with withdrawal signs: pruritus (itching). Critical alert raised: withdrawal "
            "symptoms.") in landed
    saved = Assessment.objects.get()
    refill = Refill.objects.latest("performed_at")
    assert (saved.refill, saved.assessed_at, saved.assessed_by, saved.withdrawal_signs()) == (
        refill, LATER, nurse, ["pruritus (itching)"])
    assert Alert.objects.filter(kind=AlertKind.WITHDRAWAL_SYMPTOMS, episode=f"assessment:{saved.pk}").count() == 1


def test_a_refill_without_any_assessment_value_saves_none(filled, nurse):
    with travel(DUE_SOON_AT):
        response = signed_in(nurse).post(f"/pumps/{filled.pk}/refill/", refill_form())
    assert response.status_code == 302 and Assessment.objects.count() == 0


def test_a_refused_assessment_refuses_the_refill_with_the_message_on_its_field(filled, nurse):
    with travel(DUE_SOON_AT):
        response = signed_in(nurse).post(f"/pumps/{filled.pk}/refill/", refill_form(assessment_pain_score="12"))
    assert response.status_code == 400
    assert response.context["form"].errors == {
        "assessment_pain_score": ["Must be a whole number from 0 to 10 (or blank: not assessed)."]}
    assert '<details id="assessment-section" open>' in response.content.decode()
    assert Refill.objects.count() == 1 and Assessment.objects.count() == 0


# -------------------------------------------------------------- co-medication

def test_add_stop_and_void_a_co_medication_from_the_pump_page(filled, nurse):
    client = signed_in(nurse)
    with travel(DUE_SOON_AT):
        added = client.post(f"/pumps/{filled.pk}/comedications/", {
            "name": "oxycodone 10 mg twice a day", "category": "opioid", "started_on": "2026-03-20", "notes": ""})
        assert added.status_code == 302 and added["Location"] == f"/pumps/{filled.pk}/#dose-response"
        med = CoMedication.objects.get()
        assert (med.patient, med.category, med.started_on, med.recorded_by) == (
            filled.patient, "opioid", date(2026, 3, 20), nurse)
        early = client.post(f"/pumps/{filled.pk}/comedications/{med.pk}/stop/", {"stopped_on": "2026-03-19"})
        assert early.status_code == 400
        assert early.context["form"].errors == {"stopped_on": ["The stop date is before the start date (2026-03-20)."]}
        stopped = client.post(f"/pumps/{filled.pk}/comedications/{med.pk}/stop/", {"stopped_on": "2026-03-27"})
        assert stopped.status_code == 302
        med.refresh_from_db()
        assert med.stopped_on == date(2026, 3, 27)
        rows = section(client.get(f"/pumps/{filled.pk}/").content.decode(), "dose-heading")
        assert "oxycodone 10 mg twice a day opioid 2026-03-20 2026-03-27 stopped" in rows
        assert "Active CNS depressant" not in rows
        voided = client.post(f"/pumps/{filled.pk}/comedications/{med.pk}/void/", {"reason": "entered twice"})
        assert voided.status_code == 302
    med.refresh_from_db()
    assert (med.void_reason, med.voided_by) == ("entered twice", nurse)
    # the audit history of the pump page keeps the patient's co-medication changes
    with travel(DUE_SOON_AT):
        audit = section(client.get(f"/pumps/{filled.pk}/").content.decode(), "audit-heading")
    assert f"CoMedication #{med.pk} changed" in audit
    assert "stopped on: — → 2026-03-27" in audit
    assert "void reason: — → entered twice" in audit


@pytest.mark.parametrize(("overrides", "errors"), [
    ({"started_on": "2026-03-29"},
     {"started_on": ["This date is in the future: record a co-medication from the day it starts."]}),
    ({"name": "oxycodone\t10 mg"},
     {"name": ["Remove line breaks, tabs and other control characters from this field."]}),
    ({"category": ""}, {"category": ["This field is required."]}),
])
def test_co_medication_messages_go_on_their_fields(filled, nurse, overrides, errors):
    data = {"name": "oxycodone 10 mg twice a day", "category": "opioid", "started_on": "2026-03-20", "notes": ""}
    with travel(DUE_SOON_AT):
        response = signed_in(nurse).post(f"/pumps/{filled.pk}/comedications/", {**data, **overrides})
    assert response.status_code == 400
    assert response.context["form"].errors == errors
    assert CoMedication.objects.count() == 0


def test_another_patients_co_medication_is_not_found_through_this_pump(filled, nurse, clinic):
    from tests.factories import make_patient

    other = make_patient(clinic, mrn="MRN002", family_name="Lopez", given_name="Eva")
    med = CoMedication.objects.create(patient=other, name="diazepam 5 mg", category="benzodiazepine",
                                      started_on=date(2026, 3, 1))
    with travel(DUE_SOON_AT):
        client = signed_in(nurse)
        assert client.post(f"/pumps/{filled.pk}/comedications/{med.pk}/stop/",
                           {"stopped_on": "2026-03-27"}).status_code == 404
        assert client.get(f"/pumps/{filled.pk}/comedications/{med.pk}/void/").status_code == 404


# ------------------------------------------------- the interaction on a dose increase

INCREASE_AT = datetime(2026, 3, 4, 9, 0, tzinfo=CHICAGO)
MSG_INTERACTION = ("The daily dose rises from 540 to 600 mcg/day while the patient takes oxycodone 10 mg twice a day "
                   "(opioid): CNS depressants add to baclofen's sedation and respiratory depression. Confirm the "
                   "increase with comedication_confirmed.")


def program_form(**overrides):
    data = {"effective_at": "2026-03-04T09:00", "concentration_mcg_per_ml": "1000", "mode": "continuous",
            "daily_dose_mcg": "600", "steps": "", "override_reason": "", "withdrawal_plan": "",
            "oral_bridge_dose": "", "withdrawal_plan_reason": ""}
    data.update(overrides)
    return data


def test_a_dose_increase_with_an_active_opioid_needs_the_confirmation(filled, history, clinic):
    from tests.factories import make_user

    client = signed_in(make_user("dr_lee", clinic, "prescriber"))
    with travel(INCREASE_AT):
        page = text_of(client.get(f"/pumps/{filled.pk}/program/").content.decode())
        assert ("CNS-depressant co-medication The patient takes oxycodone 10 mg twice a day (opioid). These add to "
                "the sedation and respiratory depression of intrathecal baclofen. I have weighed the CNS "
                "depressant(s) above and confirm this dose increase") in page
        preview = text_of(client.post(f"/pumps/{filled.pk}/program/preview/", program_form()).content.decode())
        assert ("Co-medication The daily dose rises from 540 to 600 mcg/day while the patient takes oxycodone 10 mg "
                "twice a day (opioid): CNS depressants add to baclofen's sedation and respiratory depression. Confirm "
                "the increase to save it.") in preview
        refused = client.post(f"/pumps/{filled.pk}/program/", program_form())
        assert refused.status_code == 400
        assert refused.context["form"].errors == {"comedication_confirmed": [MSG_INTERACTION]}
        assert ("The daily dose rises from 540 to 600 mcg/day while the patient takes oxycodone 10 mg twice a day "
                "(opioid): tick the confirmation to save this increase.") in text_of(refused.content.decode())
        saved = client.post(f"/pumps/{filled.pk}/program/", program_form(comedication_confirmed="on"))
    assert saved.status_code == 302
    program = filled.programs.latest("effective_at")
    assert (program.daily_dose_mcg, program.comedication_confirmed, program.comedication_summary) == (
        D("600"), True, "oxycodone 10 mg twice a day (opioid)")


def test_a_lower_dose_needs_no_confirmation(filled, history, clinic):
    from tests.factories import make_user

    client = signed_in(make_user("dr_lee", clinic, "prescriber"))
    with travel(INCREASE_AT):
        preview = text_of(client.post(f"/pumps/{filled.pk}/program/preview/",
                                      program_form(daily_dose_mcg="500")).content.decode())
        saved = client.post(f"/pumps/{filled.pk}/program/", program_form(daily_dose_mcg="500"))
    assert "Co-medication" not in preview
    assert saved.status_code == 302 and filled.programs.latest("effective_at").comedication_confirmed is False


def test_a_refill_carrying_an_increase_needs_the_confirmation_too(filled, history, prescriber):
    client = signed_in(prescriber)
    data = refill_form(changes_program="on", program_daily_dose_mcg="600")
    with travel(DUE_SOON_AT):
        assert "The patient takes oxycodone 10 mg twice a day (opioid)." in text_of(
            client.get(f"/pumps/{filled.pk}/refill/").content.decode())
        refused = client.post(f"/pumps/{filled.pk}/refill/", data)
        assert refused.status_code == 400
        assert refused.context["form"].errors == {"program_comedication_confirmed": [MSG_INTERACTION]}
        saved = client.post(f"/pumps/{filled.pk}/refill/", {**data, "program_comedication_confirmed": "on"})
    assert saved.status_code == 302
    assert filled.programs.latest("effective_at").comedication_summary == "oxycodone 10 mg twice a day (opioid)"


def test_a_back_dated_refill_shows_the_co_medication_active_on_its_day(filled, nurse, prescriber):
    """The confirmation the save asks for is shown for the refill's day, not today's: an
    opioid stopped two days ago was active when the back-dated refill was done."""
    CoMedication.objects.create(patient=filled.patient, name="oxycodone 10 mg twice a day", category="opioid",
                                started_on=date(2026, 3, 1), stopped_on=date(2026, 3, 26), recorded_by=nurse)
    client = signed_in(prescriber)
    data = refill_form(performed_at="2026-03-25T11:00", changes_program="on", program_daily_dose_mcg="600")
    with travel(DUE_SOON_AT):
        assert "The patient takes oxycodone" not in text_of(client.get(f"/pumps/{filled.pk}/refill/").content.decode())
        refused = client.post(f"/pumps/{filled.pk}/refill/", data)
    assert refused.status_code == 400
    assert refused.context["form"].errors["program_comedication_confirmed"][0].startswith(
        "The daily dose rises from 540 to 600 mcg/day while the patient takes oxycodone 10 mg twice a day (opioid)")
    assert "The patient takes oxycodone 10 mg twice a day (opioid)." in text_of(refused.content.decode())


# ------------------------------------------------------ no stop without a plan

MSG_PLAN_PROGRAM = ("This program stops delivery (0 mcg/day and no on-demand bolus): give the withdrawal plan "
                    "(taper_completed, oral_bridge with its dose, or none with a reason).")
MSG_PLAN_EXPLANT = ("An explant stops intrathecal baclofen: give the withdrawal plan (taper_completed, oral_bridge "
                    "with its dose, or none with a reason).")


def test_a_program_of_zero_asks_for_the_withdrawal_plan(filled, prescriber, clinic):
    from tests.factories import make_user

    client = signed_in(make_user("dr_lee", clinic, "prescriber"))
    with travel(INCREASE_AT):
        preview = text_of(client.post(f"/pumps/{filled.pk}/program/preview/",
                                      program_form(daily_dose_mcg="0")).content.decode())
        assert "Delivery This program stops delivery: give the plan against withdrawal." in preview
        missing = client.post(f"/pumps/{filled.pk}/program/", program_form(daily_dose_mcg="0"))
        assert missing.status_code == 400
        assert missing.context["form"].errors == {"withdrawal_plan": [MSG_PLAN_PROGRAM]}
        assert '<details id="withdrawal-plan-section" open>' in missing.content.decode()
        no_dose = client.post(f"/pumps/{filled.pk}/program/",
                              program_form(daily_dose_mcg="0", withdrawal_plan="oral_bridge"))
        assert no_dose.context["form"].errors == {
            "oral_bridge_dose": ["Give the oral baclofen bridge dose (for example 10 mg four times a day)."]}
        saved = client.post(f"/pumps/{filled.pk}/program/", program_form(
            daily_dose_mcg="0", withdrawal_plan="oral_bridge", oral_bridge_dose="10 mg four times a day"))
    assert saved.status_code == 302
    plan = WithdrawalPlan.objects.get()
    assert (plan.stop, plan.plan, plan.oral_bridge_dose, plan.program.daily_dose_mcg) == (
        "program", "oral_bridge", "10 mg four times a day", D("0"))


def test_the_explant_asks_for_the_withdrawal_plan(filled, nurse):
    client = signed_in(nurse)
    with travel(DUE_SOON_AT):
        page = text_of(client.get(f"/pumps/{filled.pk}/explant/").content.decode())
        assert ("Plan against withdrawal: Stopping intrathecal baclofen abruptly can cause life-threatening "
                "withdrawal. taper completed oral baclofen bridge none Oral baclofen bridge: dose:") in page
        missing = client.post(f"/pumps/{filled.pk}/explant/", {"explanted_on": "2026-03-28", "reason": "infection"})
        assert missing.status_code == 400
        assert missing.context["form"].errors == {"withdrawal_plan": [MSG_PLAN_EXPLANT]}
        no_reason = client.post(f"/pumps/{filled.pk}/explant/", {"explanted_on": "2026-03-28", "reason": "infection",
                                                                 "withdrawal_plan": "none"})
        assert no_reason.context["form"].errors == {
            "withdrawal_plan_reason": ["Give the reason there is no plan against withdrawal."]}
        filled.refresh_from_db()
        assert filled.explanted_on is None
        saved = client.post(f"/pumps/{filled.pk}/explant/", {
            "explanted_on": "2026-03-28", "reason": "infection", "withdrawal_plan": "none",
            "withdrawal_plan_reason": "Transferred to intensive care; oral route not possible"})
    assert saved.status_code == 302
    filled.refresh_from_db()
    assert filled.explanted_on == date(2026, 3, 28)
    plan = WithdrawalPlan.objects.get()
    assert (plan.stop, plan.plan, plan.reason) == ("explant", "none",
                                                   "Transferred to intensive care; oral route not possible")
    alert = Alert.objects.get(kind=AlertKind.WITHDRAWAL_RISK, episode=f"stop:{plan.pk}")
    assert alert.severity == "critical" and alert.resolved_at is None


def test_the_add_co_medication_fields_are_the_forms_own(filled, nurse):
    """The pump page shows the fields of the empty co-medication form rendered once a day
    (``forms.comedication_fields_html``): as Django renders the form, with the page's date."""
    from django.template import Context, Template

    from pumps import forms

    form = forms.CoMedicationForm(initial={"started_on": "2026-03-28"})
    rendered = Template('{% for field in form %}<div class="field">{{ field.as_field_group }}</div>{% endfor %}')
    expected = rendered.render(Context({"form": form}))
    assert forms.comedication_fields_html("2026-03-28") == expected
    assert 'name="started_on" value="2026-03-28"' in expected
    assert forms.comedication_fields_html("2026-03-29") != expected
    with travel(DUE_SOON_AT):
        html = signed_in(nurse).get(f"/pumps/{filled.pk}/").content.decode()
    assert expected in html
