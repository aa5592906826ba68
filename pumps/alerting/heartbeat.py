"""The sweep's heartbeat: the last completed sweep and the one rule for "alerting has
stopped" (``is_stale``); reads only (the pages show it). The ``alerting_stalled`` alert
that it calls for is ``stalled``."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings

from pumps.models import SweepRun

SWEEP_INTERVAL = timedelta(seconds=getattr(settings, "ALERT_SWEEP_INTERVAL_SECONDS", 300))


def last_sweep() -> SweepRun | None:
    return SweepRun.objects.order_by("-finished_at").first()


def is_stale(last: SweepRun | None, now: datetime) -> bool:
    """The one rule for "alerting has stopped": no sweep completed in three intervals."""
    return last is None or now - last.finished_at > 3 * SWEEP_INTERVAL


def sweep_is_stale(now: datetime) -> bool:
    return is_stale(last_sweep(), now)
