"""Reads shared by the staff pages: scoping, the worklist, the pump page, the worksheet.

Every function here reads; writes go through ``pumps.services``. Each page's data comes
from a fixed number of queries whatever the number of pumps or records (tests assert
the counts), and every number comes from the one projection engine (``pumps.projection``
through ``pumps.history.project_pump``) and the one set of checks (``pumps.checks``).
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.contrib.postgres.expressions import ArraySubquery
from django.core.cache import cache
from django.db import connection
from django.db.models import BooleanField, Case, Count, Exists, F, Func, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.expressions import RawSQL
from django.http import Http404

from clinic import permissions as perms
from clinic.models import CLINICAL_WRITERS, PROGRAM_WRITERS, Clinic, Membership, Role

from . import checks, symptom_alerts, tallies
from . import projection as pj
from .alerting.heartbeat import is_stale, last_sweep
from .alerting.rules import needs_reason
from .history import PumpHistory, project_pump
from .models import (
    Alert,
    AlertKind,
    Appointment,
    Assessment,
    CoMedication,
    DrugProduct,
    Event,
    Notification,
    Patient,
    Program,
    Pump,
    Reading,
    Refill,
    Severity,
    WithdrawalPlan,
)

STATUS_LABELS = {
    pj.STATUS_EMPTY: "Empty",
    pj.STATUS_ALARM: "Low-reservoir alarm",
    pj.STATUS_OVERDUE: "Refill overdue",
    pj.STATUS_DUE_SOON: "Refill due soon",
    pj.STATUS_OK: "OK",
    pj.STATUS_INCOMPLETE: "Incomplete data",
    pj.STATUS_INACTIVE: "Inactive",
}
URGENCY = {status: rank for rank, status in enumerate(pj.STATUSES)}


# --------------------------------------------------------------------- open alerts

SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def open_alerts_by_pump(pump_ids) -> dict[int, list[Alert]]:
    """The unresolved alerts of these pumps, acknowledged ones included (acknowledging
    stops the reminders, not the marker), most severe first, newest first within a
    severity: one query, for the worklist, the pump page, the worksheet and the API."""
    ids = list(pump_ids)
    found: dict[int, list[Alert]] = {pk: [] for pk in ids}
    if not ids:
        return found
    rows = (
        Alert.objects.filter(pump_id__in=ids, resolved_at__isnull=True)
        .select_related("acknowledged_by")
        .order_by("-created_at", "-id")
    )
    for alert in rows:
        found[alert.pump_id].append(alert)
    for alerts in found.values():
        alerts.sort(key=lambda a: SEVERITY_RANK.get(a.severity, 3))  # stable: newest first within a rank
    return found


CRITICAL = "critical"


@dataclass(frozen=True)
class PumpSafety:
    """What must never be missed about a pump, in one place for the pump page's header
    and the refill worksheet: its status now and why, its unresolved alerts (acknowledged
    ones included: acknowledging stops the reminders, not the condition) and whether
    the patient is at risk of withdrawal now."""

    status: str
    label: str
    reason: str  # "overdue: drug expired on 2026-10-18 (44 days ago)"
    explanted_on: date | None
    explant_reason: str
    open_alerts: list[Alert]  # most severe first
    critical_alerts: list[Alert]
    withdrawal_risk: bool  # now: the pump is empty (worst case) or a withdrawal-risk alert is unresolved
    withdrawal_reasons: list[str]
    high_risk_patient: bool  # the patient's standing risk flag (injury level, communication, history)
    high_risk_reason: str

    @property
    def explanted(self) -> bool:
        return self.explanted_on is not None


def pump_safety(pump: Pump, now: datetime, open_alerts: list[Alert] | None = None) -> PumpSafety:
    """The safety summary of one pump as of ``now``, from its stored projection
    (``Pump.status_reason``) and its unresolved alerts: ``open_alerts`` when the caller
    has them (most severe first, as ``open_alerts_by_pump`` gives them), else one query.
    ``pump`` needs ``clinic`` and ``patient``."""
    if open_alerts is None:
        open_alerts = open_alerts_by_pump([pump.pk])[pump.pk]
    if pump.explanted_on is not None:
        status, reason = pj.STATUS_INACTIVE, f"inactive: explanted on {pump.explanted_on.isoformat()}"
    else:
        status, reason = pump.live_status(now), pump.status_reason(now)
    critical = [a for a in open_alerts if a.severity == CRITICAL]
    why = []
    if status == pj.STATUS_EMPTY:
        why.append(reason)
    if any(a.kind == AlertKind.WITHDRAWAL_RISK for a in open_alerts):
        why.append("a withdrawal-risk alert is open")
    patient = pump.patient
    return PumpSafety(
        status=status, label=STATUS_LABELS[status], reason=reason, explanted_on=pump.explanted_on,
        explant_reason=pump.explant_reason, open_alerts=list(open_alerts), critical_alerts=critical,
        # an explanted pump is at risk while a stop without a plan is open (docs/clinical-rules.md §15)
        withdrawal_risk=bool(why) and (pump.explanted_on is None
                                       or any(map(symptom_alerts.is_stop_episode, critical))),
        withdrawal_reasons=why,
        high_risk_patient=patient.withdrawal_high_risk, high_risk_reason=patient.high_risk_reason,
    )


def alert_needs_reason(alert: Alert) -> bool:
    """Silencing a critical alert is deliberate: its acknowledgement needs a reason
    (``alerting.rules.needs_reason``: low reservoir, withdrawal risk, post-MRI check,
    alerting stalled, and a drug past its stability date when critical)."""
    return needs_reason(alert)


def acknowledging_clinic_ids(user) -> set[int] | None:
    """Clinics in which the user may acknowledge alerts; ``None``: every clinic."""
    return perms.clinics_where(user, perms.Action.ACKNOWLEDGE)


# ------------------------------------------------------------------------- scoping


def scope(queryset: QuerySet, user, clinic_field: str = "clinic") -> QuerySet:
    """Only the records of the user's clinics (a superuser sees every clinic). A
    subquery, not a list of ids: no extra query."""
    if user.is_superuser:
        return queryset
    member_of = Membership.objects.filter(user=user).values("clinic_id")
    lookup = "id__in" if clinic_field == "id" else f"{clinic_field}_id__in"
    return queryset.filter(**{lookup: member_of})


UTC_ZONE = pj.UTC
TIMEZONE_CACHE_SECONDS = 300


def user_timezone(user):
    """The time zone of the user's first clinic (by code), for times on pages that show no
    clinic of their own (the footer's last sweep); UTC for a user of no clinic. Cached a
    few minutes per user: no query on most pages."""
    if not getattr(user, "is_authenticated", False):
        return UTC_ZONE
    key = f"pumps:user-tz:{user.pk}"
    name = cache.get(key)
    if name is None:
        clinics = Clinic.objects.all() if user.is_superuser else Clinic.objects.filter(memberships__user=user)
        name = clinics.order_by("code").values_list("timezone", flat=True).first() or "UTC"
        cache.set(key, name, TIMEZONE_CACHE_SECONDS)
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError):
        return UTC_ZONE


def visible_clinics(user) -> list[Clinic]:
    if user.is_superuser:
        return list(Clinic.objects.order_by("code"))
    return list(Clinic.objects.filter(memberships__user=user).order_by("code"))


@dataclass(frozen=True)
class Permissions:
    """What the user may do in one clinic (README, Security): a viewer writes nothing; only a
    prescriber enters or verifies a program; clinic settings are for clinic admins."""

    role: str | None
    superuser: bool = False

    @property
    def can_write(self) -> bool:
        return self.superuser or self.role in CLINICAL_WRITERS

    @property
    def can_program(self) -> bool:
        return self.superuser or self.role in PROGRAM_WRITERS

    @property
    def can_admin(self) -> bool:
        return self.superuser or self.role == Role.ADMIN

    @property
    def role_label(self) -> str:
        if self.superuser and not self.role:
            return "Superuser"
        return Role(self.role).label if self.role else ""


def admin_clinics(user) -> list[Clinic]:
    """Clinics whose settings the user may change."""
    if user.is_superuser:
        return list(Clinic.objects.order_by("code"))
    return list(Clinic.objects.filter(memberships__user=user, memberships__role=Role.ADMIN).order_by("code"))


def permissions_for(user, clinic: Clinic | int) -> Permissions:
    clinic_id = clinic if isinstance(clinic, int) else clinic.pk
    role = Membership.objects.filter(user=user, clinic_id=clinic_id).values_list("role", flat=True).first()
    return Permissions(role=role, superuser=user.is_superuser)


def pump_for(user, pk: int, *, related: tuple[str, ...] = ("clinic", "patient", "model")) -> Pump:
    """A pump of the user's clinics, or 404 (another clinic's record answers 404)."""
    pump = scope(Pump.objects.select_related(*related), user).filter(pk=pk).first()
    if pump is None:
        raise Http404("No such pump.")
    return pump


def patient_for(user, pk: int) -> Patient:
    patient = scope(Patient.objects.select_related("clinic"), user).filter(pk=pk).first()
    if patient is None:
        raise Http404("No such patient.")
    return patient


def record_for(user, model, pk: int):
    """A refill, reading, program, event or appointment of the user's clinics, or 404."""
    record = scope(model.objects.select_related("pump__clinic", "pump__patient", "pump__model"), user,
                   clinic_field="pump__clinic").filter(pk=pk).first()
    if record is None:
        raise Http404("No such record.")
    return record


