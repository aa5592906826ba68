"""Alert and digest e-mails: what a notification says, rendered in the clinic's local
time, with the routing headers mail systems use (``X-Clinic-Alert-*``).

No stored value can stop a notification: every header is built through
``header_safe``, so a legacy MRN holding a line break cannot make the send fail (Django
refuses a header with CR or LF) nor inject a header."""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from clinic.models import Clinic

from . import planning
from . import projection as pj
from .alerting.rules import RESERVOIR_KINDS, advice_for, describe, title_for
from .calendar import appointment_ics
from .models import Alert, AlertKind, Appointment, Notification, Pump, Refill, Severity
from .templatetags.pumps_ui import isodate, ml, product, weekday

_SPACES = re.compile(r"\s{2,}")
SUMMARY = "summary"  # the pump page's summary band (views.SUMMARY), where e-mail links land


def header_safe(value: object) -> str:
    """``value`` as text fit for a mail header: every control character (Unicode category
    Cc: CR, LF, TAB, NUL, DEL, NEL …) and the Unicode line and paragraph separators become
    a space, runs of spaces one space, and the ends are trimmed. "AB\\r\\nBcc: x" becomes
    "AB Bcc: x": text inside the header, never a header of its own."""
    text = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in str(value)
    )
    return _SPACES.sub(" ", text).strip()


def patient_label(pump: Pump) -> str:
    """The least patient data that serves: "MRN MRN001 (AG)", header-safe."""
    return header_safe(f"MRN {pump.patient.mrn} ({pump.patient.initials})")


def day_label(day: date) -> str:
    """A date as the staff pages show it, through their filters: "2026-04-10 (Fri)"."""
    return f"{isodate(day)} ({weekday(day)})"


def instant_label(moment: datetime, now: datetime, clinic: Clinic) -> str:
    """An instant as the staff pages show it: on the clinic's wall clock with its zone and
    how far it is from ``now`` ("2026-11-20 10:45 CST (11 days ago)"); the bare instant
    when it is ``now`` (within the minute)."""
    words = pj.relative_instant(moment, now)
    return pj.local_instant(moment, clinic.tz) if words == "now" else pj.instant_in_words(moment, now, clinic.tz)


def planning_url(clinic: Clinic) -> str:
    return f"{settings.SITE_URL}/clinics/{clinic.code}/planning/"


def plan_digest(clinic: Clinic, now: datetime) -> dict:
    """The refill plan's part of the digest (``planning.clinic_plan``, one call): its
    shortfalls, each with its reason and suggested day, and the pumps due within the
    clinic's due-soon window with no refill booked (those of the refill_unbooked alert),
    each with the day the plan proposes; how many more the plan proposes a day for."""
    current = planning.clinic_plan(clinic, at=now)
    window_end = pj.local_date(now, clinic.tz) + pj.DAY * clinic.due_soon_days

    def line(row: planning.Row) -> dict:
        return {"pump": row.pump, "patient": patient_label(row.pump), "due": day_label(row.due_on),
                "day": day_label(row.day) if row.day else None, "url": email_pump_url(row.pump),
                "reason": row.shortfall.reason_text if row.shortfall else ""}

    proposals = sorted(current.proposals, key=lambda r: (r.due_on, r.day, r.pump.pk))
    return {
        "plan_url": planning_url(clinic),
        "plan_last_day": day_label(current.plan.last_day),
        "shortfalls": [line(row) for row in current.shortfalls],
        "unbooked": [line(row) for row in proposals if row.due_on <= window_end],
        "unbooked_later": sum(1 for row in proposals if row.due_on > window_end),
        "due_soon_days": clinic.due_soon_days,
    }


def digest_context(clinic: Clinic, now: datetime) -> dict:
    """The daily digest: pumps empty, at their alarm, overdue and due soon, each with its
    status in words (times on the clinic's wall clock with their zone); the refill plan's
    shortfalls and the pumps due soon with no refill booked (``plan_digest``); drugs past
    their stability date; unacknowledged critical alerts; notifications that failed."""
    tz = clinic.tz
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
    for items in rows.values():
        items.sort(key=lambda p: (p.refill_due_on or date.max, p.pk))

    def line(pump: Pump) -> dict:
        return {"pump": pump, "patient": patient_label(pump), "status": pump.status_reason(now),
                "url": email_pump_url(pump)}

    open_alerts = Alert.objects.filter(clinic=clinic, resolved_at__isnull=True).select_related(
        "clinic", "pump__patient", "pump__model")
    critical = open_alerts.filter(severity=Severity.CRITICAL, acknowledged_at__isnull=True)
    expired = open_alerts.filter(kind=AlertKind.DRUG_EXPIRED).order_by("due_at", "id")

    def alert_line(alert: Alert) -> dict:
        return {"alert": alert, "title": title_for(alert), "detail": describe(alert, now),
                "patient": patient_label(alert.pump) if alert.pump else "",
                "url": email_pump_url(alert.pump) if alert.pump else ""}

    sections = [
        ("Empty (worst case)", rows[pj.STATUS_EMPTY]),
        ("At low-reservoir alarm", rows[pj.STATUS_ALARM]),
        ("Refill overdue", rows[pj.STATUS_OVERDUE]),
        ("Refill due soon", rows[pj.STATUS_DUE_SOON]),
    ]
    return {
        "clinic": clinic,
        "date": pj.local_date(now, tz),
        "date_label": day_label(pj.local_date(now, tz)),
        "generated": pj.local_instant(now, tz),
        "empty": rows[pj.STATUS_EMPTY],
        "alarm": rows[pj.STATUS_ALARM],
        "overdue": rows[pj.STATUS_OVERDUE],
        "due_soon": rows[pj.STATUS_DUE_SOON],
        "sections": [(title, [line(p) for p in pumps]) for title, pumps in sections],
        "drug_expired": [alert_line(a) for a in expired],
        "critical_alerts": [alert_line(a) for a in critical],
        "undelivered": list(
            Notification.objects.filter(clinic=clinic, status=Notification.FAILED).order_by("-created_at")[:50]
        ),
        "site_url": settings.SITE_URL,
        "tz": tz,
        "plan": plan_digest(clinic, now),
    }


