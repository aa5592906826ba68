"""Template filters of the staff pages: instants in the clinic's zone, volumes, status."""

from __future__ import annotations

import functools
import html
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

from pumps import projection as pj
from pumps import selectors
from pumps.models import AlertKind, Program, Severity

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


@functools.lru_cache(maxsize=4096)  # a page repeats its pumps' capacities and alarm volumes
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


_KIND_LABELS = dict(AlertKind.choices)
_SEVERITY_LABELS = {value: str(label).capitalize() for value, label in Severity.choices}


@register.filter
def alert_words(alert) -> str:
    """An alert's severity and kind in words, never colour alone: "Critical: withdrawal risk"."""
    severity = _SEVERITY_LABELS.get(alert.severity) or alert.severity.capitalize()
    return f"{severity}: {_KIND_LABELS.get(alert.kind, alert.kind)}"


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


# ------------------------------------------------------------------ worklist rows
#
# A worklist page shows up to two hundred rows (a page and the "Needs action now" band),
# so its rows are written here, in Python, rather than by a template included per row,
# which cost about as much as the rest of the page together. Every value is escaped, with
# the standard library's ``html.escape`` (what Django's ``escape`` calls, without its
# check for lazy strings, which cost a third of the rows' time); labels of choices come
# from dictionaries made once (``alert_words``).

#: A pump id no URL prefix contains, reversed once per page in place of each row's.
_SOME_PK = "2147483647"


def _e(value) -> str:
    return html.escape(str(value))


def _capfirst(text: str) -> str:
    return text[:1].upper() + text[1:]


def _flagged(condition: bool) -> str:
    return "flag" if condition else ""


def _worklist_status_cell(row) -> str:
    high_risk = ' <span class="badge badge-risk">High risk</span>' if row.pump.patient.withdrawal_high_risk else ""
    critical = row.critical_alerts
    top = row.top_alert
    marker = ""
    if not critical and top is not None:
        severity = _e(top.severity)
        marker = (f' <span class="alert-marker sev-{severity}" data-severity="{severity}">'
                  f'{_e(alert_words(top))}</span>')
    line = ""
    if critical:
        kinds = ", ".join(_e(_KIND_LABELS.get(a.kind, a.kind)) for a in critical)
        first = critical[0]
        acknowledged = f"acknowledged by {_e(acknowledger(first))}" if first.acknowledged_at else "not acknowledged"
        more = f"; +{row.alerts_not_shown} open" if row.alerts_not_shown else ""
        line = (f'<div class="alert-line"><span class="alert-marker sev-critical" data-severity="critical">'
                f'Critical: {kinds}</span> <span class="small">{acknowledged}{more}</span></div>')
    status = _e(row.status)
    return (f'  <td class="col-status" data-label="Status">\n'
            f'    <div class="why"><span class="status status-{status}">{_e(row.status_label)}</span>{high_risk}'
            f'{marker} <span class="reason">{_e(_capfirst(row.reason))}</span></div>\n'
            f'    {line}\n'
            f'  </td>\n')


def _worklist_volume_cell(row) -> str:
    if row.volume_now_ml is None:
        return '<span class="muted">—</span>'
    capacity = _e(rate(row.capacity_ml))
    return (f'<span class="vol">≈{_e(ml(row.volume_now_ml))}</span> <meter min="0" max="{capacity}" '
            f'low="{_e(rate(row.pump.low_reservoir_alarm_ml))}" high="{capacity}" optimum="{capacity}" '
            f'value="{_e(rate(row.volume_now_ml))}" aria-label="Reservoir {row.volume_pct} % of '
            f'{_e(ml(row.capacity_ml))} mL">{row.volume_pct} %</meter>')


def _worklist_dates_cells(row, now: datetime) -> str:
    pump = row.pump
    active = row.status != pj.STATUS_INACTIVE
    if pump.low_reservoir_alarm_at and active:
        alarm = (f'<span class="{_flagged(pump.low_reservoir_alarm_at <= now)}">'
                 f'{_e(pj.relative_instant(pump.low_reservoir_alarm_at, now))}</span>')
    else:
        alarm = '<span class="muted">—</span>'
    if pump.refill_due_on and active:
        due = (f'<span class="{_flagged(row.days_to_due < 0)}">{_e(days_phrase(row.days_to_due))}</span><br>'
               f'<span class="small muted">{_e(isodate(pump.refill_due_on))} '
               f'({_e(weekday(pump.refill_due_on))})</span>')
    else:
        due = '<span class="muted">—</span>'
    if row.next_appointment_at:
        visit = (f'{_e(_capfirst(row.next_appointment_kind))} '
                 f'{_e(pj.relative_instant(row.next_appointment_at, now))}<br><span class="small muted">'
                 f'{_e(pj.local_instant(row.next_appointment_at, pump.clinic.tz))}</span>')
    else:
        visit = '<span class="muted">none booked</span>'
    return (f'  <td class="col-alarm" data-label="Worst-case alarm">{alarm}</td>\n'
            f'  <td class="col-when" data-label="Refill due">{due}</td>\n'
            f'  <td class="col-when" data-label="Next appointment">{visit}</td>\n')


