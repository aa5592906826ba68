"""The refill planner (pumps/planner.py): pure, no Django, no database.

Examples first, then hypothesis properties against a brute force on small clinics: no
proposal outside its window, before the first day or on a closed day; capacity never
exceeded; as many pumps booked in time as any assignment books (and the most urgent
first); each kept pump as late as any placement of the same pumps allows.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pumps import planner as pl
from pumps.planner import Candidate, Capacity

DAY = timedelta(days=1)
MONDAY = date(2026, 3, 2)
AT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)  # before the first visit (09:00): today counts
EVERY_DAY = frozenset(range(7))


def cap(**kw) -> Capacity:
    kw.setdefault("open_weekdays", EVERY_DAY)
    return Capacity(**kw)


# ------------------------------------------------------------------------ examples


def test_as_late_as_possible_within_the_window():
    result = pl.plan(at=AT, tz=UTC, pumps=[Candidate(1, MONDAY + 10 * DAY)], capacity=cap(), horizon_days=20)
    (p,) = result.proposals
    assert p.day == MONDAY + 10 * DAY and p.window_start == MONDAY
    assert result.shortfalls == ()


def test_due_date_on_a_closed_day_is_not_used_and_weekends_are_skipped():
    # due on Saturday (the projection moves due dates to open days, but a closure added
    # later is also handled): the latest open day before it
    result = pl.plan(at=AT, tz=UTC, pumps=[Candidate(1, date(2026, 3, 7))], capacity=Capacity())
    assert result.proposals[0].day == date(2026, 3, 6)


def test_closure_and_existing_bookings_count():
    due = MONDAY + 3 * DAY
    c = cap(slots_per_day=1, closures=frozenset({due}))
    result = pl.plan(at=AT, tz=UTC, pumps=[Candidate(1, due)], capacity=c, booked={due - DAY: 1}, horizon_days=10)
    assert result.proposals[0].day == due - 2 * DAY
    assert result.day(due).capacity == 0 and result.day(due - DAY).load == 1


def test_an_early_pump_does_not_take_the_day_two_later_pumps_need():
    # One slot a day, windows of two days: A due day 1, B and C due day 2. Each pump in
    # due order at its latest free day would put A on day 1 and leave B or C without a
    # day; the plan puts A on day 0.
    c = cap(slots_per_day=1, earliest_days=1)
    pumps = [Candidate(1, MONDAY + DAY), Candidate(2, MONDAY + 2 * DAY), Candidate(3, MONDAY + 2 * DAY)]
    result = pl.plan(at=AT, tz=UTC, pumps=pumps, capacity=c, horizon_days=4)
    assert {p.key: p.day for p in result.proposals} == {1: MONDAY, 2: MONDAY + DAY, 3: MONDAY + 2 * DAY}
    assert result.shortfalls == ()


def test_when_not_all_fit_the_most_urgent_are_kept():
    # Latest due first, each at its latest free day, would keep the two pumps due on day
    # 2 and leave out the one due on day 1.
    c = cap(slots_per_day=1, earliest_days=1)
    pumps = [Candidate(1, MONDAY + DAY), Candidate(2, MONDAY + 2 * DAY), Candidate(3, MONDAY + 2 * DAY)]
    result = pl.plan(at=AT, tz=UTC, pumps=pumps, capacity=c, booked={MONDAY: 1}, horizon_days=4)
    assert {p.key: p.day for p in result.proposals} == {1: MONDAY + DAY, 2: MONDAY + 2 * DAY}
    assert [(s.key, s.reason, s.suggested) for s in result.shortfalls] == [(3, pl.REASON_CAPACITY, MONDAY + 3 * DAY)]


def test_overdue_is_a_shortfall_with_the_first_free_day_suggested():
    result = pl.plan(at=AT, tz=UTC, pumps=[Candidate(1, MONDAY - DAY)], capacity=cap(), horizon_days=5)
    (s,) = result.shortfalls
    assert (s.reason, s.suggested) == (pl.REASON_OVERDUE, MONDAY)
    assert result.proposals == ()


def test_capacity_shortfall_prefers_an_earlier_day_and_the_most_urgent_are_kept():
    due = MONDAY + 5 * DAY
    c = cap(slots_per_day=1, earliest_days=0)
    pumps = [Candidate(3, due), Candidate(1, due - DAY), Candidate(2, due)]
    result = pl.plan(at=AT, tz=UTC, pumps=pumps, capacity=c, horizon_days=8)
    assert {p.key: p.day for p in result.proposals} == {1: due - DAY, 2: due}
    (s,) = result.shortfalls
    assert (s.key, s.reason, s.suggested) == (3, pl.REASON_CAPACITY, due - 2 * DAY)


def test_closures_reason_and_no_suggestion_when_everything_is_full():
    due = MONDAY + 2 * DAY
    c = cap(slots_per_day=1, earliest_days=1, closures=frozenset({due, due - DAY}))
    result = pl.plan(at=AT, tz=UTC, pumps=[Candidate(1, due)], capacity=c, booked={MONDAY: 1}, horizon_days=2)
    (s,) = result.shortfalls
    assert (s.reason, s.suggested) == (pl.REASON_CLOSURES, None)


def test_after_the_first_visit_today_is_not_offered():
    late = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    result = pl.plan(at=late, tz=UTC, pumps=[Candidate(1, MONDAY)], capacity=cap(), horizon_days=3)
    assert result.first_day == MONDAY + DAY
    assert result.shortfalls[0].reason == pl.REASON_OVERDUE


def test_today_is_the_clinics_local_date():
    chicago = ZoneInfo("America/Chicago")
    at = datetime(2026, 3, 3, 3, 0, tzinfo=UTC)  # 21:00 on Monday 2 March in Chicago
    result = pl.plan(at=at, tz=chicago, pumps=[], capacity=cap(first_visit=time(9)), horizon_days=1)
    assert (result.today, result.first_day) == (MONDAY, MONDAY + DAY)


def test_weekday_capacity_and_pumps_after_the_horizon():
    c = Capacity(slots_per_day=2, slots_by_weekday=(0, None, None, None, None, None, None))
    result = pl.plan(at=AT, tz=UTC, pumps=[Candidate(1, MONDAY), Candidate(2, MONDAY + 60 * DAY)], capacity=c)
    assert result.day(MONDAY).capacity == 0 and result.day(MONDAY + DAY).capacity == 2
    assert [s.reason for s in result.shortfalls] == [pl.REASON_CLOSURES]
    assert result.proposals == ()


def test_moves_are_honoured_or_refused():
    c = cap(slots_per_day=1)
    pumps = [Candidate(1, MONDAY + 5 * DAY), Candidate(2, MONDAY + 5 * DAY)]
    result = pl.plan(at=AT, tz=UTC, pumps=pumps, capacity=c, horizon_days=10,
                     moves={1: MONDAY + 2 * DAY, 2: MONDAY + 2 * DAY, 9: MONDAY})
    assert result.proposal_for(1).day == MONDAY + 2 * DAY and result.proposal_for(1).moved
    assert result.proposal_for(2).day == MONDAY + 5 * DAY
    assert result.refused_moves == (2, 9)
    late = pl.plan(at=AT, tz=UTC, pumps=pumps[:1], capacity=c, horizon_days=10, moves={1: MONDAY + 7 * DAY})
    assert late.shortfalls[0].reason == pl.REASON_MOVED and late.shortfalls[0].suggested == MONDAY + 7 * DAY


# ---------------------------------------------------------------------- properties


def _capacity(draw, days, slots_per_day, *, most_slots: int, most_closures: int, most_earliest: int) -> Capacity:
    """A clinic's capacity over ``days``: slots per day (or per weekday), open weekdays,
    closures and the earliest useful refill."""
    return Capacity(
        slots_per_day=draw(slots_per_day),
        slots_by_weekday=tuple(draw(st.lists(st.none() | st.integers(0, most_slots), min_size=7, max_size=7))
                               if draw(st.booleans()) else (None,) * 7),
        open_weekdays=EVERY_DAY if draw(st.booleans()) else frozenset(draw(st.sets(st.integers(0, 6), min_size=1))),
        closures=frozenset(draw(st.sets(st.sampled_from(days), max_size=most_closures))) if days else frozenset(),
        earliest_days=draw(st.integers(0, most_earliest)),
    )


def _booked(draw, days) -> dict:
    """Refill appointments already booked on some of the days."""
    return {d: n for d in days if draw(st.integers(0, 3)) == 0 and (n := draw(st.integers(1, 3)))}


@st.composite
def clinics(draw):
    horizon = draw(st.integers(0, 7))
    days = [MONDAY + DAY * i for i in range(horizon + 1)]
    capacity = _capacity(draw, days, st.sampled_from((1, 1, 2, 0)), most_slots=2, most_closures=2, most_earliest=4)
    booked = _booked(draw, days)
    dues = draw(st.lists(st.integers(-1, min(horizon + 1, 4)), max_size=6))
    pumps = [Candidate(key, MONDAY + DAY * offset) for key, offset in enumerate(dues, start=1)]
    return horizon, capacity, booked, pumps


PROP = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The two traps of simpler greedy rules (see the examples above), always tried.
TRAP = (4, cap(slots_per_day=1, earliest_days=1), {},
        [Candidate(1, MONDAY + DAY), Candidate(2, MONDAY + 2 * DAY), Candidate(3, MONDAY + 2 * DAY)])
TRAP_FULL = (4, cap(slots_per_day=1, earliest_days=1), {MONDAY: 1}, TRAP[3])


def _options(result, capacity, booked, pumps):
    """Each pump due within the horizon: the days of its window with a free slot."""
    days = [d.day for d in result.days]
    free = {d: max(0, capacity.slots(d) - booked.get(d, 0)) for d in days}
    options = {}
    for c in pumps:
        if c.due_on > result.last_day:
            continue
        lo = max(result.first_day, c.due_on - DAY * capacity.earliest_days)
        options[c.key] = [d for d in days if lo <= d <= c.due_on and free[d] > 0]
    return free, options


def _assignments(keys, options, free):
    """Every assignment (pump -> day or None) within capacity."""
    left = dict(free)
    out = []

    def walk(i, chosen):
        if i == len(keys):
            out.append(dict(chosen))
            return
        key = keys[i]
        chosen[key] = None
        walk(i + 1, chosen)
        for d in options[key]:
            if left[d] > 0:
                left[d] -= 1
                chosen[key] = d
                walk(i + 1, chosen)
                left[d] += 1
        del chosen[key]

    walk(0, {})
    return out


@PROP
@given(clinics())
@example(TRAP)
@example(TRAP_FULL)
def test_plan_is_valid(case):
    horizon, capacity, booked, pumps = case
    result = pl.plan(at=AT, tz=UTC, pumps=pumps, capacity=capacity, booked=booked, horizon_days=horizon)
    due = {c.key: c.due_on for c in pumps}
    for p in result.proposals:
        assert p.day <= due[p.key], "never after the due date"
        assert p.day >= due[p.key] - DAY * capacity.earliest_days, "never before the window"
        assert p.day >= result.first_day >= result.today, "never before today"
        assert capacity.slots(p.day) > 0, "only on open days with slots"
    for load in result.days:
        if load.booked <= load.capacity:
            assert load.booked + load.proposed + load.suggested <= load.capacity, "capacity never exceeded"
        else:
            assert load.proposed == load.suggested == 0
    planned = [p.key for p in result.proposals] + [s.key for s in result.shortfalls]
    assert sorted(planned) == sorted(c.key for c in pumps if c.due_on <= result.last_day), "each pump once"
    for s in result.shortfalls:
        if s.reason == pl.REASON_OVERDUE:
            assert s.due_on < result.first_day
        if s.suggested is not None:
            assert capacity.slots(s.suggested) > 0 and result.first_day <= s.suggested <= result.last_day


@PROP
@given(clinics())
@example(TRAP)
@example(TRAP_FULL)
def test_plan_books_as_many_in_time_as_any_assignment_most_urgent_first(case):
    horizon, capacity, booked, pumps = case
    result = pl.plan(at=AT, tz=UTC, pumps=pumps, capacity=capacity, booked=booked, horizon_days=horizon)
    free, options = _options(result, capacity, booked, pumps)
    keys = sorted(options)
    every = _assignments(keys, options, free)
    best = max(sum(d is not None for d in a.values()) for a in every)
    assert len(result.proposals) == best
    due = {c.key: c.due_on for c in pumps}
    for threshold in sorted(set(due.values())):
        wanted = max(sum(d is not None and due[k] <= threshold for k, d in a.items()) for a in every)
        assert sum(due[p.key] <= threshold for p in result.proposals) == wanted, f"most urgent first ({threshold})"


@PROP
@given(clinics())
@example(TRAP)
@example(TRAP_FULL)
def test_each_kept_pump_is_as_late_as_any_placement_allows(case):
    horizon, capacity, booked, pumps = case
    result = pl.plan(at=AT, tz=UTC, pumps=pumps, capacity=capacity, booked=booked, horizon_days=horizon)
    free, options = _options(result, capacity, booked, pumps)
    kept = sorted(p.key for p in result.proposals)
    ours = {p.key: p.day for p in result.proposals}
    full = [a for a in _assignments(kept, options, free) if all(d is not None for d in a.values())]
    assert full, "the kept pumps can all be placed"
    for load in result.days:
        t = load.day
        most = max(sum(d >= t for d in a.values()) for a in full)
        assert sum(d >= t for d in ours.values()) == most, f"as late as possible from {t}"


@PROP
@given(clinics(), st.data())
def test_moves_never_exceed_capacity(case, data):
    horizon, capacity, booked, pumps = case
    days = [MONDAY + DAY * i for i in range(-1, horizon + 3)]
    moves = {c.key: data.draw(st.sampled_from(days)) for c in pumps if data.draw(st.booleans())}
    result = pl.plan(at=AT, tz=UTC, pumps=pumps, capacity=capacity, booked=booked, horizon_days=horizon, moves=moves)
    for load in result.days:
        if load.booked <= load.capacity:
            assert load.booked + load.proposed + load.suggested <= load.capacity
    for key, day in moves.items():
        honoured = (result.proposal_for(key) or result.shortfall_for(key))
        if key not in result.refused_moves and honoured is not None:
            assert (getattr(honoured, "day", None) or honoured.suggested) == day


@st.composite
def busy_clinics(draw):
    """Larger than the brute force can enumerate: up to 80 pumps over up to 40 days."""
    horizon = draw(st.integers(0, 40))
    days = [MONDAY + DAY * i for i in range(horizon + 1)]
    capacity = _capacity(draw, days, st.integers(0, 3), most_slots=3, most_closures=5, most_earliest=10)
    booked = _booked(draw, days)
    dues = draw(st.lists(st.integers(-2, horizon + 2), max_size=80))
    moves = {key: MONDAY + DAY * draw(st.integers(-1, horizon + 1))
             for key in range(1, len(dues) + 1) if draw(st.integers(0, 9)) == 0}
    return horizon, capacity, booked, [Candidate(k, MONDAY + DAY * o) for k, o in enumerate(dues, start=1)], moves


def _choose_by_rechecking(candidates, moved, cal):
    """The rule as first written: a pump is kept if the kept set with it is still
    placeable (the whole set checked again for every pump: quadratic)."""
    kept, short = [], []
    for cand in candidates:
        if cand.key in moved:
            continue
        lo = cal.window_start(cand)
        if cand.due_on < cal.start:
            short.append((cand, pl.REASON_OVERDUE))
        elif not any(cal.nominal.get(d, 0) > 0 for d in pl._days(lo, cand.due_on)):
            short.append((cand, pl.REASON_CLOSURES))
        elif pl.placeable([(s, c.due_on) for c, s in kept] + [(lo, cand.due_on)], cal.free, cal.days):
            kept.append((cand, lo))
        else:
            short.append((cand, pl.REASON_CAPACITY))
    return kept, short


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(busy_clinics())
@example(TRAP + ({},))
@example(TRAP_FULL + ({},))
def test_choosing_pump_by_pump_keeps_the_pumps_that_rechecking_the_kept_set_keeps(case):
    horizon, capacity, booked, pumps, moves = case
    cal = pl._calendar(pl.first_day(AT, UTC, capacity.first_visit), MONDAY + DAY * horizon, capacity, booked)
    candidates = sorted({c.key: c for c in pumps if c.due_on <= cal.end}.values(), key=lambda c: (c.due_on, c.key))
    moved, _ = pl._take_moves(candidates, moves, cal)
    assert pl._choose(candidates, moved, cal) == _choose_by_rechecking(candidates, moved, cal)
