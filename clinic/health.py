"""``/health/``: no sign-in. Reports the database, the Celery broker and the last alert
sweep; answers 503 when any is unhealthy, including a sweep older than 3 intervals."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        return f"error: {exc.__class__.__name__}"


def _broker() -> str:
    from clinic.celery import app

    if app.conf.task_always_eager:
        return "ok"
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {exc.__class__.__name__}"


def health(request):
    from pumps import alerts, outbox

    now = timezone.now()
    checks = {"database": _database(), "broker": _broker()}
    last = alerts.last_sweep() if checks["database"] == "ok" else None
    stale = checks["database"] != "ok" or alerts.sweep_is_stale(now)
    checks["alert_sweep"] = "ok" if not stale else ("never ran" if last is None else "stale")
    if stale and checks["database"] == "ok":
        # The worker may be what stopped: tell the clinic admins from here, synchronously.
        if alerts.raise_stalled(now):
            outbox.deliver_due(now, kind="alerting_stalled")
    healthy = all(v == "ok" for v in checks.values())
    body = {
        "status": "ok" if healthy else "error",
        "checks": checks,
        "last_sweep_at": last.finished_at.isoformat() if last else None,
        "sweep_interval_seconds": settings.ALERT_SWEEP_INTERVAL_SECONDS,
    }
    return JsonResponse(body, status=200 if healthy else 503)
