"""Readings, events (MRI), explant and replacement, appointments with iCalendar download,
voiding a record, and the printable refill worksheet."""

from datetime import date, datetime
from decimal import Decimal as D

import pytest

from pumps import services as s
from pumps.models import Alert, Appointment, Event, Pump, Reading, Refill
from tests.factories import make_user
from tests.pages_support import CHICAGO, DUE_SOON_AT, signed_in, text_of, travel, worked_example


@pytest.fixture
def filled(patient, nurse):
    return worked_example(patient, s.Actor(nurse))


def test_reading_re_anchors_the_projection(filled, nurse):
    with travel(DUE_SOON_AT):
        client = signed_in(nurse)
        response = client.post(f"/pumps/{filled.pk}/reading/", {"read_at": "2026-03-27T09:00",
                                                                  "reservoir_volume_ml": "14.7"})
        assert response.status_code == 302
        assert response["Location"] == f"/pumps/{filled.pk}/#summary"
        text = text_of(client.get(response["Location"]).content.decode())
    assert "Reading recorded." in text
    # 14.7 mL at 0.45: alarm after 28.2 days -> 2026-04-24 14:12 CDT; due Friday 04-17
    assert "Refill due 2026-04-17 (Fri), in 20 days." in text
    assert "Anchored on 14.7 mL at 2026-03-27 09:00 CDT" in text
    assert Reading.objects.get().performed_by == nurse


def test_reading_above_capacity_is_refused_on_its_field(filled, nurse):
    with travel(DUE_SOON_AT):
        html = signed_in(nurse).post(f"/pumps/{filled.pk}/reading/", {"read_at": "2026-03-27T09:00",
                                                                        "reservoir_volume_ml": "41"}).content.decode()
    assert ('<ul class="errorlist" id="id_reservoir_volume_ml_error"><li>Exceeds the reservoir capacity of 40 mL.'
            "</li></ul>") in html


def test_mri_event_on_a_synchromed_raises_the_post_mri_alert(filled, nurse):
    with travel(DUE_SOON_AT):
        response = signed_in(nurse).post(f"/pumps/{filled.pk}/event/", {"kind": "mri", "occurred_at": "2026-03-28T08:00",
                                                                          "notes": "brain MRI"})
    assert response.status_code == 302
    assert Event.objects.get().kind == "mri"
    assert Alert.objects.filter(pump=filled, kind="post_mri_check").count() == 1


def test_explant_and_replacement(filled, nurse):
    with travel(DUE_SOON_AT):
        client = signed_in(nurse)
        replaced = client.post(f"/pumps/{filled.pk}/replace/", {
            "replaced_on": "2026-03-27", "model": "8637-20", "serial_number": "NEW-1", "udi": "",
            "low_reservoir_alarm_ml": "4", "reason": "end of battery life",
        })
        new = Pump.objects.get(serial_number="NEW-1")
        assert replaced.status_code == 302
        assert replaced["Location"] == f"/pumps/{new.pk}/#summary"
        page = text_of(client.get(f"/pumps/{filled.pk}/").content.decode())
        again = client.post(f"/pumps/{filled.pk}/explant/", {"explanted_on": "2026-03-27", "reason": ""})
    filled.refresh_from_db()
    assert (filled.explanted_on, filled.explant_reason) == (date(2026, 3, 27), "end of battery life")
    assert (new.low_reservoir_alarm_ml, new.implanted_on, new.model.code) == (D("4"), date(2026, 3, 27), "8637-20")
    assert "explanted 2026-03-27" in page
    assert "Inactive" in page
    assert "No volume projection to chart: the pump is explanted or the patient is not active." in page
    assert "Record refill" not in page
    assert "This pump was already explanted on 2026-03-27." in again.content.decode()


def test_appointment_booking_status_and_ics(filled, nurse):
    with travel(DUE_SOON_AT):
        client = signed_in(nurse)
        form = client.get(f"/pumps/{filled.pk}/appointments/").content.decode()
        assert 'value="2026-03-29T09:00"' in form  # tomorrow 09:00 local
        booked = client.post(f"/pumps/{filled.pk}/appointments/", {"scheduled_for": "2026-04-07T09:30", "kind": "refill",
                                                                     "notes": "bring gablofen"})
        assert booked.status_code == 302
        appointment = Appointment.objects.get()
        ics = client.get(f"/appointments/{appointment.pk}.ics")
        done = client.post(f"/appointments/{appointment.pk}/", {"status": "cancelled"})
    assert appointment.scheduled_for == datetime(2026, 4, 7, 9, 30, tzinfo=CHICAGO)
    assert ics["Content-Type"] == "text/calendar; charset=utf-8"
    assert ics["Content-Disposition"] == f'attachment; filename="appointment-{appointment.pk}.ics"'
    body = ics.content.decode()
    assert "DTSTART:20260407T143000Z" in body
    assert "SUMMARY:Pump refill: MRN MRN001 (AG)" in body
    assert done.status_code == 302
    appointment.refresh_from_db()
    assert appointment.status == "cancelled"


