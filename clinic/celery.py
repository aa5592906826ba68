"""The Celery app ``clinic``: ``celery -A clinic worker`` and ``celery -A clinic beat``.

Beat also runs the outbox dispatcher (``pumps.deliver_outbox``) every
``DELIVERY_TICK_SECONDS`` (default 15): retries, stale claims of dead workers and
notifications whose trigger was lost (broker down) go out within that tick of being due.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinic.settings")

app = Celery("clinic")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

OUTBOX_TASK = "pumps.deliver_outbox"


@app.on_after_configure.connect
def _outbox_tick(sender, **kwargs):
    """Add the dispatcher to beat's schedule unless the settings schedule it already."""
    from django.conf import settings

    schedule = sender.conf.beat_schedule or {}
    if any(entry.get("task") == OUTBOX_TASK for entry in schedule.values()):
        return
    seconds = float(getattr(settings, "DELIVERY_TICK_SECONDS", None) or os.environ.get("DELIVERY_TICK_SECONDS") or 15)
    sender.add_periodic_task(seconds, sender.signature(OUTBOX_TASK), name="outbox-delivery")