def worklist_row_html(row, now: datetime, many_clinics: bool, pump_url: str) -> str:
    """One worklist row (``selectors.WorklistRow``): its status and why, the patient, the
    volume now, the worst-case alarm, the refill due, the next visit, the prescriber.
    ``pump_url``: the pump page's URL with ``_SOME_PK`` for the id."""
    pump, patient = row.pump, row.pump.patient
    status = _e(row.status)
    clinic = f' <span class="small muted">{_e(pump.clinic.code)}</span>' if many_clinics else ""
    return (
        f'\n<tr class="row-{status}{" needs-action" if row.needs_action else ""}" data-status="{status}" '
        f'data-pump="{pump.pk}">\n'
        f'{_worklist_status_cell(row)}'
        f'  <td class="col-patient" data-label="Patient"><a href="{_e(pump_url.replace(_SOME_PK, str(pump.pk)))}" '
        f'class="patient-link">{_e(patient.family_name)}, {_e(patient.given_name)}</a> '
        f'<span class="mrn">MRN {_e(patient.mrn)}</span>{clinic}</td>\n'
        f'  <td class="col-volume" data-label="Volume now">{_worklist_volume_cell(row)}</td>\n'
        f'{_worklist_dates_cells(row, now)}'
        f'  <td class="col-person" data-label="Prescriber">{_e(person(row.prescriber))}</td>\n'
        f'</tr>\n'
    )


@register.simple_tag(takes_context=True)
def worklist_rows(context, rows) -> str:
    """The ``<tr>`` of each worklist row (``worklist_row_html``)."""
    now = context.get("now") or timezone.now()
    many = bool(context.get("many_clinics"))
    pump_url = reverse("pump", args=[_SOME_PK])  # reversed once; each row puts its pump's id in
    return mark_safe("".join(worklist_row_html(row, now, many, pump_url) for row in rows))  # noqa: S308 - escaped above


# ---------------------------------------------------------------- pump page rows
#
# The pump page lists every refill, program and reading of the pump and up to two
# hundred audit entries: a pump with a long history has hundreds of rows, written here
# as the worklist's are (escaped with ``_e``), each table's "Void" link reversed once.

_MODE_LABELS = {value: str(label) for value, label in Program.Mode.choices}


def _void_cell(record, may_void: bool, void_url: str) -> str:
    """The last cell of a record's row: why it was voided, else the link to void it."""
    if record.is_voided:
        inside = f"voided: {_e(record.void_reason)}"
    elif may_void:
        inside = f'<a href="{_e(void_url.replace(_SOME_PK, str(record.pk)))}">Void</a>'
    else:
        inside = ""
    return f'<td class="void-reason">{inside}</td>'


def _voided_class(record) -> str:
    return "voided" if record.is_voided else ""


def refill_row_html(r, clinic, may_void: bool, void_url: str) -> str:
    """One row of the pump page's refills table (``void_url``: with ``_SOME_PK`` for the id)."""
    first = '<br><span class="small muted">first fill</span>' if r.is_first_fill else ""
    discrepancy = f"{_e(signed(r.discrepancy_ml))} mL" if r.discrepancy_ml is not None else "—"
    flags = "".join(f'<br><span class="flag">Flagged: {_e(f)}</span>' for f in r.flags or ())
    drug = f"{_e(ml(r.concentration_mcg_per_ml))} mcg/mL"
    if r.drug_product:
        drug += f'<br><span class="small">{_e(product(r))}</span>'
    if r.lot_number:
        drug += f'<br><span class="small">lot {_e(r.lot_number)}</span>'
    if r.bridge_bolus_ml:
        drug += f'<br><span class="small">bridge bolus {_e(ml(r.bridge_bolus_ml))} mL</span>'
    return (
        f'\n      <tr class="{_voided_class(r)}">\n'
        f'        <td>{_e(local(r.performed_at, clinic))}{first}</td>\n'
        f'        <td class="num">{_e(ml(r.extracted_volume_ml))}</td>\n'
        f'        <td class="num">{_e(ml(r.expected_residual_ml))}</td>\n'
        f'        <td>{discrepancy}\n'
        f'          {flags}</td>\n'
        f'        <td class="num">{_e(ml(r.added_volume_ml))}</td>\n'
        f'        <td class="num">{_e(ml(r.volume_after_ml))}</td>\n'
        f'        <td>{drug}</td>\n'
        f'        <td>{_e(person(r.performed_by))}{_e(r.performed_by_external)}</td>\n'
        f'        {_void_cell(r, may_void, void_url)}\n'
        f'      </tr>\n    '
    )