# ----------------------------------------------------------------------- alerting


@dataclass(frozen=True)
class AlertingHealth:
    last_finished_at: datetime | None
    stale: bool


def alerting_health(now: datetime) -> AlertingHealth:
    """When the alert sweep last completed; stale after 3 intervals (docs/clinical-rules.md §11)."""
    last = last_sweep()
    return AlertingHealth(last.finished_at if last is not None else None, is_stale(last, now))


def undelivered_notifications(user, limit: int = 50) -> list:
    """Notifications of the user's clinics that kept failing (docs/clinical-rules.md §11: a person is told).

    Every full page asks, and almost always there are none: their ids are read first (a
    narrow query), and their rows with clinic, alert, pump and patient (a wide join, five
    times as long to plan and read) only when there are some."""
    queryset = scope(Notification.objects.filter(status=Notification.FAILED), user).order_by("-created_at")
    ids = list(queryset.values_list("pk", flat=True)[:limit])
    if not ids:
        return []
    position = {pk: i for i, pk in enumerate(ids)}
    rows = queryset.filter(pk__in=ids).select_related("clinic", "alert__pump__patient")
    return sorted(rows, key=lambda n: position[n.pk])


# ------------------------------------------------------------------------ worklist


@dataclass
class WorklistFilters:
    status: str = ""
    clinic: str = ""  # clinic code
    prescriber: int | None = None  # user id of the prescriber of the program in force
    q: str = ""  # MRN, name or serial number


@dataclass
class WorklistRow:
    pump: Pump
    status: str
    days_to_due: int | None
    next_appointment_at: datetime | None
    next_appointment_kind: str | None
    prescriber: Any  # a User or None
    alerts: list[Alert] = field(default_factory=list)  # unresolved, most severe first (``with_alerts``)
    reason: str = ""  # the status in words (``Pump.status_reason``)
    volume_now_ml: Decimal | None = None  # worst case, from the stored instants (``volume_now``)
    capacity_ml: Decimal | None = None

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.status]

    @property
    def volume_pct(self) -> int | None:
        """The reservoir's fill in percent (0-100), for the row's small bar."""
        if self.volume_now_ml is None or not self.capacity_ml:
            return None
        return max(0, min(100, round(self.volume_now_ml * 100 / self.capacity_ml)))

    @property
    def critical_alerts(self) -> list[Alert]:
        return [a for a in self.alerts if a.severity == CRITICAL]

    @property
    def alerts_not_shown(self) -> int:
        """Open alerts the row does not spell out: it names every critical one, else the
        most severe."""
        shown = len(self.critical_alerts) or (1 if self.alerts else 0)
        return len(self.alerts) - shown

    @property
    def withdrawal_risk(self) -> bool:
        return self.status == pj.STATUS_EMPTY or any(a.kind == AlertKind.WITHDRAWAL_RISK for a in self.alerts)

    @property
    def needs_action(self) -> bool:
        """Empty, at the alarm, at risk of withdrawal or with an open critical alert: the
        worklist's "Needs action now" band."""
        if self.pump.explanted_on is not None:  # only its dose-and-response alerts stay open
            return bool(self.critical_alerts)
        return self.status in (pj.STATUS_EMPTY, pj.STATUS_ALARM) or self.withdrawal_risk or bool(self.critical_alerts)

    @property
    def action_tier(self) -> int:
        """Within the band: 0 empty, 1 a withdrawal-risk alert, 2 at the alarm, 3 another
        critical alert."""
        if self.status == pj.STATUS_EMPTY:
            return 0
        if self.withdrawal_risk:
            return 1
        return 2 if self.status == pj.STATUS_ALARM else 3

    @property
    def top_alert(self) -> Alert | None:
        return self.alerts[0] if self.alerts else None

    @property
    def alert_rank(self) -> int:
        """0: an unacknowledged critical alert; 1: a critical alert someone acknowledged
        (the condition persists); 2: none."""
        critical = [a for a in self.alerts if a.severity == CRITICAL]
        if any(a.acknowledged_at is None for a in critical):
            return 0
        return 1 if critical else 2