def test_void_a_refill_with_a_reason(filled, nurse):
    refill = Refill.objects.get()
    with travel(DUE_SOON_AT):
        client = signed_in(nurse)
        missing = client.post(f"/void/refill/{refill.pk}/", {"reason": ""})
        voided = client.post(f"/void/refill/{refill.pk}/", {"reason": "entered on the wrong patient"})
        page = text_of(client.get(f"/pumps/{filled.pk}/").content.decode())
    assert missing.status_code == 400
    assert "This field is required." in missing.content.decode()
    assert voided.status_code == 302
    refill.refresh_from_db()
    assert (refill.is_voided, refill.void_reason, refill.voided_by) == (True, "entered on the wrong patient", nurse)
    assert "voided: entered on the wrong patient" in page
    assert "Incomplete data" in page


def test_viewer_cannot_record_or_void(filled, clinic):
    viewer = make_user("vera", clinic, "viewer")
    refill = Refill.objects.get()
    with travel(DUE_SOON_AT):
        client = signed_in(viewer)
        for url, data in ((f"/pumps/{filled.pk}/reading/", {"read_at": "2026-03-27T09:00", "reservoir_volume_ml": "10"}),
                          (f"/pumps/{filled.pk}/event/", {"kind": "mri", "occurred_at": "2026-03-27T09:00"}),
                          (f"/pumps/{filled.pk}/explant/", {"explanted_on": "2026-03-27"}),
                          (f"/pumps/{filled.pk}/appointments/", {"scheduled_for": "2026-04-07T09:30", "kind": "refill"}),
                          (f"/void/refill/{refill.pk}/", {"reason": "x"})):
            assert client.post(url, data).status_code == 403, url
        assert client.get(f"/pumps/{filled.pk}/appointments/").status_code == 200
    assert Reading.objects.count() == Event.objects.count() == Appointment.objects.count() == 0


def test_worksheet_expects_the_residual_at_the_booked_visit(filled, nurse):
    s.schedule_appointment(pump=filled, scheduled_for=datetime(2026, 4, 7, 9, 0, tzinfo=CHICAGO),
                           actor=s.Actor(nurse), now=DUE_SOON_AT)
    with travel(DUE_SOON_AT):
        html = signed_in(nurse).get(f"/pumps/{filled.pk}/worksheet/").content.decode()
    text = text_of(html)
    # 2026-02-02 15:00 UTC to 2026-04-07 14:00 UTC = 63 d 23 h: 36 - 0.45 x 63.9583 = 7.219 mL, shown 7.22
    assert "Visit 2026-04-07 09:00 CDT (booked refill)" in text
    assert "Expected residual at the visit 7.22 mL" in text
    assert "Discrepancy threshold ±2 mL" in text
    assert "Program continuous 450 mcg/day at 1000 mcg/mL" in text
    assert '<button type="button" data-print>Print this worksheet</button>' in html
    assert 'media="print"' in html


def test_appointment_booked_on_the_pump_page_is_assigned_to_the_chosen_colleague(filled, nurse, clinic):
    colleague = make_user("rn.two", clinic, "nurse")
    make_user("vi.ewer", clinic, "viewer")
    with travel(DUE_SOON_AT):
        client = signed_in(nurse)
        form = client.get(f"/pumps/{filled.pk}/appointments/").content.decode()
        booked = client.post(f"/pumps/{filled.pk}/appointments/", {"scheduled_for": "2026-04-07T09:30",
                                                                     "kind": "refill", "assigned_to": colleague.pk})
        page = text_of(client.get(f"/pumps/{filled.pk}/appointments/").content.decode())
    assert f'<option value="{nurse.pk}" selected>nina</option>' in form  # the booking nurse by default
    assert "vi.ewer" not in form  # a viewer cannot be assigned
    assert booked.status_code == 302
    assert Appointment.objects.get().assigned_to == colleague
    assert "rn.two" in page
