"""What must never be missed, wherever staff look: an explanted pump shows as inactive with
nothing projected; open critical alerts are spelled out on the worklist (and come first
within their status on the page), the pump page and the worksheet; an empty pump with a
withdrawal alert says so on the worksheet; an expired drug is named as the cause; past
instants read "since … (n days ago)", future ones "(in n days)"."""

import re
from datetime import date, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pumps import services as s
from pumps.alerting.acknowledge import acknowledge
from pumps.alerting.evaluate import evaluate_pump
from pumps.models import Alert
from tests.pages_support import CHICAGO, new_patient, signed_in, text_of, travel, worked_example

IN_ALARM = datetime(2026, 3, 28, 12, 0, tzinfo=CHICAGO)


def rows(html: str) -> list[tuple[str, str]]:
    """(status, MRN) of each worklist row, in order."""
    return re.findall(r'<tr class="row-[a-z_]+(?: needs-action)?" data-status="([a-z_]+)".*?MRN (MRN-[A-Z0-9]+)<', html,
                      re.S)


@pytest.fixture
def explanted(patient, nurse, prescriber):
    pump = worked_example(patient, s.Actor(prescriber))
    s.explant_pump(withdrawal_plan="taper_completed", pump=pump, explanted_on=date(2026, 3, 20), reason="infection", actor=s.Actor(nurse),
                   now=datetime(2026, 3, 20, 15, tzinfo=CHICAGO))
    pump.refresh_from_db()
    return pump


def test_an_explanted_pump_shows_as_inactive_with_nothing_projected(explanted, nurse):
    with travel(IN_ALARM):
        html = signed_in(nurse).get(f"/pumps/{explanted.pk}/").content.decode()
    text = text_of(html)
    assert ("Inactive Explanted on 2026-03-20 (infection): this pump is no longer in use; no projection, refill or "
            "booking applies.") in text
    assert ("Reservoir now Inactive: explanted on 2026-03-20. Nothing is projected for a pump that is no longer "
            "implanted; its history stays below. Implanted 2026-01-15; explanted 2026-03-20 MRI") in text
    assert "No volume projection to chart: the pump is explanted or the patient is not active." in text
    for absent in ("Refill due", "Volume now", "Low-reservoir alarm", "Book one", "Record refill", "Next refill "
                   "appointment", "Withdrawal risk now", 'id="volume-chart"', "Refill worksheet"):
        assert absent not in html, absent
    # its history stays
    assert "2026-02-02 09:00 CST first fill — — — 36 36 1000 mcg/mL dr_pat" in text


def test_explanted_pump_worksheet_says_no_refill(explanted, nurse):
    with travel(IN_ALARM):
        text = text_of(signed_in(nurse).get(f"/pumps/{explanted.pk}/worksheet/").content.decode())
    assert "This visit Explanted on 2026-03-20: no refill of this pump." in text
    assert "Expected residual" not in text and "Refill due" not in text


@pytest.fixture
def two_in_alarm(clinic, prescriber):
    """Two pumps at the low-reservoir alarm on 2026-03-28 12:00 with the same due date
    (Friday 03-20): A reaches its alarm first (03-27 18:00), so the worklist's order puts A
    first; only B has had its alerts raised."""
    actor = s.Actor(prescriber)
    a = worked_example(new_patient(clinic, "MRN-A", "Adams", "Al"), actor, serial="A1", added="26")
    b = worked_example(new_patient(clinic, "MRN-B", "Brown", "Bo"), actor, serial="B1", added="26.2")
    evaluate_pump(b, IN_ALARM)
    return a, b