WORKLIST_ORDER = ("urgency", F("refill_due_on").asc(nulls_last=True),
                  F("low_reservoir_alarm_at").asc(nulls_last=True), "id")


def _worklist_key(status: str, pump: Pump) -> tuple:
    """The worklist's order in Python: the same as ``WORKLIST_ORDER`` in SQL."""
    return (URGENCY[status], pump.refill_due_on or date.max,
            pump.low_reservoir_alarm_at or datetime.max.replace(tzinfo=UTC), pump.pk)


class WorklistRows:
    """The rows of the worklist, fetched a page at a time (``Paginator`` slices it).

    Most pumps' stored status is current: the database returns them in the worklist's
    order from an index (``pump_urgency_idx``), one page at a time, whatever the number
    of pumps. The few whose stored instants say their status changed since the last sweep
    (``next_change_at`` passed) are read apart, given their live status, and merged into
    the page at their place, so that a pump that crossed its alarm a minute ago is already
    at the top."""

    def __init__(self, fresh: QuerySet, stale: list[WorklistRow], fresh_count: int, now: datetime,
                 people: dict, clinics: dict[int, Clinic]):
        self.fresh = fresh  # ordered by WORKLIST_ORDER
        self.clinics = clinics
        self.stale = sorted(stale, key=lambda r: _worklist_key(r.status, r.pump))
        self.fresh_count = fresh_count
        self.now = now
        self.people = people

    def count(self) -> int:
        return self.fresh_count + len(self.stale)

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, item):
        if not isinstance(item, slice):
            rows = self[item:item + 1]
            if not rows:
                raise IndexError(item)
            return rows[0]
        start, stop = item.start or 0, item.stop if item.stop is not None else self.count()
        if stop <= start:
            return []
        s = len(self.stale)
        first = max(0, start - s)  # fresh rows before ``first`` rank before ``start``
        fetched = _share_clinics(list(self.fresh[first:stop]), self.clinics)
        missing = {p.prescriber_id for p in fetched if p.prescriber_id and p.prescriber_id not in self.people}
        if missing:  # a program entered by someone no longer a prescriber here
            self.people.update({u.pk: u for u in get_user_model().objects.filter(pk__in=missing)})
        exhausted = first + len(fetched) >= self.fresh_count
        stale_keys = [_worklist_key(r.status, r.pump) for r in self.stale]
        fresh_keys = [_worklist_key(p.status, p) for p in fetched]
        ranked = []
        for j, pump in enumerate(fetched):
            before = sum(1 for k in stale_keys if k < fresh_keys[j])
            ranked.append((first + j + before, self._row(pump, pump.status)))
        for i, row in enumerate(self.stale):
            key = stale_keys[i]
            if first > 0 and (not fetched or key < fresh_keys[0]):
                continue  # ranks before ``start``
            if fetched and key > fresh_keys[-1] and not exhausted:
                continue  # ranks at or after ``stop``
            ranked.append((i + first + sum(1 for k in fresh_keys if k < key), row))
        return [row for rank, row in sorted(ranked, key=lambda x: x[0]) if start <= rank < stop]

    def _row(self, pump: Pump, status: str) -> WorklistRow:
        if pump.explanted_on is not None:
            status = pj.STATUS_INACTIVE
        return _worklist_row(pump, status, self.now, self.people)


def volume_now(pump: Pump, now: datetime) -> Decimal | None:
    """The worst-case volume in the reservoir as of ``now``, from the stored projection
    alone (no query, no recompute): between the worst-case alarm instant (the pump holds
    its alarm volume) and the worst-case empty instant (it holds nothing) the projection
    delivers at the worst-case rate, so the volume now is the alarm volume scaled by the
    time left to empty over the time from the alarm to empty, capped at the reservoir's
    capacity. Exact for a continuous program without a later change; for a flex program
    it is the day's average rate (within one day's variation). None when the stored
    projection has no alarm or empty instant (incomplete, inactive)."""
    lra_at, empty_at, alarm_ml = pump.low_reservoir_alarm_at, pump.empty_at, pump.low_reservoir_alarm_ml
    if pump.explanted_on is not None or lra_at is None or empty_at is None or alarm_ml is None:
        return None
    if now >= empty_at:
        return Decimal(0)
    span = (empty_at - lra_at).total_seconds()
    if span <= 0:
        return None
    volume = Decimal(alarm_ml) * Decimal((empty_at - now).total_seconds()) / Decimal(span)
    capacity = pump.model.reservoir_ml
    if capacity is not None:
        volume = min(volume, capacity)
    return volume.quantize(Decimal("0.001"))


def _worklist_row(pump: Pump, status: str, now: datetime, people: dict) -> WorklistRow:
    days = (pump.refill_due_on - pj.local_date(now, pump.clinic.tz)).days if pump.refill_due_on else None
    return WorklistRow(pump, status, days, pump.next_appointment_at, pump.next_appointment_kind,
                       people.get(pump.prescriber_id), volume_now_ml=volume_now(pump, now),
                       capacity_ml=pump.model.reservoir_ml)


def with_alerts(rows: list[WorklistRow], now: datetime) -> list[WorklistRow]:
    """One page of the worklist with each row's unresolved alerts (one query, whatever
    the page's size) and its status in words, reordered so that within each status the
    pumps with an unacknowledged critical alert come first, then those with an
    acknowledged critical alert, the rest in the worklist's order.

    The reorder is of the rows given: the index gives pages in ``urgency`` order, and the
    first page also gets the pumps of later pages with an open critical alert
    (``critical_elsewhere``), so that every one of them is in the first page's band."""
    found = open_alerts_by_pump(row.pump.pk for row in rows)
    for row in rows:
        row.alerts = found.get(row.pump.pk, [])
        row.reason = row.pump.status_reason(now)
    position = {id(row): i for i, row in enumerate(rows)}
    far = datetime.max.replace(tzinfo=UTC)

    def key(r: WorklistRow) -> tuple:
        if r.needs_action:  # the band: most urgent first, the soonest empty first within a tier
            return (0, r.action_tier, r.alert_rank, r.pump.empty_at or far, position[id(r)])
        return (1, URGENCY[r.status], r.alert_rank, position[id(r)])

    return sorted(rows, key=key)