def pump_url(pump: Pump, anchor: str = "") -> str:
    """The pump's page; e-mails open it on its summary band (``anchor="summary"``), the
    webhooks' payload keeps the bare page."""
    return f"{settings.SITE_URL}/pumps/{pump.pk}/" + (f"#{anchor}" if anchor else "")


def email_pump_url(pump: Pump) -> str:
    return pump_url(pump, SUMMARY)


def refill_line(alert: Alert, now: datetime) -> str:
    """The refill an alert is about, for the kinds that name one (``drug_expired``:
    "drug:<refill id>", ``residual_discrepancy``: "refill:<refill id>"), in the pages'
    styles: for a drug past its stability date when it was filled and with what, "2026-02-02
    09:00 CST (30 days ago); Lioresal Intrathecal 2000 mcg/mL; 36 mL added"; for a discrepancy
    (the refill's instant is its "When") "25 mL added; 9 mL extracted of 11.72 mL expected
    (discrepancy -2.72 mL)"."""
    prefix = {AlertKind.DRUG_EXPIRED: "drug:", AlertKind.RESIDUAL_DISCREPANCY: "refill:"}.get(alert.kind)
    key = alert.episode.removeprefix(prefix) if prefix and alert.episode.startswith(prefix) else ""
    refill = (Refill.objects.live().filter(pk=int(key), pump_id=alert.pump_id).select_related("drug_product").first()
              if key.isascii() and key.isdigit() else None)
    if refill is None:
        return ""
    filled = instant_label(refill.performed_at, now, alert.clinic) if alert.kind == AlertKind.DRUG_EXPIRED else ""
    parts = [filled, product(refill), f"{ml(refill.added_volume_ml)} mL added"]
    if alert.kind == AlertKind.RESIDUAL_DISCREPANCY and refill.expected_residual_ml is not None:
        extracted = "not measured" if refill.extracted_volume_ml is None else f"{ml(refill.extracted_volume_ml)} mL"
        parts.append(f"{extracted} extracted of {ml(refill.expected_residual_ml)} mL expected"
                     + (f" (discrepancy {ml(refill.discrepancy_ml)} mL)" if refill.discrepancy_ml is not None else ""))
    return "; ".join(part for part in parts if part)


def build_email(note: Notification, now: datetime) -> EmailMultiAlternatives:
    """The e-mail of one notification as of ``now`` (its send time: "2 hours ago" is true
    when it is read). Every header goes through ``header_safe``."""
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
        title = title_for(alert)
        context = {
            "alert": alert, "pump": pump, "clinic": clinic, "kind_label": title,
            "detail": describe(alert, now), "advice": advice_for(alert), "repeat": note.repeat_number,
            "when": instant_label(alert.due_at, now, clinic) if alert.due_at else "",
            "refill": refill_line(alert, now) if pump else "",
            "raised_local": instant_label(alert.created_at, now, clinic),
            "sent_local": pj.local_instant(now, clinic.tz),
            "url": email_pump_url(pump) if pump else f"{settings.SITE_URL}/",
            "patient_label": patient_label(pump) if pump else "",
            "escalated": alert.escalated_at is not None,
        }
        who = f": {context['patient_label']}" if pump else ""
        subject = f"[{alert.severity.upper()}] {title}{who}"
        if note.repeat_number:
            subject += f" (reminder {note.repeat_number})"
        template = "emails/alert"
        headers = {"X-Clinic-Alert-Kind": alert.kind, "X-Clinic-Alert-Severity": alert.severity,
                   "X-Clinic-Alert-Id": str(alert.pk)}
    with timezone.override(clinic.tz):  # every instant in the clinic's local time
        text = render_to_string(f"{template}.txt", context)
        html = render_to_string(f"{template}.html", context)
    message = EmailMultiAlternatives(
        subject=header_safe(subject), body=text, to=[header_safe(note.recipient)],
        headers={name: header_safe(value) for name, value in headers.items()},
    )
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

