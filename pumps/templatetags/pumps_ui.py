"""Template filters of the staff pages: instants in the clinic's zone, volumes, status."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django import template
from django.utils import timezone

from pumps import projection as pj
from pumps import selectors

register = template.Library()


def _tz(where):
    if where is None:
        return None
    if hasattr(where, "tz"):  # a Clinic
        return where.tz
    if hasattr(where, "clinic"):  # a Pump, a Patient, an Alert
        return where.clinic.tz
    return where


@register.filter
def local(value: datetime | None, where=None) -> str:
    """An instant as local wall-clock time in the clinic's zone, with the zone's abbreviation."""
    if value is None:
        return "—"
    tz = _tz(where)
    moment = value.astimezone(tz) if tz is not None else value
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname()}"


@register.filter
def localdate(value: datetime | None, where=None) -> str:
    if value is None:
        return "—"
    tz = _tz(where)
    moment = value.astimezone(tz) if tz is not None else value
    return f"{moment:%Y-%m-%d}"


@register.filter
def isodate(value) -> str:
    return value.isoformat() if value else "—"


@register.filter
def weekday(value) -> str:
    return f"{value:%a}" if value else ""


def _plain(value, places: str) -> str:
    if value is None or value == "":
        return "—"
    text = f"{Decimal(str(value)).quantize(Decimal(places), rounding=ROUND_HALF_UP).normalize():f}"
    return "0" if text in ("-0", "") else text


@register.filter
def ml(value) -> str:
    """A volume (or dose) for display, to two decimals and without trailing zeros: 36,
    35.25, -1.5, 11.663 shown 11.66 (volumes are stored to the microlitre)."""
    return _plain(value, "0.01")


@register.filter
def rate(value) -> str:
    """A rate in mL/day to three decimals (0.452 mL/day: two would hide a day's drift)."""
    return _plain(value, "0.001")


@register.filter
def signed(value) -> str:
    if value is None:
        return "—"
    text = ml(value)
    return f"+{text}" if Decimal(str(value)) > 0 else text


@register.filter
def status_label(value: str) -> str:
    return selectors.STATUS_LABELS.get(value, value)


@register.filter
def days_phrase(days: int | None) -> str:
    if days is None:
        return "—"
    if days == 0:
        return "due today"
    if days == 1:
        return "in 1 day"
    if days > 1:
        return f"in {days} days"
    return f"{-days} day overdue" if days == -1 else f"{-days} days overdue"


@register.filter
def person(user) -> str:
    return selectors.display_name(user) or "—"


@register.filter
def get(mapping, key):
    return mapping.get(key) if mapping else None


@register.simple_tag(takes_context=True)
def when(context, value: datetime | None, where=None, since: bool = False) -> str:
    """An instant in the clinic's zone and how far it is from the page's ``now``, in the
    right tense: "2026-12-04 09:00 CST (in 3 days)", "2026-11-20 10:45 CST (11 days ago)";
    with ``since=True`` a past instant is a state that began then and lasts:
    "since 2026-11-20 10:45 CST (11 days ago)" (empty, at the alarm)."""
    if value is None:
        return "—"
    now = context.get("now") or timezone.now()
    tz = _tz(where) or pj.UTC
    words = pj.instant_in_words(value, now, tz)
    return f"since {words}" if since and value <= now else words


@register.filter
def needs_reason(alert) -> bool:
    """A critical alert is acknowledged only with a reason."""
    return selectors.alert_needs_reason(alert)


@register.filter
def acknowledger(alert) -> str:
    """Who acknowledged an alert: a staff member, or the clinician an integration named."""
    if alert.acknowledged_by_id:
        return selectors.display_name(alert.acknowledged_by)
    return alert.acknowledged_by_external or "an integration"


@register.filter
def alert_words(alert) -> str:
    """An alert's severity and kind in words, never colour alone: "Critical: withdrawal risk"."""
    return f"{alert.get_severity_display().capitalize()}: {alert.get_kind_display()}"


@register.simple_tag(takes_context=True)
def countdown(context, value: datetime | None) -> str:
    """How long until (or since) an instant, to the hour within a week: "in 2 days 5 hours",
    "3 hours ago", "in 12 days"."""
    if value is None:
        return "—"
    now = context.get("now") or timezone.now()
    seconds = (value - now).total_seconds()
    span = abs(seconds)
    if span < 3600 or span >= 7 * 86400:
        return pj.relative_instant(value, now)
    days, hours = int(span // 86400), int(span % 86400 // 3600)
    parts = []
    if days:
        parts.append(f"{days} day{'' if days == 1 else 's'}")
    if hours:
        parts.append(f"{hours} hour{'' if hours == 1 else 's'}")
    words = " ".join(parts)
    return f"in {words}" if seconds > 0 else f"{words} ago"


@register.simple_tag(takes_context=True)
def instant(context, value: datetime | None, where=None) -> str:
    """An instant on the clinic's wall clock with its zone: "2026-04-18 23:20 CDT"."""
    if value is None:
        return "—"
    tz = _tz(where) or pj.UTC
    return pj.local_instant(value, tz)


@register.filter
def product(refill_or_product) -> str:
    """A drug product by its name ("Lioresal Intrathecal 2000 mcg/mL"), not its code."""
    item = getattr(refill_or_product, "drug_product", refill_or_product)
    return getattr(item, "name", "") or ""


@register.simple_tag(takes_context=True)
def relative(context, value: datetime | None) -> str:
    """How far an instant is from the page's ``now`` in whole units: "in 11 days", "3 days ago"."""
    if value is None:
        return "—"
    return pj.relative_instant(value, context.get("now") or timezone.now())