def critical_elsewhere(worklist: Worklist, shown: set[int]) -> list[WorklistRow]:
    """The pumps of the (filtered) worklist with an open critical alert that are not among
    ``shown``, the rows of the first page: the "Needs action now" band lists them there
    too, so that no critical alert waits on a later page. One query: the pumps the page's
    filters select (explanted pumps included), ordered like the worklist, among those of
    the user's clinics with an open critical alert (a subquery on the partial index
    ``alert_open_critical_idx``, which drives the plan). Also returned: the pumps whose
    stored status is stale (in memory already);
    ``first_page_rows`` keeps those that ``with_alerts`` finds a critical alert for."""
    rows: WorklistRows = worklist.rows
    critical = Alert.objects.filter(resolved_at__isnull=True, severity=Severity.CRITICAL, pump__isnull=False)
    listed = rows.fresh
    if worklist.explanted is not None:
        # an explanted pump keeps a stop-without-plan or symptom alert (pumps.symptom_alerts)
        listed = listed | worklist.explanted
    ids = critical.filter(clinic_id__in=rows.clinics).values("pump_id")
    fresh = listed.filter(_pk_in_array(ids)).exclude(pk__in=shown).order_by(*WORKLIST_ORDER)
    pumps = _share_clinics(list(fresh[:WORKLIST_BAND_LIMIT]), rows.clinics)
    found = [rows._row(pump, pump.status) for pump in pumps]
    return found + [r for r in rows.stale if r.pump.pk not in shown]


def _pk_in_array(ids: QuerySet) -> Q | Func:
    """``pk IN ids``, on PostgreSQL as ``pk = ANY(ARRAY(ids))``: the ids are read first,
    once, and the rows fetched by primary key. Written ``IN (subquery)``, with the
    worklist's order and a limit, the planner may walk a status's pumps in index order
    probing each for an open critical alert, a walk of every pump of that status when none
    has one (75 ms for the "ok" pumps at 100k, README "Scale and benchmarks")."""
    if connection.vendor != "postgresql":
        return Q(pk__in=ids)
    return Func(F("pk"), ArraySubquery(ids), arg_joiner=" = ANY(", template="(%(expressions)s))",
                output_field=BooleanField())


def first_page_rows(worklist: Worklist, rows: list[WorklistRow], now: datetime) -> list[WorklistRow]:
    """The first page's rows and, for its band, the worklist's other pumps with an open
    critical alert (``critical_elsewhere``), with their alerts and in the band's order
    (``with_alerts``): two queries whatever the number of pumps."""
    extra = critical_elsewhere(worklist, {r.pump.pk for r in rows})
    added = {id(r) for r in extra}
    return [r for r in with_alerts(rows + extra, now) if id(r) not in added or r.critical_alerts]


#: At most this many pumps from later pages join the first page's band.
WORKLIST_BAND_LIMIT = 100


def split_band(rows: list[WorklistRow]) -> tuple[list[WorklistRow], list[WorklistRow]]:
    """(the "Needs action now" rows, the rest) of a page ordered by ``with_alerts``."""
    band = [r for r in rows if r.needs_action]
    return band, [r for r in rows if not r.needs_action]


def changed_since(user, since: datetime) -> bool:
    """Whether any pump or alert of the user's clinics changed after ``since``: a write
    (it bumps ``Pump.updated_at``, indexed) or an alert raised, acknowledged or resolved.
    At most three small EXISTS queries, for the pages' 30-second polls."""
    if scope(Pump.objects.filter(updated_at__gt=since), user).exists():
        return True
    alerts = scope(Alert.objects.all(), user)
    return alerts.filter(created_at__gt=since).exists() or alerts.filter(
        Q(acknowledged_at__gt=since) | Q(resolved_at__gt=since)).exists()


def pump_changed_since(pump_id: int, since: datetime) -> bool:
    """Whether this pump or its alerts changed after ``since`` (one query)."""
    handled = Alert.objects.filter(pump_id=pump_id).filter(
        Q(created_at__gt=since) | Q(acknowledged_at__gt=since) | Q(resolved_at__gt=since))
    return Pump.objects.filter(pk=pump_id).filter(Q(updated_at__gt=since) | Q(projected_at__gt=since)
                                                  | Exists(handled)).exists()


@dataclass
class Worklist:
    rows: WorklistRows
    counts: dict[str, int]  # per status, before the status filter; "inactive" includes the explanted pumps
    clinics: list[Clinic]
    prescribers: list[Any]
    total: int
    #: the explanted pumps the filters select (their dose-and-response alerts outlive the explant)
    explanted: QuerySet | None = None


def _current_program(now: datetime):
    return Program.objects.filter(pump=OuterRef("pk"), voided_at__isnull=True, effective_at__lte=now).order_by(
        "-effective_at", "-id"
    )


#: A search that finds at most this many pumps hands their ids to the worklist's queries:
#: on PostgreSQL as one array parameter, elsewhere as a list of at most
#: ``SEARCH_IDS_LIST_LIMIT`` parameters.
SEARCH_IDS_LIMIT = 10_000
SEARCH_IDS_LIST_LIMIT = 2000


def _search(text: str, user) -> Q:
    """Pumps whose patient's MRN (exactly or its start) or pump's serial number is the text,
    or whose patient's family or given name contains each of its words.

    The pumps found are read first, in one query: ``pumps of the matching patients
    UNION pumps with that serial``, the patients looked for among the user's clinics'
    alone, each side on one table's indexes (on PostgreSQL the patients' MRN and name
    indexes and the pumps' serial index of migration ``pumps/0021``). The worklist's
    queries (its page, counts, stale pumps and band) then take those ids; only a search
    finding more than ``SEARCH_IDS_LIMIT`` pumps (a common surname in a large network
    finds thousands) hands them the query itself. Written as
    one ``OR`` across the pump and patient tables, the same test joined every pump of the
    clinics to its patient in each of those queries (README "Scale and benchmarks")."""
    by_name = Q()
    for word in text.replace(",", " ").split():
        by_name &= Q(family_name__icontains=word) | Q(given_name__icontains=word)
    # an MRN that is the text is one that starts with it
    patients = scope(Patient.objects.all(), user).filter(Q(mrn__istartswith=text) | by_name).order_by().values("id")
    by_patient = Pump.objects.filter(patient__in=patients).order_by().values_list("id", flat=True)
    by_serial = scope(Pump.objects.filter(serial_number__iexact=text), user).order_by().values_list("id", flat=True)
    found = by_patient.union(by_serial)
    array = connection.vendor == "postgresql"
    limit = SEARCH_IDS_LIMIT if array else min(SEARCH_IDS_LIMIT, SEARCH_IDS_LIST_LIMIT)
    ids = list(found[:limit + 1])
    if len(ids) > limit:
        return Q(pk__in=found)
    if array:
        # one array parameter: Django prepares each value of an IN list in Python, and a
        # thousand ids in each of the page's queries cost more than the page itself
        return Q(pk__in=RawSQL("SELECT unnest(%s::bigint[])", ["{" + ",".join(map(str, ids)) + "}"]))
    return Q(pk__in=ids)


