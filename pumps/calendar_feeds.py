"""Calendar subscriptions: ``/calendar/<clinic>/<secret>.ics``, the clinic's booked refill
appointments as one iCalendar (RFC 5545) that Outlook, Google Calendar and Apple
Calendar poll.

A calendar application cannot sign in, so the URL itself is the credential: its secret
is 256 random bits, shown once when a clinic administrator creates the feed (on the
planning page) and stored as its SHA-256 hash (``clinic.models.CalendarFeed``, like API
tokens). A wrong, unknown or revoked secret, or a secret of another clinic, answers 404
with nothing to tell them apart.

The least patient data: MRN and initials in the summary, the pump's model and serial
number and a link to its page in the description (the page needs sign-in). Times carry
the clinic's zone (``TZID``, with its ``VTIMEZONE``), so a subscriber elsewhere sees the
visit at the right instant. Each event has the UID of the appointment's own .ics
(``pumps.calendar``), so the two never show twice.

A personal feed, ``/calendar/me/<secret>.ics``, lists the refill appointments assigned
to one staff member (``Appointment.assigned_to``) in the clinics they belong to now: a
user who leaves a clinic (or whose account is deactivated) no longer gets its
appointments. They create and revoke it themselves on the planning page; its secret is
kept like a clinic feed's. Each event carries its own clinic's zone, so one calendar may
hold several ``VTIMEZONE``. Were a clinic coded ``me``, a secret that is no personal
feed's is tried as that clinic's.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from django.conf import settings
from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from icalendar import Calendar
from icalendar import Event as IcsEvent

from clinic.models import CalendarFeed, Clinic, Membership

from .calendar import DURATION
from .models import Appointment

#: Booked refills shown from this far back (a subscriber keeps the recent past).
PAST = timedelta(days=30)
#: How often subscribers should poll (a hint: Google polls on its own schedule).
REFRESH = "PT1H"
LAST_USED_EVERY = timedelta(minutes=1)


def _host() -> str:
    return settings.SITE_URL.split("//", 1)[-1].split("/", 1)[0] or "localhost"


def _live_refills(now):
    return (
        Appointment.objects.live()
        .filter(kind=Appointment.Kind.REFILL, status__in=(Appointment.Status.SCHEDULED, Appointment.Status.DONE),
                scheduled_for__gte=now - PAST)
        .select_related("pump__patient", "pump__model", "pump__clinic")
        .order_by("scheduled_for", "id")
    )


def feed_appointments(clinic: Clinic, now):
    return _live_refills(now).filter(pump__clinic=clinic)


def user_feed_appointments(user, now):
    """The refills assigned to ``user`` in the clinics they belong to now (a superuser:
    every clinic)."""
    appointments = _live_refills(now).filter(assigned_to=user)
    if not user.is_superuser:
        appointments = appointments.filter(pump__clinic__in=Membership.objects.filter(user=user).values("clinic_id"))
    return appointments


def _calendar(name: str) -> Calendar:
    cal = Calendar()
    cal.add("prodid", "-//Intrathecal pump clinic//refill calendar//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", name)
    return cal


def _finish(cal: Calendar) -> bytes:
    cal.add("refresh-interval", timedelta(hours=1), parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", REFRESH)
    cal.add_missing_timezones()
    return cal.to_ical()


def _event(appointment: Appointment, now, host: str, *, location: str = "") -> IcsEvent:
    """One booked refill, its times in its clinic's zone (TZID)."""
    pump = appointment.pump
    patient = pump.patient
    start = appointment.scheduled_for.astimezone(pump.clinic.tz)
    event = IcsEvent()
    event.add("uid", f"appointment-{appointment.pk}@{host}")
    event.add("dtstamp", (appointment.updated_at or now).astimezone(UTC))
    event.add("dtstart", start)
    event.add("dtend", start + DURATION.get(appointment.kind, timedelta(minutes=30)))
    event.add("summary", f"Pump refill: MRN {patient.mrn} ({patient.initials})")
    link = f"{settings.SITE_URL}/pumps/{pump.pk}/"
    event.add("description", f"{pump.model.code} #{pump.serial_number}\n{link}")
    event.add("url", link)
    if location:
        event.add("location", location)
    event.add("status", "CONFIRMED")
    return event


def clinic_feed_ics(clinic: Clinic, now=None) -> bytes:
    """The clinic's booked refill appointments, times in the clinic's zone."""
    now = now or timezone.now()
    host = _host()
    cal = _calendar(f"Pump refills · {clinic.name}")
    cal.add("x-wr-timezone", clinic.timezone)
    for appointment in feed_appointments(clinic, now):
        cal.add_component(_event(appointment, now, host))
    return _finish(cal)


def user_feed_ics(user, now=None) -> bytes:
    """The refills assigned to ``user``, each in its clinic's zone and named by its clinic."""
    now = now or timezone.now()
    host = _host()
    cal = _calendar(f"My pump refills · {user.get_username()}")
    for appointment in user_feed_appointments(user, now):
        cal.add_component(_event(appointment, now, host, location=appointment.pump.clinic.name))
    return _finish(cal)


def _answer(feed: CalendarFeed, body: bytes, filename: str) -> HttpResponse:
    now = timezone.now()
    if feed.last_used_at is None or now - feed.last_used_at > LAST_USED_EVERY:
        CalendarFeed.objects.filter(pk=feed.pk).update(last_used_at=now)
    response = HttpResponse(body, content_type="text/calendar; charset=utf-8")
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Robots-Tag"] = "noindex"
    return response


@require_GET
def clinic_feed(request, code: str, secret: str):
    feed = CalendarFeed.find(code, secret)
    if feed is None:
        raise Http404("No such calendar.")
    return _answer(feed, clinic_feed_ics(feed.clinic), f"refills-{feed.clinic.code}.ics")


@require_GET
def user_feed(request, secret: str):
    """``/calendar/me/<secret>.ics``: the personal feed with this secret, else 404."""
    feed = CalendarFeed.find_personal(secret)
    if feed is None:
        return clinic_feed(request, "me", secret)  # a clinic coded "me", if any; else 404
    return _answer(feed, user_feed_ics(feed.user), "my-refills.ics")
