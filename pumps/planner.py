"""The refill planner: a proposed refill day for every pump that needs one, within the
clinic's capacity.

Pure Python (no Django, no clock), in the style of ``projection``: the instant ``at``,
the clinic's zone, its capacity and the pumps' due dates are parameters, and the result
is a dataclass. ``pumps.planning`` reads the database and books.

The problem
-----------
Each pump ``j`` that needs a refill has a due date ``d_j`` (docs/clinical-rules.md §6)
and a **window** of useful days ``[r_j, d_j]`` with
``r_j = max(first day, d_j - earliest_days)``: a refill before ``d_j - earliest_days``
wastes drug and shortens the interval between refills, a refill after ``d_j`` is late.
Each day ``t`` has a number of free refill slots ``c_t``: the clinic's slots for that
weekday (0 on a day the clinic is closed: §6.2's open weekdays and closures) less the
refill appointments already booked that day. Every pump takes one slot.

Assigning pumps to days is a bipartite matching between pumps and slots in which each
pump may use the slots of an interval of days. Two things are wanted:

1. **Book as many pumps in time as possible, the most urgent first.** Among the sets of
   pumps that can all be placed in their windows, the planner keeps the one chosen
   greedily by due date (earliest first, then by key): a pump is kept when it and the
   pumps kept before it can still all be placed. The sets of pumps that can be placed
   together are the independent sets of a matroid (a transversal matroid), so this
   greedy choice has the most pumps possible and is "Gale optimal": for every date
   ``D``, no other placeable set has more pumps due on or before ``D``. Whether a set
   can be placed is decided by the forward earliest-deadline-first sweep (day by day,
   give the day's slots to the waiting pumps with the earliest due dates; fail when a
   pump's due date passes unplaced), which is exact for unit jobs with release days,
   deadlines and per-day capacities (the greedy matching of points to intervals by
   earliest right end). The pumps come in due-date order and a window's start grows
   with its due date, so that sweep serves them first come, first served, and it is
   grown one pump at a time (``_EarliestFirst``): linear in the days, not quadratic in
   the pumps.

2. **Place the kept pumps as late as possible** (the longest interval between refills).
   The mirror image of the sweep above does it: walk the days from the last to the
   first, and give each day's slots to the waiting pumps (those whose due date is on
   or after the day) whose window *starts* latest, i.e. those that would run out of
   days first when walking backwards. By the same exchange argument (time reversed)
   this places every pump of a placeable set, and because it fills each day from the
   end greedily, for every day ``t`` the number of pumps placed on ``t`` or later is the
   largest any placement of the same pumps achieves.

Two simpler rules are wrong. Taking the pumps by due date, each at its latest free day,
lets an early pump take the day two later pumps need (one slot a day, windows of two
days: A due on day 1, B and C on day 2; A on day 1 leaves B or C without a day, while
A on day 0, B on 1 and C on 2 books all three). Taking them latest due date first, each
at its latest free day, books them all when they fit (every window has the same length,
clipped at the first day, so the windows are ordered alike), but when they do not fit,
the pumps left out are the most urgent ones. ``tests/test_planner.py`` checks both
properties against a brute force over every assignment of small cases, with these two
traps among the examples.

Shortfalls
----------
A pump that is not placed is a shortfall, with the reason:

- ``overdue``: its due date is before the first day the plan may use (the due date has
  passed, or it is today and today's visits have begun: see "first day");
- ``closures``: no day of its window has any refill slot (closed days, or weekdays whose
  capacity is 0);
- ``capacity``: its window has slots but the booked appointments and more urgent pumps
  take them all.

Each shortfall gets a **suggested day**, never booked by the "book the day" or "book all"
actions: an overdue pump the first free day; any other the latest free day before its
window (early is the safe direction), else the first free day after its due date; none
when no day of the horizon has a free slot. Suggestions are given in due-date order and
take their slots, so that booking every suggestion one by one never exceeds capacity.

First day and horizon
---------------------
The plan covers the clinic's local dates from the **first day** to ``today + horizon``.
The first day is today while ``at`` is before the clinic's first refill visit time of
the day, else tomorrow: a visit proposed for a morning that is over would be booked in
the past. Pumps due after the horizon are not planned.

Moves
-----
Staff may move a pump to another day (``moves``: key -> day). A move is honoured first,
before the greedy choice, when the day is in the plan's range, open, and has a free slot
left (moves are taken in due-date order); otherwise it is refused (``refused_moves``)
and the pump is planned as usual. A pump moved to a day after its due date is a shortfall
(reason ``moved``, or ``overdue`` when it already was) whose suggested day is that day.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo

from .projection import local_date

DAY = timedelta(days=1)

DEFAULT_SLOTS_PER_DAY = 8
DEFAULT_EARLIEST_DAYS = 14
DEFAULT_HORIZON_DAYS = 56  # eight weeks
MAX_HORIZON_DAYS = 366
DEFAULT_FIRST_VISIT = time(9, 0)

REASON_OVERDUE = "overdue"
REASON_CLOSURES = "closures"
REASON_CAPACITY = "capacity"
REASON_MOVED = "moved"
REASONS = {
    REASON_OVERDUE: "the due date has passed",
    REASON_CLOSURES: "no refill slot on any day of its window (closures, or weekdays without slots)",
    REASON_CAPACITY: "every slot of its window is taken",
    REASON_MOVED: "moved by staff to a day after its due date",
}


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Capacity:
    """A clinic's refill capacity: ``slots_per_day`` on every open day, unless
    ``slots_by_weekday`` (Monday first, 7 entries) gives a number for that weekday; 0 on
    a day that is not an open weekday or is a closure (§6.2)."""

    slots_per_day: int = DEFAULT_SLOTS_PER_DAY
    slots_by_weekday: tuple[int | None, ...] = (None,) * 7
    open_weekdays: frozenset[int] = frozenset(range(5))
    closures: frozenset[date] = frozenset()
    earliest_days: int = DEFAULT_EARLIEST_DAYS
    first_visit: time = DEFAULT_FIRST_VISIT

    def slots(self, day: date) -> int:
        if day.weekday() not in self.open_weekdays or day in self.closures:
            return 0
        by_day = self.slots_by_weekday[day.weekday()] if len(self.slots_by_weekday) == 7 else None
        return max(0, self.slots_per_day if by_day is None else by_day)


@dataclass(frozen=True)
class Candidate:
    """A pump that needs a refill booked: ``key`` (the pump's id) and its due date."""

    key: int
    due_on: date


# -------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Proposal:
    key: int
    due_on: date
    day: date
    window_start: date
    moved: bool = False


@dataclass(frozen=True)
class Shortfall:
    key: int
    due_on: date
    reason: str
    suggested: date | None  # a day outside its window (or none), see the module docstring
    moved: bool = False

    @property
    def reason_text(self) -> str:
        return REASONS[self.reason]


@dataclass(frozen=True)
class DayLoad:
    day: date
    capacity: int  # the day's refill slots (0: closed)
    booked: int  # refill appointments already booked that day
    proposed: int  # proposals of this plan
    suggested: int  # shortfall suggestions of this plan

    @property
    def load(self) -> int:
        return self.booked + self.proposed

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.booked - self.proposed - self.suggested)

    @property
    def over(self) -> bool:
        return self.booked > self.capacity


