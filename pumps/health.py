"""``/health/``: no sign-in. Reports the database, the Celery broker and the last alert
sweep; answers 503 when any is unhealthy, including a sweep older than 3 intervals.

It only reads: raising ``alerting_stalled`` and e-mailing clinic administrators is the
beat watchdog's job (``pumps.watchdog``), never a request's. When the database cannot be
read the sweep's state is ``unknown`` (not "never ran")."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone

from clinic.celery import app
from pumps.alerting import heartbeat


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        return f"error: {exc.__class__.__name__}"


def _broker() -> str:
    if app.conf.task_always_eager:
        return "ok"
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {exc.__class__.__name__}"


def _sweep(now, database_ok: bool):
    """(state, the last sweep or None): ``ok``, ``stale``, ``never ran`` or ``unknown``."""
    if not database_ok:
        return "unknown", None
    try:
        last = heartbeat.last_sweep()
    except Exception:  # noqa: BLE001 - the heartbeat could not be read
        return "unknown", None
    if last is None:
        return "never ran", None
    return ("stale" if heartbeat.is_stale(last, now) else "ok"), last


def health(request):
    now = timezone.now()
    checks = {"database": _database(), "broker": _broker()}
    checks["alert_sweep"], last = _sweep(now, checks["database"] == "ok")
    healthy = all(v == "ok" for v in checks.values())
    body = {
        "status": "ok" if healthy else "error",
        "checks": checks,
        "last_sweep_at": last.finished_at.isoformat() if last else None,
        "sweep_interval_seconds": settings.ALERT_SWEEP_INTERVAL_SECONDS,
    }
    return JsonResponse(body, status=200 if healthy else 503)
