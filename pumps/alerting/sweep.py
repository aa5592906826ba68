"""The sweep: refresh the pumps whose stored instants say something changed (one range
scan of ``next_change_at``), create and resolve their alerts, send repeats and digests,
and record the heartbeat. The due pumps are refreshed set-based in chunks
(``pumps.bulk_refresh``), with the one alert plan of ``evaluate``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

from pumps import bulk_refresh, tallies
from pumps.bulk_refresh import SweepResult
from pumps.models import Pump, SweepRun

from .delivery import one_delivery_trigger
from .digests import queue_digests
from .evaluate import settle_dose_alerts
from .repeats import process_repeats
from .stalled import resolve_stalled

CHUNK = getattr(settings, "ALERT_SWEEP_CHUNK", 500)  # pumps per batch, and per task when the sweep fans out
MAX_DUE_PER_SWEEP = 100_000

#: Hands one chunk of due pump ids and the sweep's instant to a task (the task layer's).
FanOut = Callable[[list[int], datetime], None]


def due_pumps(now: datetime):
    """The pumps whose stored instants say something changed by ``now``: one range scan
    of the ``next_change_at`` index."""
    return Pump.objects.filter(next_change_at__lte=now).order_by("next_change_at", "id")


def idle_tick(now: datetime, started: datetime) -> bool:
    """The steady state costs one statement (PostgreSQL): True when nothing was due and
    the heartbeat is recorded; False when the sweep has work (or on another database).
    The check is the database function ``pumps_idle_tick`` (migration ``pumps.0010``):
    whether a pump's state changed, an alert is to repeat, a stalled-alerting alert is to
    resolve, a clinic's digests are not settled, or status tallies are to fold; each an
    index probe (or a read of a few small rows) that stops at its first row."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT pumps_idle_tick(%s, %s, %s, %s)", [now, started, timezone.now(), tallies.FOLD_AFTER])
        return cursor.fetchone()[0] is not None


def sweep(now: datetime | None = None, *, fan_out: FanOut | None = None) -> SweepResult:
    """One sweep: refresh due pumps, create alerts, repeats and digests, and record the
    heartbeat. The same code runs from beat and from ``manage.py run_alert_sweep``; with
    ``fan_out`` (beat: ``pumps.tasks.queue_sweep_chunk``) a due set larger than one chunk
    is split into chunks, each handed to ``fan_out`` (a task per chunk). When nothing is
    due (most ticks) one statement checks that and records the heartbeat."""
    now = now or timezone.now()
    started = timezone.now()
    result = SweepResult()
    if idle_tick(now, started):
        return result
    with one_delivery_trigger():
        _sweep_work(now, started, result, fan_out)
    return result


def _sweep_work(now: datetime, started: datetime, result: SweepResult, fan_out: FanOut | None) -> None:
    # Reminders of open critical alerts first: a large backlog of state changes must not
    # delay them past the task's time limit.
    result.notifications_created += process_repeats(now)
    ids = list(due_pumps(now).values_list("id", flat=True)[:MAX_DUE_PER_SWEEP])
    if fan_out is not None and len(ids) > CHUNK:
        # Scale out: each chunk is a task that any worker (on any machine) may take. The
        # row locks (SKIP LOCKED) and the next_change_at re-check keep the exactly-once rules.
        for start in range(0, len(ids), CHUNK):
            fan_out(ids[start:start + CHUNK], now)
        result.chunks_queued = -(-len(ids) // CHUNK)
    else:
        sweep_pumps(ids, now, result)
    result.notifications_created += queue_digests(now)
    resolve_stalled(now)
    settle_dose_alerts(now)
    tallies.fold()
    SweepRun.objects.create(
        started_at=started, finished_at=timezone.now(), pumps_checked=result.pumps_checked,
        alerts_created=result.alerts_created, notifications_created=result.notifications_created,
    )


def sweep_pumps(ids: list[int], now: datetime, result: SweepResult | None = None) -> SweepResult:
    """Refresh the given due pumps and create their alerts: set-based in chunks
    (``pumps.bulk_refresh``: a handful of statements per chunk, ``SKIP LOCKED`` so that
    two sweeps share the pumps), each chunk that fails done again pump by pump, a broken
    pump isolated; pump by pump on other databases than PostgreSQL."""
    return bulk_refresh.refresh_pumps(ids, now, result)


#: The pump-by-pump path, one transaction per pump (``pumps.bulk_refresh``).
sweep_pumps_one_by_one = bulk_refresh.refresh_one_by_one