@dataclass(frozen=True)
class Plan:
    today: date
    first_day: date
    last_day: date
    proposals: tuple[Proposal, ...]
    shortfalls: tuple[Shortfall, ...]
    days: tuple[DayLoad, ...]
    refused_moves: tuple[int, ...] = ()
    _by_day: dict = field(default_factory=dict, compare=False, repr=False)

    def day(self, day: date) -> DayLoad | None:
        if not self._by_day:
            self._by_day.update({d.day: d for d in self.days})
        return self._by_day.get(day)

    def proposals_on(self, day: date) -> list[Proposal]:
        return [p for p in self.proposals if p.day == day]

    def proposal_for(self, key: int) -> Proposal | None:
        return next((p for p in self.proposals if p.key == key), None)

    def shortfall_for(self, key: int) -> Shortfall | None:
        return next((s for s in self.shortfalls if s.key == key), None)


# ------------------------------------------------------------------------ the plan


def first_day(at: datetime, tz: tzinfo, first_visit: time) -> date:
    """Today while ``at`` is before the day's first refill visit (local time), else tomorrow."""
    local = at.astimezone(tz)
    today = local.date()
    return today if local.time().replace(tzinfo=None) < first_visit else today + DAY


def _days(start: date, end: date) -> list[date]:
    return [start + DAY * i for i in range((end - start).days + 1)] if end >= start else []