def _worklist_clinic_ids(user, clinics: list[Clinic], filters: WorklistFilters) -> list[int] | None:
    """The ids of the clinics the worklist lists (the user's, or the one its filter names),
    None for every clinic (a superuser's unfiltered list). Given to the worklist's queries
    as values, not as a join or a subquery: the planner then knows which clinics, and
    reads one clinic's most urgent pumps from ``pump_clinic_urgency_idx`` instead of
    sorting all of them (README "Scale and benchmarks")."""
    if user.is_superuser and not filters.clinic:
        return None
    return [c.pk for c in clinics if not filters.clinic or c.code == filters.clinic]


def _worklist_pumps(queryset: QuerySet, clinic_ids: list[int] | None, filters: WorklistFilters, now: datetime,
                    search: Q | None) -> QuerySet:
    """The pumps of ``clinic_ids`` (``_worklist_clinic_ids``: the user's clinics, or the
    one the filter names) with what a worklist row shows (the next appointment, the
    prescriber of the program in force), narrowed by the filters but the status and the
    clinic; ``search``: the search's condition (``_search``, read once per page)."""
    next_appointment = Appointment.objects.filter(
        pump=OuterRef("pk"), status=Appointment.Status.SCHEDULED, voided_at__isnull=True, scheduled_for__gte=now
    ).order_by("scheduled_for", "id")
    if clinic_ids is not None:
        queryset = queryset.filter(clinic_id__in=clinic_ids)
    queryset = (
        queryset
        .select_related("patient", "model")  # the clinic: one shared object per clinic (``_share_clinics``)
        .annotate(
            next_appointment_at=Subquery(next_appointment.values("scheduled_for")[:1]),
            next_appointment_kind=Subquery(next_appointment.values("kind")[:1]),
            prescriber_id=Subquery(_current_program(now).values("entered_by_id")[:1]),
        )
    )
    if filters.prescriber:
        queryset = queryset.filter(prescriber_id=filters.prescriber)
    if search is not None:
        queryset = queryset.filter(search)
    return queryset


def _share_clinics(pumps: list[Pump], clinics: dict[int, Clinic]) -> list[Pump]:
    """Give the worklist's pumps their clinic from the user's clinics, read once (the
    query does not join the clinic's wide row to every pump's)."""
    for pump in pumps:
        if pump.clinic_id in clinics:
            pump.clinic = clinics[pump.clinic_id]
    return pumps


def _fresh_counts(clinic_ids: list[int], filters: WorklistFilters, fresh: QuerySet,
                  stale_pumps: list[Pump]) -> Counter:
    """The implanted pumps whose stored status is current, counted per status: one query.
    ``clinic_ids``: the clinics the worklist lists (``_worklist_clinic_ids``)."""
    if filters.q.strip() or filters.prescriber:
        # a search or one prescriber's pumps: count the pumps found
        return Counter({
            row["status"]: row["n"]
            for row in fresh.order_by().values("status").annotate(n=Count("*")).values("status", "n")
        })
    # every pump of the clinics: the status tally, one small indexed sum
    fresh_counts = tallies.counts(clinic_ids)
    for pump in stale_pumps:  # counted below at their live status
        fresh_counts[pump.status] -= 1
    return fresh_counts


def _worklist_prescribers(user, stale_pumps: list[Pump]) -> list:
    """The prescribers of the user's clinics, and those of the stale pumps' programs: one query."""
    User = get_user_model()
    members = scope(Membership.objects.filter(role=Role.PRESCRIBER), user).values("user_id")
    stale_ids = {p.prescriber_id for p in stale_pumps if p.prescriber_id}
    return list(User.objects.filter(Q(pk__in=members) | Q(pk__in=stale_ids)).order_by(
        "last_name", "first_name", "username"
    ))


def worklist_for(user, filters: WorklistFilters, now: datetime) -> Worklist:
    """Every implanted pump of the user's clinics, most urgent first: empty, alarm,
    overdue, due soon, ok, incomplete, inactive; then by due date and alarm instant.

    The status is the live status as of ``now``: the stored one, or for a pump whose
    stored instants say it changed since the last sweep, the one they give now. A fixed
    number of queries whatever the number of pumps: the stale pumps, the counts per
    status (from the status tally, unless a search or a prescriber narrows the list), the
    clinics, the prescribers, and (when the paginator slices the rows) one page of pumps
    from the worklist index."""
    text = filters.q.strip()
    search = _search(text, user) if text else None
    clinics = visible_clinics(user)
    by_id = {c.pk: c for c in clinics}
    clinic_ids = _worklist_clinic_ids(user, clinics, filters)
    pumps = _worklist_pumps(Pump.objects.filter(explanted_on__isnull=True), clinic_ids, filters, now, search)
    # Explanted pumps are inactive: counted under "Inactive" and listed by its filter.
    explanted = _worklist_pumps(Pump.objects.filter(explanted_on__isnull=False), clinic_ids, filters, now, search)
    explanted_count = explanted.order_by().count()
    stale_pumps = _share_clinics(list(pumps.filter(next_change_at__lte=now)), by_id)
    fresh = pumps.filter(Q(next_change_at__isnull=True) | Q(next_change_at__gt=now))
    fresh_counts = _fresh_counts(list(by_id) if clinic_ids is None else clinic_ids, filters, fresh, stale_pumps)
    counts = Counter(fresh_counts)
    counts[pj.STATUS_INACTIVE] += explanted_count

    prescribers = _worklist_prescribers(user, stale_pumps)
    people = {u.pk: u for u in prescribers}

    stale = []
    for pump in stale_pumps:
        status = pump.live_status(now)
        counts[status] += 1
        if not filters.status or status == filters.status:
            stale.append(_worklist_row(pump, status, now, people))
    if filters.status:
        fresh = fresh.filter(urgency=URGENCY[filters.status])
    fresh_count = fresh_counts.get(filters.status, 0) if filters.status else sum(fresh_counts.values())
    if filters.status == pj.STATUS_INACTIVE:  # the implanted inactive pumps, then the explanted ones
        current = Q(next_change_at__isnull=True) | Q(next_change_at__gt=now)
        fresh = _worklist_pumps(Pump.objects.all(), clinic_ids, filters, now, search).filter(
            Q(explanted_on__isnull=False) | (Q(urgency=URGENCY[pj.STATUS_INACTIVE]) & current))
        fresh_count += explanted_count
    return Worklist(
        rows=WorklistRows(fresh.order_by(*WORKLIST_ORDER), stale, fresh_count, now, people, by_id),
        counts={s: counts.get(s, 0) for s in pj.STATUSES},
        clinics=clinics,
        prescribers=prescribers,
        total=sum(counts.values()) - explanted_count,  # the implanted pumps
        explanted=explanted if not filters.status or filters.status == pj.STATUS_INACTIVE else None,
    )


