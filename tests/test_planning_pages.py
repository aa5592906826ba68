"""The refill planning page: proposals by day with each day's load, shortfalls first;
booking one pump, a day's proposals or all of them in one transaction (a pump booked
meanwhile is skipped and named); moves; roles; the capacity form of clinic admins."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from django.http import QueryDict

from clinic.models import Clinic
from pumps import services as s
from pumps import views_planning
from pumps.models import Appointment
from tests.factories import make_user
from tests.pages_support import (
    CHICAGO,
    DUE_SOON_AT,
    assert_no_inline_script,
    new_patient,
    signed_in,
    text_of,
    travel,
    worked_example,
)

DUE = date(2026, 4, 10)  # the worked example's due date (a Friday)


@pytest.fixture
def pumps(clinic, patient, prescriber):
    actor = s.Actor(prescriber)
    first = worked_example(patient, actor)
    second = worked_example(new_patient(clinic, "MRN002", "Baker", "Ben"), actor, serial="SN-0002")
    return first, second


def page(user, clinic, query=""):
    with travel(DUE_SOON_AT):
        return signed_in(user).get(f"/clinics/{clinic.code}/planning/{query}")


def book(user, clinic, *items, late=()):
    with travel(DUE_SOON_AT):
        return signed_in(user).post(f"/clinics/{clinic.code}/planning/book/",
                                    {"item": list(items), "late": list(late)}, follow=True)


def refills(pump):
    return list(Appointment.objects.filter(pump=pump, kind="refill").order_by("scheduled_for"))


def test_proposals_by_day_with_the_load(pumps, clinic, nurse):
    response = page(nurse, clinic)
    html = response.content.decode()
    assert response.status_code == 200
    assert_no_inline_script(html)
    text = text_of(html)
    assert "2 proposals on or before the due date, 0 shortfalls" in text
    assert "Friday 10 April 2026 (2026-04-10) 2 of 8 slots: 0 booked, 2 proposed." in text
    assert "Book this day's 2 proposals" in text and "Book all 2 proposals" in text
    assert f'value="{pumps[0].pk}:2026-04-10"' in html
    assert 'aria-label' in html and 'class="visually-hidden">Move MRN MRN001 to another day</label>' in html


def test_book_a_days_proposals(pumps, clinic, nurse):
    first, second = pumps
    response = book(nurse, clinic, f"{first.pk}:2026-04-10", f"{second.pk}:2026-04-10")
    text = text_of(response.content.decode())
    assert "Booked 2 refills: MRN MRN001 (AG) on 2026-04-10 09:00 CDT, MRN MRN002 (BB) on 2026-04-10 09:30 CDT." in text
    assert [a.scheduled_for for a in refills(first)] == [datetime(2026, 4, 10, 9, 0, tzinfo=CHICAGO)]
    assert [a.scheduled_for for a in refills(second)] == [datetime(2026, 4, 10, 9, 30, tzinfo=CHICAGO)]
    assert refills(first)[0].history.first().history_user == nurse
    after = text_of(page(nurse, clinic).content.decode())
    assert "0 proposals" in after and "2 of 8 slots: 2 booked, 0 proposed" in after
    with travel(DUE_SOON_AT):
        pump_page = text_of(signed_in(nurse).get(f"/pumps/{first.pk}/").content.decode())
        worklist = text_of(signed_in(nurse).get("/").content.decode())
    assert "2026-04-10 09:00" in pump_page
    assert "2026-04-10 09:00" in worklist


def test_a_pump_booked_meanwhile_is_skipped_and_named(pumps, clinic, nurse, prescriber):
    first, second = pumps
    page(nurse, clinic)  # the nurse sees both proposals ...
    with travel(DUE_SOON_AT):  # ... someone books the first from its own page ...
        s.schedule_appointment(pump=first, scheduled_for=datetime(2026, 4, 6, 14, 0, tzinfo=CHICAGO),
                               actor=s.Actor(prescriber))
    response = book(nurse, clinic, f"{first.pk}:2026-04-10", f"{second.pk}:2026-04-10")  # ... then books the day
    text = text_of(response.content.decode())
    assert "Booked 1 refill: MRN MRN002 (BB) on 2026-04-10 09:00 CDT." in text
    assert "Skipped 1 (nothing booked for it): MRN MRN001 (AG): booked meanwhile for 2026-04-06 14:00 CDT." in text
    assert len(refills(first)) == 1 and len(refills(second)) == 1


def test_capacity_shortfalls_first_and_a_full_day_is_skipped(pumps, clinic, nurse):
    clinic.refill_slots_per_day = 1
    clinic.refill_earliest_days = 0
    clinic.save()
    text = text_of(page(nurse, clinic).content.decode())
    assert "1 proposal on or before the due date, 1 shortfall" in text
    assert text.index("Shortfalls: no day") < text.index("Proposals by day")
    assert "capacity every slot of its window is taken" in text
    assert "2026-04-09 (Thu) before the window" in text  # the latest free day before its window
    first, second = pumps
    response = book(nurse, clinic, f"{first.pk}:2026-04-10", f"{second.pk}:2026-04-10")
    text = text_of(response.content.decode())
    assert "Booked 1 refill" in text and "MRN MRN002 (BB): 2026-04-10 is full" in text
    # a shortfall is booked outside its window only one by one, when named as late
    response = book(nurse, clinic, f"{second.pk}:2026-04-09")
    assert "is no longer in its window" in text_of(response.content.decode())
    response = book(nurse, clinic, f"{second.pk}:2026-04-09", late=[f"{second.pk}:2026-04-09"])
    assert "Booked 1 refill: MRN MRN002 (BB) on 2026-04-09 09:00 CDT." in text_of(response.content.decode())


def test_move_to_another_day_shows_the_capacity(pumps, clinic, nurse):
    first, _ = pumps
    response = page(nurse, clinic, f"?move={first.pk}:2026-04-07")
    html = response.content.decode()
    text = text_of(html)
    assert "Tuesday 7 April 2026 (2026-04-07) 1 of 8 slots: 0 booked, 1 proposed." in text
    assert "moved" in text
    assert f'<option value="{first.pk}:2026-04-08">2026-04-08 (Wed) · 0 of 8 taken</option>' in html
    with travel(DUE_SOON_AT):
        partial = signed_in(nurse).get(f"/clinics/{clinic.code}/planning/?move={first.pk}:2026-04-07",
                                       HTTP_HX_REQUEST="true", HTTP_HX_TARGET="planning-plan")
    assert partial.content.decode().startswith('<div id="planning-plan"')


def test_viewer_sees_but_does_not_book_and_other_clinics_answer_404(pumps, clinic, other_clinic):
    viewer = make_user("val", clinic, "viewer")
    html = page(viewer, clinic).content.decode()
    assert "Book all" not in html and "2 proposals" in text_of(html)
    assert book(viewer, clinic, f"{pumps[0].pk}:2026-04-10").status_code == 403
    outsider = make_user("otto", other_clinic, "nurse")
    assert page(outsider, clinic).status_code == 404
    assert book(outsider, clinic, f"{pumps[0].pk}:2026-04-10").status_code == 404
    assert Appointment.objects.count() == 0


def test_admin_edits_the_capacity_nurse_may_not(clinic, nurse):
    admin = make_user("ada", clinic, "admin")
    data = {"refill_slots_per_day": "6", "refill_earliest_days": "10", "refill_first_visit": "08:30",
            "slots_0": "", "slots_1": "", "slots_2": "3", "slots_3": "", "slots_4": "", "slots_5": "", "slots_6": ""}
    assert "Refill capacity" not in page(nurse, clinic).content.decode()
    assert signed_in(nurse).post(f"/clinics/{clinic.code}/planning/capacity/", data).status_code == 403
    response = signed_in(admin).post(f"/clinics/{clinic.code}/planning/capacity/", data)
    assert response.status_code == 302
    clinic = Clinic.objects.get(pk=clinic.pk)
    assert (clinic.refill_slots_per_day, clinic.refill_earliest_days, clinic.refill_first_visit.isoformat()) == (
        6, 10, "08:30:00")
    assert clinic.refill_slots_by_weekday == [None, None, 3, None, None, None, None]
    assert clinic.history.first().history_user == admin
    bad = signed_in(admin).post(f"/clinics/{clinic.code}/planning/capacity/", {**data, "slots_2": "-1"})
    assert bad.status_code == 400 and "greater than or equal to 0" in bad.content.decode()


def test_planning_index_goes_to_the_users_clinic(clinic, nurse):
    response = signed_in(nurse).get("/planning/")
    assert response.status_code == 302 and response["Location"] == f"/clinics/{clinic.code}/planning/"


def test_booking_assigns_to_the_signed_in_user_unless_unticked(pumps, clinic, nurse):
    first, second = pumps
    html = page(nurse, clinic).content.decode()
    assert '<input type="checkbox" id="id_assign" name="assign" value="1"' in html and " checked>" in html
    assert html.count('<input type="hidden" name="assign" value="1">') >= 3  # every booking form carries it
    response = book(nurse, clinic, f"{first.pk}:2026-04-10")
    assert "Booked 1 refill: MRN MRN001 (AG) on 2026-04-10 09:00 CDT. Assigned to you." in text_of(
        response.content.decode())
    assert refills(first)[0].assigned_to == nurse
    # unticked: the page carries the choice to its booking forms, and the booking assigns nobody
    unticked = page(nurse, clinic, "?assign=0").content.decode()
    assert 'name="assign" value="1" aria-describedby="id_assign_help">' in unticked
    assert '<input type="hidden" name="assign" value="0">' in unticked.split('id="planning-plan"', 1)[1]
    with travel(DUE_SOON_AT):
        response = signed_in(nurse).post(f"/clinics/{clinic.code}/planning/book/",
                                         {"item": [f"{second.pk}:2026-04-10"], "assign": "0"})
    assert response.status_code == 302 and response["Location"].endswith("/planning/?assign=0")
    assert refills(second)[0].assigned_to is None
    # the checkbox's hidden 0 and its 1: the last one wins
    assert views_planning.assign_to_me(QueryDict("assign=0&assign=1"))
    assert not views_planning.assign_to_me(QueryDict("assign=0"))
    assert views_planning.assign_to_me(QueryDict(""))


def test_a_viewer_has_no_assign_checkbox_but_a_feed_of_their_own(pumps, clinic):
    html = page(make_user("val", clinic, "viewer"), clinic).content.decode()
    assert 'id="id_assign"' not in html and "Create my calendar feed" in html