def placeable(jobs: Iterable[tuple[date, date]], free: Mapping[date, int], days: Sequence[date]) -> bool:
    """Can every job (window start, due date) get a slot on a day of its window?
    The forward earliest-deadline-first sweep (exact for unit jobs)."""
    pending = sorted(jobs)
    waiting: list[date] = []
    i = 0
    for day in days:
        while i < len(pending) and pending[i][0] <= day:
            heapq.heappush(waiting, pending[i][1])
            i += 1
        if waiting and waiting[0] < day:
            return False
        for _ in range(min(free.get(day, 0), len(waiting))):
            heapq.heappop(waiting)
    return i == len(pending) and not waiting


def _place_latest(
    jobs: Sequence[tuple[Candidate, date]], free: dict[date, int], days: Sequence[date]
) -> dict[int, date]:
    """The backward sweep: each day, from the last, to the waiting pumps whose window
    starts latest (then the latest due, then the highest key, for a stable result)."""
    by_due = sorted(jobs, key=lambda job: job[0].due_on, reverse=True)
    waiting: list[tuple] = []
    placed: dict[int, date] = {}
    i = 0
    for day in reversed(days):
        while i < len(by_due) and by_due[i][0].due_on >= day:
            cand, start = by_due[i]
            heapq.heappush(waiting, (-start.toordinal(), -cand.due_on.toordinal(), -cand.key, cand))
            i += 1
        # Its window is behind us: cannot happen for a placeable set.
        while waiting and -waiting[0][0] > day.toordinal():
            heapq.heappop(waiting)
        for _ in range(min(free.get(day, 0), len(waiting))):
            cand = heapq.heappop(waiting)[3]
            placed[cand.key] = day
            free[day] -= 1
    return placed


@dataclass
class _Calendar:
    """The plan's days, from the first day to the last, and their refill slots:
    ``nominal`` the clinic's, ``free`` those left, taken phase by phase (moves, then
    placements, then suggestions)."""

    start: date
    end: date
    days: list[date]
    nominal: dict[date, int]
    free: dict[date, int]
    earliest_days: int

    def window_start(self, cand: Candidate) -> date:
        return max(self.start, cand.due_on - DAY * self.earliest_days)


def plan(
    *,
    at: datetime,
    tz: tzinfo,
    pumps: Iterable[Candidate],
    capacity: Capacity = Capacity(),
    booked: Mapping[date, int] | None = None,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    moves: Mapping[int, date] | None = None,
) -> Plan:
    """The plan as of ``at``: see the module docstring. ``booked`` counts the refill
    appointments already booked per local date (any pump of the clinic); ``pumps`` are
    the pumps that need one (no refill booked on or before their due date).

    The phases, in order, each taking the slots it uses: the moves; 1. which pumps
    (greedy by due date); 2. where (as late as possible); the shortfalls' suggestions."""
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    booked = dict(booked or {})
    today = local_date(at, tz)
    cal = _calendar(first_day(at, tz, capacity.first_visit), today + DAY * max(0, horizon_days), capacity, booked)
    candidates = sorted(
        {c.key: c for c in pumps if c.due_on <= cal.end}.values(), key=lambda c: (c.due_on, c.key)
    )
    moved, refused = _take_moves(candidates, dict(moves or {}), cal)
    kept, short = _choose(candidates, moved, cal)
    proposals = _place(kept, short, cal)
    moved_proposals, shortfalls = _moved_outcomes(candidates, moved, cal)
    proposals += moved_proposals
    suggested, suggested_on = _suggest_shortfalls(short, cal)
    shortfalls += suggested
    order = {REASON_OVERDUE: 0, REASON_CAPACITY: 1, REASON_CLOSURES: 2, REASON_MOVED: 3}
    return Plan(
        today=today,
        first_day=cal.start,
        last_day=cal.end,
        proposals=tuple(sorted(proposals, key=lambda p: (p.day, p.due_on, p.key))),
        shortfalls=tuple(sorted(shortfalls, key=lambda s: (order[s.reason], s.due_on, s.key))),
        days=_day_loads(cal, booked, proposals, shortfalls, suggested_on),
        refused_moves=tuple(refused),
    )