# ----------------------------------------------------------------------- pump page


@dataclass
class AuditEntry:
    at: datetime
    who: str  # the staff member's name (``display_name``), "" for a system or API change
    what: str  # "Refill #12"
    action: str  # created / changed / deleted
    changes: list[tuple[str, str, str]]  # (field, old, new)
    reason: str


@dataclass
class PumpPage:
    pump: Pump
    permissions: Permissions
    projection: pj.Projection
    program_in_force: Program | None
    refills: list[Refill]  # every refill, voided too, oldest first
    readings: list[Reading]
    programs: list[Program]
    events: list[Event]
    appointments: list[Appointment]
    alerts: list[Alert]
    audit: list[AuditEntry]
    other_pumps: list[Pump]
    history: PumpHistory  # live records only
    threshold_ml: Decimal
    safety: PumpSafety
    extra: dict = field(default_factory=dict)

    @property
    def status_label(self) -> str:
        return self.safety.label

    @property
    def live_refills(self) -> list[Refill]:
        return self.history.refills

    @property
    def unverified_programs(self) -> list[Program]:
        return [p for p in self.programs if p.verified_at is None and not p.is_voided]

    @property
    def next_refill_appointment(self) -> Appointment | None:
        upcoming = [
            a for a in self.appointments
            if not a.is_voided and a.kind == Appointment.Kind.REFILL and a.status == Appointment.Status.SCHEDULED
            and a.scheduled_for >= self.projection.at
        ]
        return min(upcoming, key=lambda a: a.scheduled_for, default=None)

    @property
    def open_alerts(self) -> list[Alert]:
        """Unresolved alerts, acknowledged ones included, most severe first."""
        return self.safety.open_alerts


AUDIT_SKIP = {"id", "created_at", "updated_at", "version", "entered_at"}
ALERT_ACK_FIELDS = ("acknowledged_at", "acknowledged_by_id", "acknowledged_by_external", "acknowledgement_reason")
AUDIT_LIMIT = 200


def _audit_value(value, users: dict[int, str], products: dict[int, str], attname: str, tz=None) -> str:
    """``users``: names by id; ``products``: codes by id (``_audit_references``)."""
    if value is None or value == "":
        return "—"
    if attname in AUDIT_USER_FIELDS:
        name = users.get(value)
        return name if name is not None else f"user #{value}"
    if attname == "drug_product_id":
        code = products.get(value)
        return code if code is not None else f"#{value}"
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):  # in the clinic's zone, like every time on the page
        return (value.astimezone(tz) if tz is not None else value).isoformat(timespec="minutes")
    return str(value)


#: The columns of audited records that name a staff member: the audit shows the name
#: (``tests/test_pages_pump.py`` checks that every audited model's user columns are here).
AUDIT_USER_FIELDS = ("performed_by_id", "entered_by_id", "verified_by_id", "voided_by_id", "acknowledged_by_id",
                     "recorded_by_id", "assessed_by_id", "assigned_to_id")
AUDIT_ACTIONS = {"+": "created", "~": "changed", "-": "deleted"}


#: The audited tables of a pump's audit trail, in the order the pump page lists them.
AUDIT_TABLES = ("Patient", "Pump", "Refill", "Program", "Reading", "Event", "Appointment", "Alert", "Assessment",
                "CoMedication", "WithdrawalPlan")


@dataclass(frozen=True)
class AuditRow:
    """One audit (history) row of a pump's audit trail, with the previous row of the same
    record (``None`` for its first)."""

    table: str  # "Refill"
    row: Any
    before: Any

    def changes(self, fields) -> list[tuple[Any, Any, Any]]:
        """(field, old, new) of the ``fields`` whose value differs from the previous row's:
        the one diff of the audit trail, for the pump page and the API."""
        if self.before is None:
            return []
        out = []
        for f in fields:
            old, new = getattr(self.before, f.attname, None), getattr(self.row, f.attname, None)
            if old != new:
                out.append((f, old, new))
        return out


#: Each audited table's model and the column its history rows of a pump are read by:
#: the patient's id (``True``: the patient, and the patient's co-medications, as the
#: pump page lists them) or the pump's.
AUDITED = {
    "Patient": (Patient, "id", True), "Pump": (Pump, "id", False), "Refill": (Refill, "pump_id", False),
    "Program": (Program, "pump_id", False), "Reading": (Reading, "pump_id", False), "Event": (Event, "pump_id", False),
    "Appointment": (Appointment, "pump_id", False), "Alert": (Alert, "pump_id", False),
    "Assessment": (Assessment, "pump_id", False), "CoMedication": (CoMedication, "patient_id", True),
    "WithdrawalPlan": (WithdrawalPlan, "pump_id", False),
}


def _audit_key(table: str, pump: Pump) -> int:
    return pump.patient_id if AUDITED[table][2] else pump.pk


def _audit_source(table: str, pump: Pump) -> QuerySet:
    model, column, _ = AUDITED[table]
    return model.history.filter(**{column: _audit_key(table, pump)})


def audit_trail(pump: Pump, tables: tuple[str, ...] = AUDIT_TABLES) -> list[AuditRow]:
    """The audit rows of the pump, its patient and its records (``tables``, in that order),
    oldest first within each table, each with its record's previous row: one query per
    table. The API's pump history formats these; the pump page reads the same rows
    through ``page_audit_rows``."""
    rows: list[AuditRow] = []
    for table in tables:
        previous: dict[int, Any] = {}
        for r in _audit_source(table, pump).select_related("history_user").order_by("history_date", "history_id"):
            rows.append(AuditRow(table, r, previous.get(r.id)))
            previous[r.id] = r
    return rows


