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

A per-user feed ("my appointments") needs an assignee on ``Appointment``, which it does
not have yet: see the README.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from django.conf import settings
from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from icalendar import Calendar
from icalendar import Event as IcsEvent

from clinic.models import CalendarFeed, Clinic

from .calendar import DURATION
from .models import Appointment

#: Booked refills shown from this far back (a subscriber keeps the recent past).
PAST = timedelta(days=30)
#: How often subscribers should poll (a hint: Google polls on its own schedule).
REFRESH = "PT1H"
LAST_USED_EVERY = timedelta(minutes=1)


def _host() -> str:
    return settings.SITE_URL.split("//", 1)[-1].split("/", 1)[0] or "localhost"


def feed_appointments(clinic: Clinic, now):
    return (
        Appointment.objects.live()
        .filter(pump__clinic=clinic, kind=Appointment.Kind.REFILL,
                status__in=(Appointment.Status.SCHEDULED, Appointment.Status.DONE), scheduled_for__gte=now - PAST)
        .select_related("pump__patient", "pump__model")
        .order_by("scheduled_for", "id")
    )


def clinic_feed_ics(clinic: Clinic, now=None) -> bytes:
    """The clinic's booked refill appointments, times in the clinic's zone."""
    now = now or timezone.now()
    tz = clinic.tz
    host = _host()
    cal = Calendar()
    cal.add("prodid", "-//Intrathecal pump clinic//refill calendar//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", f"Pump refills · {clinic.name}")
    cal.add("x-wr-timezone", clinic.timezone)
    cal.add("refresh-interval", timedelta(hours=1), parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", REFRESH)
    for appointment in feed_appointments(clinic, now):
        pump = appointment.pump
        patient = pump.patient
        start = appointment.scheduled_for.astimezone(tz)
        event = IcsEvent()
        event.add("uid", f"appointment-{appointment.pk}@{host}")
        event.add("dtstamp", (appointment.updated_at or now).astimezone(UTC))
        event.add("dtstart", start)
        event.add("dtend", start + DURATION.get(appointment.kind, timedelta(minutes=30)))
        event.add("summary", f"Pump refill: MRN {patient.mrn} ({patient.initials})")
        link = f"{settings.SITE_URL}/pumps/{pump.pk}/"
        event.add("description", f"{pump.model.code} #{pump.serial_number}\n{link}")
        event.add("url", link)
        event.add("status", "CONFIRMED")
        cal.add_component(event)
    cal.add_missing_timezones()
    return cal.to_ical()


@require_GET
def clinic_feed(request, code: str, secret: str):
    feed = CalendarFeed.find(code, secret)
    if feed is None:
        raise Http404("No such calendar.")
    now = timezone.now()
    if feed.last_used_at is None or now - feed.last_used_at > LAST_USED_EVERY:
        CalendarFeed.objects.filter(pk=feed.pk).update(last_used_at=now)
    response = HttpResponse(clinic_feed_ics(feed.clinic, now), content_type="text/calendar; charset=utf-8")
    response["Content-Disposition"] = f'inline; filename="refills-{feed.clinic.code}.ics"'
    response["Cache-Control"] = "private, no-store"
    response["X-Robots-Tag"] = "noindex"
    return response