def _calendar(start: date, end: date, capacity: Capacity, booked: Mapping[date, int]) -> _Calendar:
    days = _days(start, end)
    nominal = {d: capacity.slots(d) for d in days}
    free = {d: max(0, nominal[d] - booked.get(d, 0)) for d in days}
    return _Calendar(start, end, days, nominal, free, capacity.earliest_days)


def _take_moves(
    candidates: Sequence[Candidate], moves: Mapping[int, date], cal: _Calendar
) -> tuple[dict[int, date], list[int]]:
    """Moves first, in due-date order: a move to a day in range with a free slot takes
    it; any other is refused, as is a move of a pump that is not a candidate."""
    moved: dict[int, date] = {}
    refused: list[int] = []
    for cand in candidates:
        day = moves.get(cand.key)
        if day is None:
            continue
        if cal.start <= day <= cal.end and cal.free.get(day, 0) > 0:
            moved[cand.key] = day
            cal.free[day] -= 1
        else:
            refused.append(cand.key)
    refused.extend(sorted(k for k in moves if k not in {c.key for c in candidates}))
    return moved, refused


class _EarliestFirst:
    """The forward earliest-deadline-first schedule of the kept pumps (``placeable``'s),
    grown one pump at a time. Pumps come in due-date order, and a window's start is a
    non-decreasing function of its due date (``_Calendar.window_start``), so that sweep
    serves them first come, first served: each kept pump takes the first free slot on
    or after its window's start and the day of the pump kept before it. Whether the kept
    set plus one more pump is placeable is then whether that slot is on or before its
    due date: the same answer as ``placeable`` on the whole set, in time linear in the
    days instead of the pumps (a clinic of 25,000 pumps is planned in seconds, not hours)."""

    def __init__(self, cal: _Calendar) -> None:
        self.days, self.free = cal.days, cal.free
        self.position = {d: i for i, d in enumerate(cal.days)}
        self.at = 0  # the day of the last kept pump (an index of ``days``)
        self.used = 0  # the slots of that day taken by kept pumps

    def keep(self, lo: date, due: date) -> bool:
        """Keep a pump of window [``lo``, ``due``] if a slot is left for it (and take it)."""
        i, used = self.at, self.used
        if self.position[lo] > i:
            i, used = self.position[lo], 0
        while i < len(self.days) and self.days[i] <= due:
            if self.free.get(self.days[i], 0) > used:
                self.at, self.used = i, used + 1
                return True
            i, used = i + 1, 0
        return False


def _choose(
    candidates: Sequence[Candidate], moved: Mapping[int, date], cal: _Calendar
) -> tuple[list[tuple[Candidate, date]], list[tuple[Candidate, str]]]:
    """1. Which pumps: greedy by due date, kept (with its window start) while the kept set
    stays placeable (``_EarliestFirst``); the others are short, with the reason."""
    kept: list[tuple[Candidate, date]] = []
    short: list[tuple[Candidate, str]] = []
    schedule = _EarliestFirst(cal)
    for cand in candidates:
        if cand.key in moved:
            continue
        lo = cal.window_start(cand)
        if cand.due_on < cal.start:
            short.append((cand, REASON_OVERDUE))
        elif not any(cal.nominal.get(d, 0) > 0 for d in _days(lo, cand.due_on)):
            short.append((cand, REASON_CLOSURES))
        elif schedule.keep(lo, cand.due_on):
            kept.append((cand, lo))
        else:
            short.append((cand, REASON_CAPACITY))
    return kept, short


