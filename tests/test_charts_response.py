"""The response chart of the pump page (pumps/charts.py ``response_chart``): the basal
daily dose as a step line against the highest Modified Ashworth grade and the Penn spasm
frequency on one time axis, exact geometry for a small fixed history, and its table."""

from datetime import UTC, datetime
from decimal import Decimal as D

from pumps import charts
from pumps.models import Assessment, Program

JAN = [datetime(2026, 1, day, tzinfo=UTC) for day in range(1, 32)]
NOW = JAN[30]  # 2026-01-31 00:00 UTC: 30 days after the first record, 20 px a day over 600 px


def program(at, dose, **kw):
    return Program(effective_at=at, daily_dose_mcg=D(dose), concentration_mcg_per_ml=D("1000"), **kw)


def assessment(at, pk, **kw):
    return Assessment(pk=pk, assessed_at=at, **kw)


def history():
    programs = [program(JAN[0], "100"), program(JAN[10], "200"),
                program(JAN[15], "900", voided_at=JAN[16])]  # voided: not drawn
    assessments = [
        assessment(JAN[0], 1, ashworth_upper_left="2", ashworth_lower_left="3", ashworth_lower_right="1+",
                   penn_spasm_frequency=3),
        assessment(JAN[20], 2, ashworth_lower_left="1+", ashworth_lower_right="1", penn_spasm_frequency=1),
        assessment(JAN[25], 3, ashworth_lower_left="4", voided_at=JAN[26]),  # voided: not drawn
    ]
    return programs, assessments


def test_the_highest_grade_ranks_one_plus_between_one_and_two():
    assert charts.highest_ashworth(Assessment(ashworth_upper_left="1", ashworth_lower_right="1+")) == "1+"
    assert charts.highest_ashworth(Assessment(ashworth_upper_left="2", ashworth_lower_right="1+")) == "2"
    assert charts.highest_ashworth(Assessment()) is None


def test_no_chart_until_an_assessment_has_a_score():
    programs, _ = history()
    assert charts.response_chart(programs=programs, assessments=[], now=NOW, tz=UTC) is None
    unscored = [assessment(JAN[3], 9, goal_note="walk to the shop", overdose_drowsiness=True)]
    assert charts.response_chart(programs=programs, assessments=unscored, now=NOW, tz=UTC) is None


def test_geometry_of_a_small_history():
    programs, assessments = history()
    chart = charts.response_chart(programs=programs, assessments=assessments, now=NOW, tz=UTC)
    svg = str(chart.svg)
    assert svg.startswith('<svg class="chart" id="response-chart" viewBox="0 0 720 300" role="img" '
                          'aria-labelledby="response-chart-title response-chart-desc"')
    assert ('<title id="response-chart-title">Dose and response: daily dose (mcg/day), Ashworth and Penn scores'
            '</title>') in svg
    assert ('<desc id="response-chart-desc">Daily dose (left axis, mcg/day) against spasticity scores (right axis, '
            '0 to 4) from 2026-01-01 to 2026-01-31. Dose 100 mcg/day at first, 200 mcg/day now. Highest Modified '
            'Ashworth grade of the limbs (1+ drawn as 1.5): 3 on 2026-01-01, 1+ on 2026-01-21. Penn spasm '
            'frequency: 3 on 2026-01-01, 1 on 2026-01-21.</desc>') in svg
    # dose axis 0-230 mcg/day (the highest dose + 15 %) over 234 px: 100 -> y 152.3, 200 -> y 50.5;
    # the step rises at the second program (day 10: x 260) and runs to now (x 660)
    assert '<polyline points="60,152.3 260,152.3 260,50.5 660,50.5" class="series-dose" fill="none"/>' in svg
    # scores 0-4 over 234 px (58.5 px a grade): 3 -> y 78.5, 1+ (1.5) -> y 166.2, 1 -> y 195.5
    assert '<polyline points="60,78.5 460,166.2" class="series-ashworth" fill="none"/>' in svg
    assert '<polyline points="60,78.5 460,195.5" class="series-penn" fill="none"/>' in svg
    assert '<text x="460" y="158.2" class="chart-label" text-anchor="middle">1+</text>' in svg
    assert '<text x="60" y="70.5" class="chart-label" text-anchor="middle">3</text>' in svg
    assert '<text x="460" y="213.5" class="chart-label" text-anchor="middle">P1</text>' in svg
    # the dated time axis (Mondays) and both value axes
    for x, day in ((140, "2026-01-05"), (280, "2026-01-12"), (420, "2026-01-19"), (560, "2026-01-26")):
        assert f'<text x="{x}" y="272" class="chart-tick" text-anchor="middle">{day}</text>' in svg
    assert '<text x="54" y="54.5" class="chart-tick" text-anchor="end">200</text>' in svg
    assert '<text x="666" y="24" class="chart-tick" text-anchor="start">4</text>' in svg
    assert '<text x="666" y="258" class="chart-tick" text-anchor="start">0</text>' in svg
    assert 'transform="rotate(90 704 137)">score (0-4)</text>' in svg
    assert ">Daily dose (mcg/day)</text>" in svg and ">Highest Ashworth grade</text>" in svg
    assert ">Penn spasm frequency (P)</text>" in svg
    assert "900" not in svg and ">4<" not in svg.split("score (0-4)")[1]


def test_the_table_rows_merge_programs_and_assessments_in_time_order():
    programs, assessments = history()
    chart = charts.response_chart(programs=programs, assessments=assessments, now=NOW, tz=UTC)
    assert [(r.at, r.dose_mcg, r.program_change, r.ashworth, r.highest, r.penn) for r in chart.rows] == [
        (JAN[0], D("100"), True, (), None, None),
        (JAN[0], D("100"), False, ("2", "", "3", "1+"), "3", 3),
        (JAN[10], D("200"), True, (), None, None),
        (JAN[20], D("200"), False, ("", "", "1+", "1"), "1+", 1),
    ]


def test_an_assessment_before_any_program_starts_the_axis_and_has_no_dose():
    chart = charts.response_chart(programs=[program(JAN[10], "200")],
                                  assessments=[assessment(JAN[0], 1, penn_spasm_frequency=4)], now=NOW, tz=UTC)
    assert chart.rows[0].dose_mcg is None
    assert '<polyline points="260,50.5 660,50.5" class="series-dose" fill="none"/>' in str(chart.svg)
    assert 'class="series-ashworth" fill="none"' not in str(chart.svg)  # no limb graded: no Ashworth line
    assert '<polyline points="60,20" class="series-penn" fill="none"/>' in str(chart.svg)