def test_worklist_spells_out_the_most_severe_open_alert_and_puts_critical_first(two_in_alarm, nurse):
    a, b = two_in_alarm
    with travel(IN_ALARM):
        client = signed_in(nurse)
        html = client.get("/").content.decode()
    assert rows(html) == [("alarm", "MRN-B"), ("alarm", "MRN-A")]
    text = text_of(html)
    assert "Needs action now (2)" in text
    assert ("Low-reservoir alarm At the low-reservoir alarm since 2026-03-28 04:40 CDT (7 hours ago) (worst case); "
            "empty 2026-04-01 15:20 CDT (in 4 days) Critical: low reservoir not acknowledged; +2 open Brown, Bo") in text
    assert ("Low-reservoir alarm At the low-reservoir alarm since 2026-03-27 18:00 CDT (18 hours ago) (worst case); "
            "empty 2026-04-01 04:40 CDT (in 3 days) Adams, Al") in text
    # the marker is words, with its severity as data for the style (never colour alone)
    assert '<span class="alert-marker sev-critical" data-severity="critical">Critical: low reservoir</span>' in html
    # volume now and the alarm column in the right tense
    assert "Brown, Bo MRN MRN-B ≈1.86 5 % 7 hours ago 8 days overdue" in text

    # acknowledged: still marked, with who; an unacknowledged critical alert elsewhere would rank first
    alert = Alert.objects.get(pump=b, kind="low_reservoir")
    acknowledge(alert, user=nurse, reason="refill booked today", now=IN_ALARM)
    with travel(IN_ALARM):
        html = client.get("/").content.decode()
    assert rows(html) == [("alarm", "MRN-B"), ("alarm", "MRN-A")]
    assert "Critical: low reservoir acknowledged by nina; +2 open Brown, Bo" in text_of(html)


def test_a_critical_alert_on_a_later_page_joins_the_first_pages_band(two_in_alarm, nurse, settings):
    """Pages come from the index in the worklist's order, and B (an open critical alert) is
    on page 2; the first page's "Needs action now" band lists it too, first (no critical
    alert waits on a later page), and page 2 still shows it at its place."""
    settings.WORKLIST_PAGE_SIZE = 1
    with travel(IN_ALARM):
        client = signed_in(nurse)
        first, second = (client.get("/", {"page": n}).content.decode() for n in (1, 2))
    assert rows(first) == [("alarm", "MRN-B"), ("alarm", "MRN-A")]
    assert rows(second) == [("alarm", "MRN-B")]


def test_the_band_takes_from_later_pages_only_pumps_with_an_open_critical_alert(two_in_alarm, clinic, prescriber,
                                                                                nurse, settings):
    """Page size 1: A (at the alarm, no alert raised yet) is the first page's row; B (an
    open critical alert, on page 2) joins its band; C (later in the order, no alert) does
    not. The three pumps' stored status is stale (no sweep since their refills), so B
    comes from the pumps read apart, and the page's queries are those of a worklist
    without any critical alert."""
    worked_example(new_patient(clinic, "MRN-C", "Cole", "Cy"), s.Actor(prescriber), serial="C1")
    settings.WORKLIST_PAGE_SIZE = 1
    with travel(IN_ALARM):
        client = signed_in(nurse)
        client.get("/")  # the session's first request stores its start
        with CaptureQueriesContext(connection) as with_critical:
            first = client.get("/").content.decode()
        third = client.get("/", {"page": 3}).content.decode()
        Alert.objects.filter(pump=two_in_alarm[1]).update(severity="warning")
        with CaptureQueriesContext(connection) as without:
            client.get("/")
    assert rows(first) == [("alarm", "MRN-B"), ("alarm", "MRN-A")]
    assert [mrn for _, mrn in rows(third)] == ["MRN-C"]
    assert len(with_critical) == len(without) == 13


@pytest.fixture
def empty_with_withdrawal_alert(patient, prescriber):
    """20 mL at 0.45 mL/day from 2026-02-02 09:00: empty (worst case) on 2026-03-18 20:40 CDT."""
    patient.withdrawal_high_risk = False
    patient.save()
    pump = worked_example(patient, s.Actor(prescriber), added="20")
    evaluate_pump(pump, IN_ALARM)
    pump.refresh_from_db()
    return pump


