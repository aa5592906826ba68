"""The demo's dose-and-response stories (``pumps.demo.plan``, without a database): a dose
titrated up at every refill while the highest Ashworth grade falls; an overdose screen the
morning after a large increase; a patient on an opioid (and a benzodiazepine stopped)."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_FLOOR, Decimal
from itertools import pairwise

import pytest

from pumps import projection as pj
from pumps import symptoms
from pumps.demo import plan as pl
from pumps.demo.specs import RESPONSE_OPIOID, RESPONSE_OVERDOSE, RESPONSE_TITRATED
from tests.test_demo_plan import CATALOG, NOW

PUMPS = 30


@pytest.fixture(scope="module")
def planned():
    planner = pl.Planner.for_specs(seed=1, now=NOW, models=CATALOG)
    return planner, list(planner.plan_demo(PUMPS))


def story(planned, name: str) -> tuple[pl.Planner, pl.PlannedSlot]:
    planner, slots = planned
    found = [s for s in slots if s.slot.features.response == name]
    assert len(found) == 1
    return planner, found[0]


def test_the_titrated_dose_rises_at_every_refill_while_ashworth_falls(planned):
    _, slot = story(planned, RESPONSE_TITRATED)
    plan = slot.pump
    doses = [r.spec.daily for r in plan.refills]
    assert len(doses) == 5
    # the first fill starts low and rises day by day to the first maintenance dose (doses[1]'s
    # program before it), then each refill raises the dose by about 12 %
    assert doses[0] < plan.titrations[-1].spec.daily
    for before, after in pairwise([plan.titrations[-1].spec.daily, *doses[1:]]):
        assert after == (before * Decimal("1.12") / 5).to_integral_value(rounding=ROUND_FLOOR) * 5 > before
    assert all(r.new_program for r in plan.refills)
    assert [(a.refill, a.at) for a in plan.assessments] == [(i, r.at) for i, r in enumerate(plan.refills)]
    assert [a.highest for a in plan.assessments] == [3.0, 3.0, 2.0, 2.0, 1.5]
    assert [a.penn for a in plan.assessments] == [3, 3, 2, 2, 1]
    assert [a.pain for a in plan.assessments] == [7, 6, 5, 4, 3]
    assert plan.assessments[0].goal == "Stand for transfers without help; sleep through the night without spasms."
    assert all(not a.overdose and not a.withdrawal for a in plan.assessments)
    assert plan.reached == slot.slot.scenario == pj.STATUS_OVERDUE


def test_the_overdose_screen_is_the_morning_after_the_large_increase(planned):
    planner, slot = story(planned, RESPONSE_OVERDOSE)
    plan = slot.pump
    clinic = planner.clinics[slot.slot.clinic]
    increase = plan.refills[2]
    assert increase.new_program and increase.spec.override
    assert increase.spec.daily == (plan.refills[1].spec.daily * Decimal("1.25") / 5).to_integral_value() * 5
    screens = [a for a in plan.assessments if a.refill is None]
    assert len(screens) == 1
    screen = screens[0]
    assert screen.at == clinic.local(pj.local_date(increase.at, clinic.tz) + timedelta(days=1), 11, 0)
    assert timedelta(hours=12) < screen.at - increase.at < timedelta(hours=72)
    assert screen.at < plan.refills[3].at
    assert (screen.overdose, screen.withdrawal, screen.ashworth, screen.penn) == (
        ("drowsiness", "somnolence"), (), ("", "", "1", "1"), 0)
    assert screen.acknowledge.startswith("Seen in clinic: drowsy but rousable")
    # a negative screen with every refill: the later one settles the acknowledged alert
    assert [a.refill for a in plan.assessments] == [0, 1, 2, None, 3]


def test_the_opioid_patient_takes_oxycodone_now_and_took_diazepam_before(planned):
    planner, slot = story(planned, RESPONSE_OPIOID)
    plan = slot.pump
    clinic = planner.clinics[slot.slot.clinic]
    first = pj.local_date(plan.refills[0].at, clinic.tz)
    middle = pj.local_date(plan.refills[3].at, clinic.tz)
    assert [(c.name, c.category, c.started_on, c.stopped_on) for c in plan.comedications] == [
        ("diazepam 5 mg at night", "benzodiazepine", first + timedelta(days=7), first + timedelta(days=35)),
        ("oxycodone 10 mg twice a day", "opioid", middle - timedelta(days=12), None),
    ]
    assert plan.comedications[1].started_on <= planner.day
    assert len(plan.assessments) == len(plan.refills) == 6


def test_every_assessment_is_in_the_past_with_known_codes(planned):
    planner, slots = planned
    stories = [s for s in slots if s.slot.features.response]
    assert len(stories) == 3
    signs = {code for code, _ in symptoms.OVERDOSE_SIGNS} | {code for code, _ in symptoms.WITHDRAWAL_SIGNS}
    for item in stories:
        for a in item.pump.assessments:
            assert a.at <= planner.latest
            assert all(g == "" or g in symptoms.ASHWORTH_VALUE for g in a.ashworth)
            assert set(a.overdose) | set(a.withdrawal) <= signs
    others = [s.pump for s in slots if not s.slot.features.response and isinstance(s.pump, pl.PumpPlan)]
    assert others and all(not p.assessments and not p.comedications for p in others)
