"""Calendar feeds: ``/calendar/<clinic>/<secret>.ics`` of the clinic's booked refill
appointments, parsed with ``icalendar``; times in the clinic's zone (TZID); MRN and
initials only; the secret shown once and stored hashed; revoked or wrong: 404."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from icalendar import Calendar

from clinic.models import CalendarFeed, hash_token
from pumps import services as s
from pumps.models import Appointment
from tests.factories import make_user
from tests.pages_support import CHICAGO, DUE_SOON_AT, signed_in, travel, worked_example


@pytest.fixture
def booked(patient, prescriber):
    pump = worked_example(patient, s.Actor(prescriber))
    with travel(DUE_SOON_AT):
        s.schedule_appointment(pump=pump, scheduled_for=datetime(2026, 4, 10, 9, 0, tzinfo=CHICAGO),
                               actor=s.Actor(prescriber))
        s.schedule_appointment(pump=pump, scheduled_for=datetime(2026, 4, 3, 9, 0, tzinfo=CHICAGO),
                               actor=s.Actor(prescriber), kind=Appointment.Kind.REVIEW)
    return pump


def test_feed_parses_with_the_clinics_zone_and_least_patient_data(booked, clinic, client):
    feed, secret = CalendarFeed.create_with_secret(clinic=clinic, name="Refill nurses")
    assert feed.secret_hash == hash_token(secret) and secret not in feed.secret_hash
    with travel(DUE_SOON_AT):
        response = client.get(f"/calendar/{clinic.code}/{secret}.ics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/calendar")
    raw = response.content.decode()
    assert "DTSTART;TZID=America/Chicago:20260410T090000" in raw
    cal = Calendar.from_ical(response.content)
    assert [tz["TZID"] for tz in cal.walk("VTIMEZONE")] == ["America/Chicago"]
    (event,) = cal.walk("VEVENT")  # refills only: the review is not in the feed
    start = event.decoded("DTSTART")
    assert start == datetime(2026, 4, 10, 9, 0, tzinfo=CHICAGO) and start.utcoffset().total_seconds() == -5 * 3600
    assert str(event["SUMMARY"]) == "Pump refill: MRN MRN001 (AG)"
    assert "Garcia" not in raw and "Ana" not in raw
    assert str(event["UID"]).startswith(f"appointment-{Appointment.objects.get(kind='refill').pk}@")
    assert CalendarFeed.objects.get(pk=feed.pk).last_used_at is not None


def test_wrong_revoked_or_other_clinics_secret_is_404(booked, clinic, other_clinic, client):
    feed, secret = CalendarFeed.create_with_secret(clinic=clinic, name="Refill nurses")
    assert client.get(f"/calendar/{clinic.code}/{secret}x.ics").status_code == 404
    assert client.get(f"/calendar/{other_clinic.code}/{secret}.ics").status_code == 404
    feed.revoke()
    assert client.get(f"/calendar/{clinic.code}/{secret}.ics").status_code == 404


def test_admin_creates_sees_the_url_once_and_revokes(booked, clinic, nurse, client):
    admin = make_user("ada", clinic, "admin")
    browser = signed_in(admin)
    with travel(DUE_SOON_AT):
        response = browser.post(f"/clinics/{clinic.code}/planning/feeds/", {"action": "create", "name": "Outlook"})
    html = response.content.decode()
    url = re.search(r'id="new-feed-url" type="text" readonly value="([^"]+)"', html).group(1)
    assert url.startswith(f"http://testserver/calendar/{clinic.code}/") and url.endswith(".ics")
    assert "no-store" in response["Cache-Control"]
    secret = url.rsplit("/", 1)[1].removesuffix(".ics")
    feed = CalendarFeed.objects.get()
    assert feed.created_by == admin and feed.secret_hash == hash_token(secret)
    with travel(DUE_SOON_AT):
        again = browser.get(f"/clinics/{clinic.code}/planning/").content.decode()
        assert secret not in again and feed.secret_hint in again
        assert client.get(f"/calendar/{clinic.code}/{secret}.ics").status_code == 200
        assert signed_in(nurse).post(f"/clinics/{clinic.code}/planning/feeds/",
                                     {"action": "revoke", "id": feed.pk}).status_code == 403
        revoked = browser.post(f"/clinics/{clinic.code}/planning/feeds/", {"action": "revoke", "id": feed.pk})
        assert revoked.status_code == 302 and revoked["Location"].endswith("/planning/#feeds-heading")
        assert client.get(f"/calendar/{clinic.code}/{secret}.ics").status_code == 404