def test_worksheet_and_pump_page_of_an_empty_pump_with_a_withdrawal_alert(empty_with_withdrawal_alert, nurse):
    pump = empty_with_withdrawal_alert
    assert Alert.objects.filter(pump=pump, kind="withdrawal_risk", resolved_at__isnull=True).count() == 1
    with travel(IN_ALARM):
        client = signed_in(nurse)
        sheet = text_of(client.get(f"/pumps/{pump.pk}/worksheet/").content.decode())
        page = text_of(client.get(f"/pumps/{pump.pk}/").content.decode())
    status = "Empty Empty since 2026-03-18 20:40 CDT (9 days ago) (worst case)"
    withdrawal = ("Withdrawal risk now: empty since 2026-03-18 20:40 CDT (9 days ago) (worst case); a withdrawal-risk "
                  "alert is open.")
    for text in (sheet, page):
        assert f"{status} {withdrawal}" in text
        assert "Critical: withdrawal risk —" in text
    assert "not flagged" not in sheet
    assert ("Withdrawal risk NOW — empty since 2026-03-18 20:40 CDT (9 days ago) (worst case); a withdrawal-risk "
            "alert is open Pump") in sheet
    assert "Worst-case empty since 2026-03-18 20:40 CDT (9 days ago)" in sheet
    assert "Empty since 2026-03-18 20:40 CDT (9 days ago) worst case" in page


@pytest.fixture
def drug_expired(patient, prescriber):
    """50 mcg/day at 1000 mcg/mL (0.05 mL/day): 36 mL lasts two years, but baclofen is
    stable 180 days: the drug expires 2026-08-01 10:00 CDT and sets the due date."""
    patient.withdrawal_high_risk = False
    patient.save()
    return worked_example(patient, s.Actor(prescriber), dose="50")


def test_an_expired_drug_is_named_as_the_cause(drug_expired, nurse):
    at = datetime(2026, 8, 10, 12, tzinfo=CHICAGO)
    with travel(at):
        client = signed_in(nurse)
        worklist = text_of(client.get("/").content.decode())
        page = text_of(client.get(f"/pumps/{drug_expired.pk}/").content.decode())
        sheet = text_of(client.get(f"/pumps/{drug_expired.pk}/worksheet/").content.decode())
    reason = "Overdue: drug expired on 2026-08-01 (9 days ago)"
    assert f"Refill overdue {reason}" in worklist
    assert f"Refill overdue {reason}" in page
    assert f"Refill overdue {reason}" in sheet
    assert "Drug expired 2026-08-01 10:00 CDT (9 days ago)" in page
    assert "Drug expired 2026-08-01 10:00 CDT (9 days ago)" in sheet


def test_an_explant_without_a_withdrawal_plan_stays_in_the_needs_action_band(clinic, nurse, prescriber):
    """docs/clinical-rules.md §15: the stop's critical withdrawal_risk alert outlives the
    explant, so the pump stays in "Needs action now" (though inactive) and its pages say
    withdrawal risk while the alert is open."""
    pump = worked_example(new_patient(clinic, "MRN-E", "Evans", "Eve"), s.Actor(prescriber))
    s.explant_pump(withdrawal_plan="none", withdrawal_plan_reason="the family declined an oral bridge", pump=pump,
                   explanted_on=date(2026, 3, 27), reason="infection", actor=s.Actor(prescriber),
                   now=datetime(2026, 3, 27, 15, tzinfo=CHICAGO))
    alert = Alert.objects.get(pump=pump, kind="withdrawal_risk", resolved_at__isnull=True)
    with travel(IN_ALARM):
        client = signed_in(nurse)
        html = client.get("/").content.decode()
        page = text_of(client.get(f"/pumps/{pump.pk}/").content.decode())
    assert rows(html) == [("inactive", "MRN-E")]
    assert "Needs action now (1)" in text_of(html)
    assert "a withdrawal-risk alert is open" in page
    acknowledge(alert, user=nurse, reason="oral baclofen started on the ward", now=IN_ALARM)
    with travel(IN_ALARM):
        html = client.get("/").content.decode()
    # acknowledging stops the reminders, not the marker: the window has not passed yet
    assert rows(html) == [("inactive", "MRN-E")]
    assert "acknowledged by nina" in text_of(html)
