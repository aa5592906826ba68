"""iCalendar (RFC 5545) for appointments: attached to alert e-mails and downloadable."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from icalendar import Calendar
from icalendar import Event as IcsEvent

from .models import Appointment

DURATION = {
    Appointment.Kind.REFILL: timedelta(minutes=30),
    Appointment.Kind.REVIEW: timedelta(minutes=30),
    Appointment.Kind.REPLACEMENT: timedelta(hours=2),
}


def appointment_ics(appointment: Appointment) -> bytes:
    """One VEVENT with the least patient data (MRN and initials), in UTC."""
    pump = appointment.pump
    patient = pump.patient
    cal = Calendar()
    cal.add("prodid", "-//Intrathecal pump clinic//appointments//EN")
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    event = IcsEvent()
    host = settings.SITE_URL.split("//", 1)[-1].split("/", 1)[0] or "localhost"
    event.add("uid", f"appointment-{appointment.pk}@{host}")
    event.add("dtstamp", appointment.updated_at or appointment.created_at)
    event.add("dtstart", appointment.scheduled_for)
    event.add("dtend", appointment.scheduled_for + DURATION.get(appointment.kind, timedelta(minutes=30)))
    event.add("summary", f"Pump {appointment.get_kind_display()}: MRN {patient.mrn} ({patient.initials})")
    event.add("description", f"{pump.model.code} #{pump.serial_number}\n{settings.SITE_URL}/pumps/{pump.pk}/")
    event.add("url", f"{settings.SITE_URL}/pumps/{pump.pk}/")
    event.add("status", "CANCELLED" if appointment.status == Appointment.Status.CANCELLED else "CONFIRMED")
    cal.add_component(event)
    return cal.to_ical()