def _place(
    kept: Sequence[tuple[Candidate, date]], short: list[tuple[Candidate, str]], cal: _Calendar
) -> list[Proposal]:
    """2. Where: as late as possible. A kept pump left unplaced joins ``short``."""
    placed = _place_latest(kept, cal.free, cal.days)
    for cand, _lo in kept:
        if cand.key not in placed:  # defensive: a placeable set is always placed
            short.append((cand, REASON_CAPACITY))
    return [Proposal(c.key, c.due_on, placed[c.key], lo) for c, lo in kept if c.key in placed]


def _moved_outcomes(
    candidates: Sequence[Candidate], moved: Mapping[int, date], cal: _Calendar
) -> tuple[list[Proposal], list[Shortfall]]:
    """A moved pump is a proposal on its day, or a shortfall suggesting that day when it
    is after its due date."""
    proposals: list[Proposal] = []
    shortfalls: list[Shortfall] = []
    for cand in candidates:
        day = moved.get(cand.key)
        if day is None:
            continue
        if day <= cand.due_on:
            proposals.append(Proposal(cand.key, cand.due_on, day, cal.window_start(cand), moved=True))
        else:
            reason = REASON_OVERDUE if cand.due_on < cal.start else REASON_MOVED
            shortfalls.append(Shortfall(cand.key, cand.due_on, reason, day, moved=True))
    return proposals, shortfalls


def _suggest_shortfalls(
    short: Sequence[tuple[Candidate, str]], cal: _Calendar
) -> tuple[list[Shortfall], dict[date, int]]:
    """Suggestions for the pumps left short, in due-date order, taking their slots;
    with the number of suggestions per day."""
    shortfalls: list[Shortfall] = []
    suggested_on: dict[date, int] = {}
    for cand, reason in sorted(short, key=lambda item: (item[0].due_on, item[0].key)):
        day = _suggest(cand, reason, cal.window_start(cand), cal.free, cal.days)
        if day is not None:
            cal.free[day] -= 1
            suggested_on[day] = suggested_on.get(day, 0) + 1
        shortfalls.append(Shortfall(cand.key, cand.due_on, reason, day))
    return shortfalls, suggested_on


def _day_loads(
    cal: _Calendar,
    booked: Mapping[date, int],
    proposals: Sequence[Proposal],
    shortfalls: Sequence[Shortfall],
    suggested_on: Mapping[date, int],
) -> tuple[DayLoad, ...]:
    """Each day's load: its slots, the booked appointments, this plan's proposals and
    suggestions (a moved pump's shortfall day counts as a suggestion)."""
    proposed_on: dict[date, int] = {}
    for p in proposals:
        proposed_on[p.day] = proposed_on.get(p.day, 0) + 1
    suggested = dict(suggested_on)
    for s in shortfalls:
        if s.moved and s.suggested is not None:
            suggested[s.suggested] = suggested.get(s.suggested, 0) + 1
    return tuple(
        DayLoad(d, cal.nominal[d], booked.get(d, 0), proposed_on.get(d, 0), suggested.get(d, 0)) for d in cal.days
    )

def _suggest(cand: Candidate, reason: str, lo: date, free: Mapping[date, int], days: Sequence[date]) -> date | None:
    open_days = [d for d in days if free.get(d, 0) > 0]
    if reason == REASON_OVERDUE:
        return open_days[0] if open_days else None
    early = [d for d in open_days if d < lo]
    if early:
        return early[-1]
    late = [d for d in open_days if d > cand.due_on]
    return late[0] if late else None
