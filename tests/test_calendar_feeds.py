"""Calendar feeds: ``/calendar/<clinic>/<secret>.ics`` of the clinic's booked refill
appointments, parsed with ``icalendar``; times in the clinic's zone (TZID); MRN and
initials only; the secret shown once and stored hashed; revoked or wrong: 404.
Personal feeds, ``/calendar/me/<secret>.ics``: the refills assigned to one user in the
clinics they belong to, each in its clinic's zone; the assignee's validation."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from icalendar import Calendar

from clinic.models import CalendarFeed, Membership, hash_token
from pumps import services as s
from pumps.errors import Forbidden, ServiceValidationError
from pumps.models import Appointment
from tests.factories import make_clinic, make_patient, make_pump, make_user
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


# ---------------------------------------------------------------- personal feeds

SYDNEY = ZoneInfo("Australia/Sydney")


@pytest.fixture
def assigned(booked, clinic, other_clinic, nurse, prescriber):
    """The nurse belongs to both clinics: a refill assigned to her in each (Chicago and
    Sydney), and others that are not hers (assigned to the prescriber, to nobody, a review,
    a cancelled refill)."""
    Membership.objects.create(user=nurse, clinic=other_clinic, role="nurse")
    south = make_pump(make_patient(other_clinic, mrn="MRN-S1", family_name="Smith", given_name="Sam"), serial="SN-S1")
    actor = s.Actor(prescriber)
    with travel(DUE_SOON_AT):
        Appointment.objects.filter(pump=booked, kind="refill").update(assigned_to=nurse)
        s.schedule_appointment(pump=booked, scheduled_for=datetime(2026, 4, 9, 9, 0, tzinfo=CHICAGO), actor=actor,
                               assigned_to=prescriber)
        s.schedule_appointment(pump=booked, scheduled_for=datetime(2026, 4, 8, 9, 0, tzinfo=CHICAGO), actor=actor)
        s.schedule_appointment(pump=booked, scheduled_for=datetime(2026, 4, 7, 9, 0, tzinfo=CHICAGO), actor=actor,
                               assigned_to=nurse, kind=Appointment.Kind.REVIEW)
        cancelled = s.schedule_appointment(pump=booked, scheduled_for=datetime(2026, 4, 6, 9, 0, tzinfo=CHICAGO),
                                           actor=actor, assigned_to="nina")
        s.update_appointment(appointment=cancelled, actor=actor, status=Appointment.Status.CANCELLED)
        s.schedule_appointment(pump=south, scheduled_for=datetime(2026, 4, 14, 10, 0, tzinfo=SYDNEY),
                               actor=s.Actor(nurse), assigned_to=nurse)
    return south


def my_feed(client, secret):
    with travel(DUE_SOON_AT):
        return client.get(f"/calendar/me/{secret}.ics")


def test_personal_feed_lists_only_the_refills_assigned_to_the_user_each_in_its_clinics_zone(
        assigned, clinic, other_clinic, nurse, client):
    feed, secret = CalendarFeed.create_with_secret(user=nurse, name="Phone")
    assert feed.secret_hash == hash_token(secret) and feed.clinic is None
    response = my_feed(client, secret)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/calendar")
    assert "no-store" in response["Cache-Control"]
    raw = response.content.decode()
    assert "DTSTART;TZID=America/Chicago:20260410T090000" in raw
    assert "DTSTART;TZID=Australia/Sydney:20260414T100000" in raw
    cal = Calendar.from_ical(response.content)
    assert sorted(str(tz["TZID"]) for tz in cal.walk("VTIMEZONE")) == ["America/Chicago", "Australia/Sydney"]
    events = cal.walk("VEVENT")
    assert [str(e["SUMMARY"]) for e in events] == ["Pump refill: MRN MRN001 (AG)", "Pump refill: MRN MRN-S1 (SS)"]
    assert [e.decoded("DTSTART") for e in events] == [datetime(2026, 4, 10, 9, 0, tzinfo=CHICAGO),
                                                      datetime(2026, 4, 14, 10, 0, tzinfo=SYDNEY)]
    assert events[1].decoded("DTSTART").utcoffset().total_seconds() == 10 * 3600
    assert [str(e["LOCATION"]) for e in events] == [clinic.name, other_clinic.name]
    assert "Garcia" not in raw and "Smith" not in raw and "Ana" not in raw
    assert CalendarFeed.objects.get(pk=feed.pk).last_used_at is not None
    # she leaves the Sydney clinic: its refill drops out of her feed
    Membership.objects.filter(user=nurse, clinic=other_clinic).delete()
    cal = Calendar.from_ical(my_feed(client, secret).content)
    assert [str(e["SUMMARY"]) for e in cal.walk("VEVENT")] == ["Pump refill: MRN MRN001 (AG)"]
    assert [str(tz["TZID"]) for tz in cal.walk("VTIMEZONE")] == ["America/Chicago"]


def test_personal_feed_wrong_revoked_or_deactivated_is_404(assigned, clinic, nurse, prescriber, client):
    feed, secret = CalendarFeed.create_with_secret(user=nurse, name="Phone")
    assert my_feed(client, secret).status_code == 200
    assert my_feed(client, secret + "x").status_code == 404
    _, clinic_secret = CalendarFeed.create_with_secret(clinic=clinic, name="Front desk")
    assert my_feed(client, clinic_secret).status_code == 404  # a clinic feed is no personal feed
    assert client.get(f"/calendar/{clinic.code}/{secret}.ics").status_code == 404  # nor the reverse
    feed.revoke()
    assert my_feed(client, secret).status_code == 404
    other, other_secret = CalendarFeed.create_with_secret(user=nurse, name="Laptop")
    nurse.is_active = False
    nurse.save()
    assert my_feed(client, other_secret).status_code == 404
    # the prescriber's own feed lists only hers
    _, mine = CalendarFeed.create_with_secret(user=prescriber, name="Phone")
    events = Calendar.from_ical(my_feed(client, mine).content).walk("VEVENT")
    assert [e.decoded("DTSTART") for e in events] == [datetime(2026, 4, 9, 9, 0, tzinfo=CHICAGO)]


def test_a_feed_is_a_clinics_or_a_users(clinic, nurse):
    with pytest.raises(ValueError):
        CalendarFeed.create_with_secret(clinic=clinic, user=nurse, name="Both")
    with pytest.raises(ValueError):
        CalendarFeed.create_with_secret(name="Neither")


def test_a_clinic_coded_me_keeps_its_feed(db):
    clinic = make_clinic(code="me", name="Medical East", timezone="Europe/Paris")
    _, secret = CalendarFeed.create_with_secret(clinic=clinic, name="Front desk")
    response = Client().get(f"/calendar/me/{secret}.ics")
    assert response.status_code == 200 and "Medical East" in response.content.decode()


def test_user_creates_their_own_feed_sees_the_url_once_and_revokes_it(assigned, clinic, nurse, client):
    browser = signed_in(nurse)
    with travel(DUE_SOON_AT):
        html = browser.get(f"/clinics/{clinic.code}/planning/").content.decode()
        assert "My calendar feed" in html and "You have no calendar feed." in html
        response = browser.post(f"/clinics/{clinic.code}/planning/my-feed/", {"action": "create", "name": ""})
    html = response.content.decode()
    url = re.search(r'id="new-my-feed-url" type="text" readonly value="([^"]+)"', html).group(1)
    assert url.startswith("http://testserver/calendar/me/") and url.endswith(".ics")
    assert "no-store" in response["Cache-Control"]
    secret = url.rsplit("/", 1)[1].removesuffix(".ics")
    feed = CalendarFeed.objects.get()
    assert (feed.user, feed.clinic, feed.created_by, feed.name) == (nurse, None, nurse, "My calendar")
    assert feed.secret_hash == hash_token(secret)
    with travel(DUE_SOON_AT):
        again = browser.get(f"/clinics/{clinic.code}/planning/").content.decode()
        assert secret not in again and feed.secret_hint in again
        assert len(Calendar.from_ical(client.get(f"/calendar/me/{secret}.ics").content).walk("VEVENT")) == 2
        # nobody else sees or revokes it
        colleague = signed_in(make_user("nora", clinic, "nurse"))
        assert feed.secret_hint not in colleague.get(f"/clinics/{clinic.code}/planning/").content.decode()
        assert colleague.post(f"/clinics/{clinic.code}/planning/my-feed/",
                              {"action": "revoke", "id": feed.pk}).status_code == 404
        revoked = browser.post(f"/clinics/{clinic.code}/planning/my-feed/", {"action": "revoke", "id": feed.pk})
        assert revoked.status_code == 302 and revoked["Location"].endswith("/planning/#my-feed-heading")
        assert client.get(f"/calendar/me/{secret}.ics").status_code == 404
        assert browser.post(f"/clinics/{clinic.code}/planning/my-feed/", {}).status_code == 400


# ------------------------------------------------------------- assignee validation


def test_the_assignee_records_in_the_pumps_clinic(booked, clinic, other_clinic, nurse, prescriber):
    viewer = make_user("val", clinic, "viewer")
    outsider = make_user("otto", other_clinic, "nurse")
    actor = s.Actor(prescriber)
    when = datetime(2026, 4, 9, 9, 0, tzinfo=CHICAGO)
    refused = "is not a nurse, pharmacist, prescriber or clinic administrator of this clinic"
    with travel(DUE_SOON_AT):
        messages = {}
        for who in (viewer, outsider, "otto", "nobody-here"):
            with pytest.raises(ServiceValidationError) as exc:
                s.schedule_appointment(pump=booked, scheduled_for=when, actor=actor, assigned_to=who)
            (messages[str(who)],) = exc.value.message_dict["assigned_to"]
        assert all(refused in m for m in messages.values())
        assert messages["val"].startswith("val is not")
        # an unknown username and another clinic's are refused alike
        assert messages["otto"].replace("otto", "?") == messages["nobody-here"].replace("nobody-here", "?")
        assert Appointment.objects.filter(pump=booked, scheduled_for=when).count() == 0
        appointment = s.schedule_appointment(pump=booked, scheduled_for=when, actor=actor, assigned_to="nina")
        assert appointment.assigned_to == nurse
        with pytest.raises(ServiceValidationError) as exc:
            s.update_appointment(appointment=appointment, actor=actor, assigned_to=viewer)
        assert refused in exc.value.message_dict["assigned_to"][0]
        s.update_appointment(appointment=appointment, actor=actor, status=Appointment.Status.DONE)
        assert Appointment.objects.get(pk=appointment.pk).assigned_to == nurse  # kept when not given
        s.update_appointment(appointment=appointment, actor=actor, assigned_to=prescriber)
        assert Appointment.objects.get(pk=appointment.pk).assigned_to == prescriber
        s.update_appointment(appointment=appointment, actor=actor, assigned_to="")
        assert Appointment.objects.get(pk=appointment.pk).assigned_to is None
        # a deactivated account is refused too
        nurse.is_active = False
        nurse.save()
        with pytest.raises(ServiceValidationError):
            s.update_appointment(appointment=appointment, actor=actor, assigned_to=nurse)
    assert [h.assigned_to_id for h in appointment.history.order_by("history_id")] == [
        nurse.pk, nurse.pk, prescriber.pk, None]


def test_the_feed_services_refuse_who_may_not_create_or_revoke(clinic, nurse, prescriber):
    """The pages call these services; the rule is theirs (clinic/permissions.py)."""
    with pytest.raises(Forbidden, match="Only a clinic administrator"):
        s.create_clinic_feed(clinic=clinic, name="Refill nurses", actor=s.Actor(nurse))
    feed, _secret = CalendarFeed.create_with_secret(clinic=clinic, name="Refill nurses")
    with pytest.raises(Forbidden, match="Only a clinic administrator"):
        s.revoke_feed(feed=feed, actor=s.Actor(nurse))
    own, _secret = s.create_own_feed(name="My refills", actor=s.Actor(nurse))
    assert (own.user, own.created_by, own.clinic) == (nurse, nurse, None)
    with pytest.raises(Forbidden) as refused:
        s.revoke_feed(feed=own, actor=s.Actor(prescriber))
    assert str(refused.value) == "Only its owner revokes a personal calendar feed."
    feed.refresh_from_db()
    own.refresh_from_db()
    assert feed.revoked_at is None and own.revoked_at is None
    s.revoke_feed(feed=own, actor=s.Actor(nurse))
    own.refresh_from_db()
    assert own.revoked_at is not None
