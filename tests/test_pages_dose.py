"""Dose and response on the staff pages (docs/clinical-rules.md §15): the pump page's
assessments (signs in words, the alerts they opened, void), the patient's CNS depressants
(add, stop, void), the response chart with its table, the assessment page, the worksheet,
the co-medication confirmation on the program form and the withdrawal plan on a stop."""

import re
from datetime import date, datetime
from decimal import Decimal as D

import pytest

from pumps import services as s
from pumps.models import Assessment, CoMedication
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
