"""Alert and digest e-mails: what a notification says, rendered in the clinic's local
time, with the routing headers mail systems use (``X-Clinic-Alert-*``)."""

from __future__ import annotations

from datetime import date, datetime

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from clinic.models import Clinic

from . import projection as pj
from .alerts import ADVICE, RESERVOIR_KINDS
from .calendar import appointment_ics
from .models import Alert, Appointment, Notification, Pump, Severity


def digest_context(clinic: Clinic, now: datetime) -> dict:
    listed = [pj.STATUS_EMPTY, pj.STATUS_ALARM, pj.STATUS_OVERDUE, pj.STATUS_DUE_SOON]
    pumps = (
        Pump.objects.filter(clinic=clinic, explanted_on__isnull=True)
        # the stored status, or a change the sweep has not reached yet
        .filter(Q(status__in=listed) | Q(next_change_at__lte=now))
        .select_related("patient", "model", "clinic")
    )
    rows: dict[str, list] = {pj.STATUS_EMPTY: [], pj.STATUS_ALARM: [], pj.STATUS_OVERDUE: [], pj.STATUS_DUE_SOON: []}
    for pump in pumps:
        status = pump.live_status(now)
        if status in rows:
            rows[status].append(pump)
    critical = Alert.objects.filter(
        clinic=clinic, severity=Severity.CRITICAL, acknowledged_at__isnull=True, resolved_at__isnull=True
    ).select_related("pump__patient", "pump__model")
    for items in rows.values():
        items.sort(key=lambda p: (p.refill_due_on or date.max, p.pk))
    return {
        "clinic": clinic,
        "date": pj.local_date(now, clinic.tz),
        "empty": rows[pj.STATUS_EMPTY],
        "alarm": rows[pj.STATUS_ALARM],
        "overdue": rows[pj.STATUS_OVERDUE],
        "due_soon": rows[pj.STATUS_DUE_SOON],
        "critical_alerts": list(critical),
        "undelivered": list(
            Notification.objects.filter(clinic=clinic, status=Notification.FAILED).order_by("-created_at")[:50]
        ),
        "sections": [
            ("Empty (worst case)", rows[pj.STATUS_EMPTY]),
            ("At low-reservoir alarm", rows[pj.STATUS_ALARM]),
            ("Refill overdue", rows[pj.STATUS_OVERDUE]),
            ("Refill due soon", rows[pj.STATUS_DUE_SOON]),
        ],
        "site_url": settings.SITE_URL,
        "tz": clinic.tz,
    }



def pump_url(pump: Pump) -> str:
    return f"{settings.SITE_URL}/pumps/{pump.pk}/"


def build_email(note: Notification, now: datetime) -> EmailMultiAlternatives:
    clinic = note.clinic
    if note.kind == "digest":
        context = digest_context(clinic, now)
        subject = f"[{clinic.code}] Daily pump digest {context['date'].isoformat()}"
        template = "emails/digest"
        headers = {"X-Clinic-Alert-Kind": "digest", "X-Clinic-Alert-Severity": "info",
                   "X-Clinic-Alert-Id": f"digest-{clinic.code}-{context['date'].isoformat()}"}
    else:
        alert = note.alert
        pump = alert.pump
        context = {
            "alert": alert, "pump": pump, "clinic": clinic, "kind_label": alert.get_kind_display(),
            "advice": ADVICE[alert.kind], "repeat": note.repeat_number,
            "due_local": alert.due_at.astimezone(clinic.tz) if alert.due_at else None,
            "url": pump_url(pump) if pump else f"{settings.SITE_URL}/",
            "patient_label": f"MRN {pump.patient.mrn} ({pump.patient.initials})" if pump else "",
            "escalated": alert.escalated_at is not None,
        }
        who = f": {context['patient_label']}" if pump else ""
        subject = f"[{alert.severity.upper()}] {alert.get_kind_display().capitalize()}{who}"
        if note.repeat_number:
            subject += f" (reminder {note.repeat_number})"
        template = "emails/alert"
        headers = {"X-Clinic-Alert-Kind": alert.kind, "X-Clinic-Alert-Severity": alert.severity,
                   "X-Clinic-Alert-Id": str(alert.pk)}
    with timezone.override(clinic.tz):  # every instant in the clinic's local time
        text = render_to_string(f"{template}.txt", context)
        html = render_to_string(f"{template}.html", context)
    message = EmailMultiAlternatives(subject=subject, body=text, to=[note.recipient], headers=headers)
    message.attach_alternative(html, "text/html")
    if note.kind in RESERVOIR_KINDS and note.alert.pump is not None:
        appointment = next_refill_appointment(note.alert.pump, now)
        if appointment is not None:
            message.attach(f"refill-appointment-{appointment.pk}.ics", appointment_ics(appointment), "text/calendar")
    return message


def next_refill_appointment(pump: Pump, now: datetime) -> Appointment | None:
    return (
        Appointment.objects.live()
        .filter(pump=pump, kind=Appointment.Kind.REFILL, status=Appointment.Status.SCHEDULED, scheduled_for__gte=now)
        .order_by("scheduled_for")
        .first()
    )