#: The columns of a history row the pump page reads before the audited fields.
AUDIT_HEAD = ("history_date", "history_type", "history_change_reason", "history_user__first_name",
              "history_user__last_name", "history_user__username", "id")


@dataclass(frozen=True)
class AuditQuery:
    """The pump page's read of one audited table (``audit_query``)."""

    sql: str  # the pump's (or patient's) id is its one parameter
    compiler: Any  # Django's compiler of the query: converts the rows as the ORM's reads do
    names: tuple[str, ...]  # AUDIT_HEAD, then the fields' attnames
    fields: tuple[Any, ...]  # the fields compared: the model's, less AUDIT_SKIP and those the history does not keep


@functools.cache
def audit_query(table: str, alias: str) -> AuditQuery:
    """The history rows of one audited table, oldest first, with only the columns the
    page shows and the name of who made each change (a join), compiled by the ORM once
    per process and database: compiling the eleven queries at each request took most of
    the time of the page's audit history. The SQL depends only on the table."""
    model, column, _ = AUDITED[table]
    kept = {f.attname for f in model.history.model._meta.concrete_fields}
    fields = tuple(f for f in model._meta.fields if f.attname not in AUDIT_SKIP and f.attname in kept)
    names = (*AUDIT_HEAD, *(f.attname for f in fields))
    # 0 stands for the id; it is the query's one parameter
    query = model.history.filter(**{column: 0}).order_by("history_date", "history_id").values_list(*names).query
    compiler = query.get_compiler(alias)
    sql, params = compiler.as_sql()
    if list(params) != [0]:
        raise ValueError(f"the audit query of {table} has parameters {params!r}, not the one id")
    return AuditQuery(sql, compiler, names, fields)


def page_audit_rows(pump: Pump) -> list[tuple[AuditRow, AuditQuery]]:
    """``audit_trail(pump)`` as the pump page reads it: the same rows in the same order,
    each row a namespace of ``AuditQuery.names`` (values as the ORM reads them), one
    query per table (``audit_query``)."""
    rows: list[tuple[AuditRow, AuditQuery]] = []
    with connection.cursor() as cursor:
        for table in AUDIT_TABLES:
            query = audit_query(table, connection.alias)
            cursor.execute(query.sql, [_audit_key(table, pump)])
            previous: dict[int, Any] = {}
            for values in query.compiler.results_iter([cursor.fetchall()]):
                r = SimpleNamespace(**dict(zip(query.names, values, strict=True)))
                rows.append((AuditRow(table, r, previous.get(r.id)), query))
                previous[r.id] = r
    return rows


def _audit_references(rows: list[AuditRow]) -> tuple[dict[int, str], dict[int, str]]:
    """The names of the users and the codes of the drug products the rows refer to, by
    id: a query for each (of those columns only), only when some row refers to one."""
    user_ids = set()
    for a in rows:
        for attname in AUDIT_USER_FIELDS:
            if getattr(a.row, attname, None):
                user_ids.add(getattr(a.row, attname))
    users = {pk: person_name(first, last, username) for pk, first, last, username in get_user_model().objects
             .filter(pk__in=user_ids).values_list("pk", "first_name", "last_name", "username")} if user_ids else {}
    products = dict(DrugProduct.objects.values_list("pk", "code")) if any(
        getattr(a.row, "drug_product_id", None) for a in rows
    ) else {}
    return users, products


def _audit_changes(a: AuditRow, fields, users, products, tz) -> list[tuple[str, str, str]] | None:
    """(field, old, new) of a history row against the one before it, as the page shows
    them; ``None`` for a change that changed nothing shown (no entry)."""
    r = a.row
    if r.history_type == "~" and a.before is not None:
        changes = [(f.verbose_name, _audit_value(old, users, products, f.attname, tz),
                    _audit_value(new, users, products, f.attname, tz)) for f, old, new in a.changes(fields)]
        return changes or None
    changes = []
    if r.history_type == "~" and a.table == "Alert":
        # alerts are created in bulk by the sweep, without a first history row: an
        # acknowledgement still says who, when and why
        for f in fields:
            if f.attname in ALERT_ACK_FIELDS and getattr(r, f.attname, None) not in (None, ""):
                changes.append((f.verbose_name, "—", _audit_value(getattr(r, f.attname), users, products,
                                                                   f.attname, tz)))
    return changes


def _audit(pump: Pump) -> list[AuditEntry]:
    """The audit history of the pump's records, newest first: who, when, old and new
    values. One query per audited table; diffs computed in memory."""
    rows = page_audit_rows(pump)
    users, products = _audit_references([a for a, _ in rows])
    entries: list[AuditEntry] = []
    for a, query in rows:
        changes = _audit_changes(a, query.fields, users, products, pump.clinic.tz)
        if changes is None:
            continue
        r = a.row
        who = "" if r.history_user__username is None else person_name(
            r.history_user__first_name, r.history_user__last_name, r.history_user__username)
        entries.append(AuditEntry(r.history_date, who, f"{a.table} #{r.id}", AUDIT_ACTIONS[r.history_type],
                                  changes, r.history_change_reason or ""))
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:AUDIT_LIMIT]


