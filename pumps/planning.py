"""The refill plan of a clinic: what the planner (``pumps.planner``, pure) needs from the
database, and the booking of its proposals.

Reads: the implanted, active pumps of the clinic due within the horizon (or overdue)
that have no refill booked in time — no live, scheduled refill appointment from the
start of the clinic's today to the end of the pump's due date (a visit booked earlier
today and not yet marked done still counts) — and the refill appointments already
booked per local day, which take their day's slots whatever the pump.

Booking: one transaction per action (one pump, a day's proposals, or all of them). The
clinic row is locked first, so that two booking actions of a clinic are serialized and
capacity holds between them; each pump row is locked before it is checked, so that a
refill booked meanwhile from the pump's page (which locks the pump) is seen. A pump
booked meanwhile, no longer due in that window, or whose day is now full is skipped and
named; the others are booked through ``services.schedule_appointment`` (its rules, audit
trail and alert evaluation) at the day's next slot time: the clinic's first refill visit
time, then one every 30 minutes (the length of a refill in ``pumps.calendar``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from django.db import transaction
from django.utils import timezone

from clinic.models import Clinic
from clinic.permissions import Action

from . import planner as pl
from . import projection as pj
from . import services
from .calendar import DURATION
from .errors import ServiceValidationError
from .models import Appointment, Pump

SLOT = DURATION[Appointment.Kind.REFILL]
BOOKING_NOTE = "Booked from the refill plan."
PLANNED_STATUSES = (pj.STATUS_EMPTY, pj.STATUS_ALARM, pj.STATUS_OVERDUE, pj.STATUS_DUE_SOON, pj.STATUS_OK)



def capacity_of(clinic: Clinic, closures: frozenset | None = None) -> pl.Capacity:
    """The clinic's refill capacity for the planner: slots per day and weekday, the open
    days and closures the due date uses, the earliest useful refill, the first visit."""
    by_day = clinic.refill_slots_by_weekday if isinstance(clinic.refill_slots_by_weekday, list) else []
    return pl.Capacity(
        slots_per_day=clinic.refill_slots_per_day,
        slots_by_weekday=tuple(by_day) if len(by_day) == 7 else (None,) * 7,
        open_weekdays=frozenset(clinic.open_weekdays),
        closures=clinic.closure_dates() if closures is None else closures,
        earliest_days=clinic.refill_earliest_days,
        first_visit=clinic.refill_first_visit,
    )

def horizon_or_default(value, default: int = pl.DEFAULT_HORIZON_DAYS) -> int:
    """A horizon in days from a query string or a body: 1 to 366, else the default."""
    try:
        days = int(value)
    except (TypeError, ValueError):
        return default
    return days if 1 <= days <= pl.MAX_HORIZON_DAYS else default


def _start_of(day: date, clinic: Clinic) -> datetime:
    return pj.start_of_local_day(day, clinic.tz)


def refill_appointments(clinic: Clinic, first: date, last: date):
    """Live, scheduled refill appointments of the clinic on local days ``first`` to ``last``."""
    return Appointment.objects.live().filter(
        pump__clinic=clinic, kind=Appointment.Kind.REFILL, status=Appointment.Status.SCHEDULED,
        scheduled_for__gte=_start_of(first, clinic), scheduled_for__lt=_start_of(last + pl.DAY, clinic),
    )


def booked_per_day(clinic: Clinic, first: date, last: date) -> Counter:
    tz = clinic.tz
    return Counter(pj.local_date(moment, tz) for moment in
                   refill_appointments(clinic, first, last).values_list("scheduled_for", flat=True))


@dataclass
class Row:
    """One pump of the plan with what the page and the API show of it."""

    pump: Pump
    due_on: date
    day: date | None  # the proposed day, or a shortfall's suggested day
    proposal: pl.Proposal | None = None
    shortfall: pl.Shortfall | None = None
    booked_late: datetime | None = None  # a refill booked after the due date
    choices: list = field(default_factory=list)  # days it may be moved to (DayLoad)

    @property
    def late(self) -> bool:
        return self.shortfall is not None


@dataclass
class ClinicPlan:
    clinic: Clinic
    at: datetime
    horizon_days: int
    plan: pl.Plan
    rows: dict[int, Row]
    moves: dict[int, date] = field(default_factory=dict)

    @property
    def proposals(self) -> list[Row]:
        return [self.rows[p.key] for p in self.plan.proposals]

    @property
    def shortfalls(self) -> list[Row]:
        return [self.rows[s.key] for s in self.plan.shortfalls]

    def by_day(self) -> list[tuple[pl.DayLoad, list[Row]]]:
        """Every day with a proposal or a booking, in order, with its proposals."""
        out = []
        for load in self.plan.days:
            rows = [self.rows[p.key] for p in self.plan.proposals_on(load.day)]
            if rows or load.booked:
                out.append((load, rows))
        return out

    def open_days(self) -> list[pl.DayLoad]:
        return [d for d in self.plan.days if d.capacity > 0]

    def choices_for(self, row: Row) -> list[pl.DayLoad]:
        """Days a pump may be moved to: for a proposal the open days of its window with a
        free slot (or its own day); for a shortfall any open day with a free slot."""
        lo = row.proposal.window_start if row.proposal else self.plan.first_day
        hi = row.due_on if row.proposal else self.plan.last_day
        return [d for d in self.plan.days if lo <= d.day <= hi and d.capacity > 0 and (d.free > 0 or d.day == row.day)]


def clinic_plan(clinic: Clinic, *, at: datetime | None = None, horizon_days: int = pl.DEFAULT_HORIZON_DAYS,
                moves: Mapping[int, date] | None = None) -> ClinicPlan:
    """The clinic's refill plan as of ``at``: a fixed number of queries (the closures,
    the pumps, their bookings, the bookings per day)."""
    at = at or timezone.now()
    tz = clinic.tz
    capacity = capacity_of(clinic)
    today = pj.local_date(at, tz)
    last = today + pl.DAY * horizon_days
    pumps = list(
        Pump.objects.filter(clinic=clinic, explanted_on__isnull=True, status__in=PLANNED_STATUSES,
                            refill_due_on__isnull=False, refill_due_on__lte=last)
        .select_related("patient", "model", "clinic")
        .order_by("refill_due_on", "id")
    )
    ahead: dict[int, list[datetime]] = {}
    for pump_id, moment in Appointment.objects.live().filter(
        pump__in=[p.pk for p in pumps], kind=Appointment.Kind.REFILL, status=Appointment.Status.SCHEDULED,
        scheduled_for__gte=_start_of(today, clinic),
    ).order_by("scheduled_for").values_list("pump_id", "scheduled_for"):
        ahead.setdefault(pump_id, []).append(moment)
    needing = []
    late: dict[int, datetime] = {}
    for pump in pumps:
        end_of_due = _start_of(pump.refill_due_on + pl.DAY, clinic)
        booked = ahead.get(pump.pk, [])
        if any(moment < end_of_due for moment in booked):
            continue
        if booked:
            late[pump.pk] = booked[0]
        needing.append(pump)
    first = pl.first_day(at, tz, capacity.first_visit)
    plan = pl.plan(
        at=at, tz=tz, capacity=capacity, booked=booked_per_day(clinic, first, last), horizon_days=horizon_days,
        pumps=[pl.Candidate(p.pk, p.refill_due_on) for p in needing], moves=moves,
    )
    by_id = {p.pk: p for p in needing}
    rows = {}
    for proposal in plan.proposals:
        rows[proposal.key] = Row(by_id[proposal.key], proposal.due_on, proposal.day, proposal=proposal,
                                 booked_late=late.get(proposal.key))
    for shortfall in plan.shortfalls:
        rows[shortfall.key] = Row(by_id[shortfall.key], shortfall.due_on, shortfall.suggested, shortfall=shortfall,
                                  booked_late=late.get(shortfall.key))
    result = ClinicPlan(clinic, at, horizon_days, plan, rows, dict(moves or {}))
    for row in rows.values():
        row.choices = result.choices_for(row)
    return result


# --------------------------------------------------------------------------- booking


def slot_time(clinic: Clinic, day: date, index: int) -> datetime:
    """The ``index``-th refill visit of a local day: from the first visit time, one every
    30 minutes, on the clinic's wall clock."""
    start = datetime.combine(day, clinic.refill_first_visit, tzinfo=clinic.tz)
    return (start.replace(tzinfo=None) + SLOT * index).replace(tzinfo=clinic.tz)