def _flex_steps(prog) -> str:
    if prog.mode != Program.Mode.FLEX:
        return ""
    steps = "; ".join(f'{_e(s.get("start", ""))} {_e(ml(s.get("dose_mcg_per_hour")))} mcg/h' for s in prog.steps or ())
    return f'<br><span class="small">{steps}</span>'


def program_row_html(prog, clinic, may_void: bool, void_url: str) -> str:
    """One row of the pump page's programs table; a program that came with a refill is
    voided with its refill."""
    with_refill = '<br><span class="small muted">with a refill</span>' if prog.refill_id else ""
    bolus = f"{_e(ml(prog.ptm_bolus_mcg))} mcg × {_e(prog.ptm_max_per_day)}/day" if prog.ptm_bolus_mcg else "—"
    if prog.verified_at:
        verified = f"{_e(person(prog.verified_by))}{_e(prog.verified_by_external)}"
    else:
        verified = "<strong>not verified</strong>"
    return (
        f'\n      <tr class="{_voided_class(prog)}">\n'
        f'        <td>{_e(local(prog.effective_at, clinic))}{with_refill}</td>\n'
        f'        <td>{_e(_MODE_LABELS.get(prog.mode, prog.mode))}{_flex_steps(prog)}</td>\n'
        f'        <td class="num">{_e(ml(prog.daily_dose_mcg))}</td>\n'
        f'        <td class="num">{_e(ml(prog.concentration_mcg_per_ml))}</td>\n'
        f'        <td class="num">{_e(rate(prog.daily_volume_ml))}</td>\n'
        f'        <td>{bolus}</td>\n'
        f'        <td>{_e(person(prog.entered_by))}{_e(prog.entered_by_external)}</td>\n'
        f'        <td>{verified}</td>\n'
        f'        <td>{_e(prog.override_reason or "—")}</td>\n'
        f'        {_void_cell(prog, may_void and not prog.refill_id, void_url)}\n'
        f'      </tr>\n    '
    )


def reading_row_html(r, clinic, may_void: bool, void_url: str) -> str:
    """One row of the pump page's readings table."""
    return (
        f'<tr class="{_voided_class(r)}"><td>{_e(local(r.read_at, clinic))}</td>'
        f'<td class="num">{_e(ml(r.reservoir_volume_ml))}</td><td>{"yes" if r.eri else "no"}</td>\n'
        f'      {_void_cell(r, may_void, void_url)}</tr>\n    '
    )


def audit_row_html(entry, clinic) -> str:
    """One row of the pump page's audit history (``selectors.AuditEntry``)."""
    reason = f'<br><span class="small muted">{_e(entry.reason)}</span>' if entry.reason else ""
    changes = "<br>".join(f"{_e(field)}: {_e(old)} → {_e(new)}" for field, old, new in entry.changes) or "—"
    return (
        f'<tr><td>{_e(local(entry.at, clinic))}</td><td>{_e(entry.who or "—")}</td>'
        f'<td>{_e(entry.what)} {_e(entry.action)}{reason}</td>\n'
        f'      <td>{changes}</td></tr>\n    '
    )


def _record_rows(context, records, kind: str, row_html, may_void: bool) -> str:
    """The rows of a table of records, newest first, each written by ``row_html``."""
    void_url = reverse("void", args=[kind, _SOME_PK]) if may_void else ""
    clinic = context["clinic"]
    html = "".join(row_html(r, clinic, may_void, void_url) for r in reversed(records))
    return mark_safe(html)  # noqa: S308 - escaped by the row functions


@register.simple_tag(takes_context=True)
def refill_rows(context, refills) -> str:
    """The ``<tr>`` of each refill, newest first (``refill_row_html``)."""
    return _record_rows(context, refills, "refill", refill_row_html, context["can"].can_write)


@register.simple_tag(takes_context=True)
def program_rows(context, programs) -> str:
    """The ``<tr>`` of each program, newest first (``program_row_html``)."""
    return _record_rows(context, programs, "program", program_row_html, context["can"].can_program)


@register.simple_tag(takes_context=True)
def reading_rows(context, readings) -> str:
    """The ``<tr>`` of each reading, newest first (``reading_row_html``)."""
    return _record_rows(context, readings, "reading", reading_row_html, context["can"].can_write)


@register.simple_tag(takes_context=True)
def audit_rows(context, entries) -> str:
    """The ``<tr>`` of each audit entry, in their order (``audit_row_html``)."""
    clinic = context["clinic"]
    return mark_safe("".join(audit_row_html(e, clinic) for e in entries))  # noqa: S308 - escaped by audit_row_html