def pump_page(user, pk: int, now: datetime) -> PumpPage:
    """Everything the pump page shows, in a fixed number of queries."""
    pump = pump_for(user, pk)
    refills = list(
        Refill.objects.filter(pump=pump).select_related("performed_by", "drug_product")
        .order_by("performed_at", "id")
    )
    readings = list(Reading.objects.filter(pump=pump).select_related("performed_by").order_by("read_at", "id"))
    programs = list(
        Program.objects.filter(pump=pump).select_related("entered_by", "verified_by").order_by("effective_at", "id")
    )
    events = list(Event.objects.filter(pump=pump).order_by("occurred_at", "id"))
    appointments = list(Appointment.objects.filter(pump=pump).order_by("scheduled_for", "id"))
    alerts = list(
        Alert.objects.filter(pump=pump).select_related("clinic", "acknowledged_by").order_by("-created_at", "-id")
    )
    history = PumpHistory(
        refills=[r for r in refills if not r.is_voided],
        readings=[r for r in readings if not r.is_voided],
        programs=[p for p in programs if not p.is_voided],
    )
    projection = project_pump(pump, now, history)
    in_force = [p for p in history.programs if p.effective_at <= now]
    for alert in alerts:
        alert.pump = pump  # the page names the pump's patient on each alert: no query per alert
    unresolved = sorted((a for a in alerts if a.resolved_at is None), key=lambda a: SEVERITY_RANK.get(a.severity, 3))
    other_pumps = list(Pump.objects.filter(patient=pump.patient).exclude(pk=pump.pk).select_related("model")
                       .order_by("-implanted_on"))
    threshold = checks.discrepancy_threshold_ml(
        pump.model.reservoir_ml,
        small=pump.clinic.discrepancy_threshold_small_ml,
        large=pump.clinic.discrepancy_threshold_large_ml,
    )
    return PumpPage(
        pump=pump,
        permissions=permissions_for(user, pump.clinic_id),
        projection=projection,
        program_in_force=in_force[-1] if in_force else None,
        refills=refills,
        readings=readings,
        programs=programs,
        events=events,
        appointments=appointments,
        alerts=alerts,
        audit=_audit(pump),
        other_pumps=other_pumps,
        history=history,
        threshold_ml=threshold,
        safety=pump_safety(pump, now, open_alerts=unresolved),
    )


# ------------------------------------------------------------- dose and response


@dataclass
class DoseResponse:
    """The visit assessments of a pump and the CNS depressants of its patient
    (docs/clinical-rules.md §15), voided ones included, oldest first; ``day`` is the
    clinic's local date (what is active today)."""

    assessments: list[Assessment]
    comedications: list[CoMedication]
    day: date
    alerts_by_assessment: dict[int, list[Alert]] = field(default_factory=dict)

    @property
    def live_assessments(self) -> list[Assessment]:
        return [a for a in self.assessments if not a.is_voided]

    @property
    def last_assessment(self) -> Assessment | None:
        live = self.live_assessments
        return live[-1] if live else None

    @property
    def active_comedications(self) -> list[CoMedication]:
        return [c for c in self.comedications if c.is_active_on(self.day)]


ASSESSMENT_EPISODE = "assessment:{}"  # the episode of the alerts an assessment opens


def dose_response(pump: Pump, now: datetime, alerts: list[Alert] | None = None) -> DoseResponse:
    """Two queries: the pump's assessments and the patient's co-medications. ``alerts``
    (the pump's, when the caller has them) are matched to the assessment that opened them."""
    assessments = list(
        Assessment.objects.filter(pump=pump).select_related("assessed_by").order_by("assessed_at", "id")
    )
    comedications = list(
        CoMedication.objects.filter(patient_id=pump.patient_id).order_by("started_on", "id")
    )
    by_episode: dict[str, list[Alert]] = {}
    for alert in alerts or []:
        by_episode.setdefault(alert.episode, []).append(alert)
    return DoseResponse(
        assessments=assessments, comedications=comedications, day=pj.local_date(now, pump.clinic.tz),
        alerts_by_assessment={a.pk: by_episode.get(ASSESSMENT_EPISODE.format(a.pk), []) for a in assessments},
    )


def display_name(user) -> str:
    if user is None:
        return ""
    return person_name(user.first_name, user.last_name, user.username)


def person_name(first_name: str, last_name: str, username: str) -> str:
    """A staff member's full name, else the username."""
    full = f"{first_name} {last_name}".strip()
    return full or username


# ------------------------------------------------------------------------ patients


@dataclass
class PatientPage:
    patient: Patient
    pumps: list[Pump]
    permissions: Permissions


def patient_page(user, pk: int, now: datetime) -> PatientPage:
    patient = patient_for(user, pk)
    pumps = list(
        Pump.objects.filter(patient=patient).select_related("model", "clinic").order_by("-implanted_on", "-id")
    )
    for pump in pumps:
        pump.current_status = pump.live_status(now)
    return PatientPage(patient, pumps, permissions_for(user, patient.clinic_id))


# -------------------------------------------------------------------------- alerts


@dataclass
class AlertFilters:
    show: str = "open"  # open | all
    severity: str = ""
    kind: str = ""


#: The alerts inbox lists at most this many, the most urgent (filters narrow it).
ALERT_INBOX_LIMIT = 100


def alerts_for(user, filters: AlertFilters, limit: int | None = None) -> tuple[list[Alert], bool]:
    """Alerts of the user's clinics, the most urgent ``limit`` of them: open ones first,
    critical first, newest first, ordered by the database so that no older critical
    alert falls behind newer warnings (two queries: the ids in order, then their rows).
    Also whether more alerts match."""
    limit = limit or ALERT_INBOX_LIMIT
    alerts = scope(Alert.objects.all(), user)
    if filters.show != "all":
        alerts = alerts.filter(resolved_at__isnull=True, acknowledged_at__isnull=True)
    if filters.severity:
        alerts = alerts.filter(severity=filters.severity)
    if filters.kind:
        alerts = alerts.filter(kind=filters.kind)
    ranked = alerts.annotate(
        closed=Case(When(resolved_at__isnull=True, acknowledged_at__isnull=True, then=Value(0)), default=Value(1)),
        rank=Case(*(When(severity=s, then=Value(i)) for i, s in enumerate(SEVERITY_RANK)), default=Value(3)),
    )
    ids = list(ranked.order_by("closed", "rank", "-created_at", "-id").values_list("id", flat=True)[:limit + 1])
    # then the rows shown with what they show (joined for these only, not for every match)
    found = Alert.objects.select_related("clinic", "pump__patient", "pump__model", "acknowledged_by").in_bulk(
        ids[:limit])
    return [found[pk] for pk in ids[:limit]], len(ids) > limit


# ----------------------------------------------------------------------- worksheet


@dataclass
class Worksheet:
    page: PumpPage
    visit_at: datetime
    appointment: Appointment | None
    at_visit: pj.Projection


def worksheet(user, pk: int, now: datetime, appointment_id: int | None = None) -> Worksheet:
    """The printable refill worksheet: what to expect at the visit (the next refill
    appointment, or now)."""
    page = pump_page(user, pk, now)
    appointment = None
    if appointment_id is not None:
        appointment = next((a for a in page.appointments if a.pk == appointment_id and not a.is_voided), None)
        if appointment is None:
            raise Http404("No such appointment.")
    else:
        appointment = page.next_refill_appointment
    visit_at = appointment.scheduled_for if appointment is not None and appointment.scheduled_for > now else now
    at_visit = project_pump(page.pump, visit_at, page.history)
    return Worksheet(page, visit_at, appointment, at_visit)