@dataclass
class Booked:
    pump: Pump
    appointment: Appointment
    day: date


@dataclass
class Skipped:
    pump: Pump | None
    pump_id: int
    reason: str
    code: str

    def __str__(self) -> str:
        who = f"MRN {self.pump.patient.mrn} ({self.pump.patient.initials})" if self.pump else f"pump {self.pump_id}"
        return f"{who}: {self.reason}"


@dataclass
class BookingResult:
    booked: list[Booked] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


SKIP_BOOKED = "booked_meanwhile"
SKIP_NOT_DUE = "not_due"
SKIP_DAY = "day_unavailable"
SKIP_NOT_FOUND = "not_found"
SKIP_REFUSED = "refused"
SKIP_NOT_PLANNED = "not_planned"


def book(clinic: Clinic, items: Sequence[tuple[int, date]], *, actor: services.Actor, at: datetime | None = None,
         late_allowed: Iterable[int] = (), assigned_to=None) -> BookingResult:
    """Book a refill for each (pump id, local day), in one transaction, assigned to
    ``assigned_to`` (a user or a username: the service's rules) or to nobody. A day
    outside the pump's window is refused unless the pump is in ``late_allowed`` (a
    shortfall booked on its suggested or chosen day). Raises ``Forbidden`` when the actor
    may not record in the clinic; every other problem skips the pump with its reason."""
    at = at or timezone.now()
    late_allowed = set(late_allowed)
    result = BookingResult()
    with transaction.atomic():
        services.authorize(actor, clinic, Action.RECORD)
        clinic = Clinic.objects.select_for_update().get(pk=clinic.pk)
        capacity = capacity_of(clinic)
        tz = clinic.tz
        today = pj.local_date(at, tz)
        first = pl.first_day(at, tz, capacity.first_visit)
        days = [day for _, day in items]
        counts = booked_per_day(clinic, min(days), max(days)) if days else Counter()
        seen: set[int] = set()
        for pump_id, day in sorted(items, key=lambda item: (item[1], item[0])):
            if pump_id in seen:
                continue
            seen.add(pump_id)
            pump = (Pump.objects.select_for_update(of=("self",)).select_related("patient", "model", "clinic")
                    .filter(pk=pump_id, clinic=clinic).first())
            if pump is None:
                result.skipped.append(Skipped(None, pump_id, "no such pump in this clinic", SKIP_NOT_FOUND))
                continue
            due = pump.refill_due_on
            if pump.explanted_on is not None or pump.status not in PLANNED_STATUSES or due is None:
                result.skipped.append(Skipped(pump, pump_id, "no refill to plan (explanted, inactive or incomplete)",
                                              SKIP_NOT_DUE))
                continue
            # in its window: a refill booked on or before the due date; late: any refill ahead
            ahead = refill_appointments(clinic, today, due) if pump_id not in late_allowed else (
                Appointment.objects.live().filter(kind=Appointment.Kind.REFILL, status=Appointment.Status.SCHEDULED,
                                                  scheduled_for__gte=_start_of(today, clinic)))
            existing = ahead.filter(pump=pump).order_by("scheduled_for").first()
            if existing is not None:
                when = pj.local_instant(existing.scheduled_for, tz)
                result.skipped.append(Skipped(pump, pump_id, f"booked meanwhile for {when}", SKIP_BOOKED))
                continue
            in_window = due - pl.DAY * capacity.earliest_days <= day <= due
            if not in_window and pump_id not in late_allowed:
                result.skipped.append(Skipped(
                    pump, pump_id, f"{day.isoformat()} is no longer in its window (due on {due.isoformat()})",
                    SKIP_NOT_DUE,
                ))
                continue
            slots = capacity.slots(day)
            if day < first or slots == 0 or counts[day] >= slots:
                why = ("is past" if day < first else "is closed" if slots == 0 else "is full")
                result.skipped.append(Skipped(pump, pump_id, f"{day.isoformat()} {why}", SKIP_DAY))
                continue
            try:
                appointment = services.schedule_appointment(
                    pump=pump, scheduled_for=slot_time(clinic, day, counts[day]), actor=actor,
                    kind=Appointment.Kind.REFILL, notes=BOOKING_NOTE, now=at, assigned_to=assigned_to,
                )
            except ServiceValidationError as exc:
                problems = "; ".join(m for ms in exc.message_dict.values() for m in ms)
                result.skipped.append(Skipped(pump, pump_id, problems, SKIP_REFUSED))
                continue
            counts[day] += 1
            result.booked.append(Booked(pump, appointment, day))
    return result


def book_planned(clinic: Clinic, pump_ids: Iterable[int], *, actor: services.Actor, at: datetime | None = None,
                 horizon_days: int = pl.DEFAULT_HORIZON_DAYS, assigned_to=None) -> BookingResult:
    """Book the named pumps on the days the plan proposes now (the API): one transaction;
    a pump the plan does not propose (booked already, a shortfall, not due within the
    horizon) is skipped with the reason."""
    at = at or timezone.now()
    wanted = list(dict.fromkeys(int(pk) for pk in pump_ids))
    with transaction.atomic():
        services.authorize(actor, clinic, Action.RECORD)
        Clinic.objects.select_for_update().filter(pk=clinic.pk).first()
        current = clinic_plan(clinic, at=at, horizon_days=horizon_days)
        items, skipped = [], []
        for pump_id in wanted:
            row = current.rows.get(pump_id)
            if row is not None and row.proposal is not None:
                items.append((pump_id, row.proposal.day))
                continue
            pump = (Pump.objects.select_related("patient").filter(pk=pump_id, clinic=clinic).first())
            if pump is None:
                skipped.append(Skipped(None, pump_id, "no such pump in this clinic", SKIP_NOT_FOUND))
            elif row is not None:
                reason = row.shortfall.reason_text if row.shortfall else "not planned"
                skipped.append(Skipped(pump, pump_id, f"no day on or before its due date: {reason}", SKIP_NOT_PLANNED))
            else:
                skipped.append(Skipped(pump, pump_id, "not in the plan (a refill is booked in time, or it is not "
                                                      "due within the horizon)", SKIP_NOT_PLANNED))
        result = book(clinic, items, actor=actor, at=at, assigned_to=assigned_to)
        result.skipped = skipped + result.skipped
    return result


def parse_item(value: str) -> tuple[int, date] | None:
    """``"<pump id>:<YYYY-MM-DD>"`` from a form, or None."""
    pump_id, _, day = (value or "").partition(":")
    try:
        number = int(pump_id)
        return (number, date.fromisoformat(day)) if 0 < number < 2**31 else None
    except ValueError:
        return None


def parse_moves(values: Iterable[str]) -> dict[int, date]:
    moves = {}
    for value in values:
        item = parse_item(value)
        if item is not None:
            moves[item[0]] = item[1]
    return moves

