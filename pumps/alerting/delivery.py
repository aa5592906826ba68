"""The delivery trigger: after a transaction that queued notifications commits, ask a
worker to deliver the outbox, once per transaction (or once per sweep or chunk of one).

How the worker is asked is registered at start-up by the task layer (``pumps.apps``
registers ``pumps.tasks.trigger_delivery``): alerting does not import the tasks that run
it. Without a registered trigger the rows stay pending and the next sweep's dispatcher
delivers them, as when the broker is down."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import contextmanager

from django.db import connection, transaction

log = logging.getLogger("pumps.alerts")

_trigger: Callable[[], None] | None = None


def register_trigger(trigger: Callable[[], None]) -> None:
    """Set how a worker is asked to deliver pending notifications (at start-up)."""
    global _trigger
    _trigger = trigger


def enqueue_delivery() -> None:
    """Ask a worker to deliver pending notifications. If the broker is down the rows stay
    pending and the next sweep picks them up: the write that queued them has committed."""
    if _trigger is None:
        log.warning("no delivery trigger is registered; the next sweep will deliver")
        return
    try:
        _trigger()
    except Exception as exc:  # noqa: BLE001 - broker outage must not fail the caller
        log.warning("could not queue delivery (%s); the next sweep will deliver", exc.__class__.__name__)


_batch = threading.local()


@contextmanager
def one_delivery_trigger():
    """Inside a sweep (or a chunk of one): one delivery trigger at its end, however many
    pumps and reminders queued notifications, instead of one per transaction."""
    _batch.depth = getattr(_batch, "depth", 0) + 1
    try:
        yield
    finally:
        _batch.depth -= 1
        if _batch.depth == 0 and getattr(_batch, "pending", False):
            _batch.pending = False
            transaction.on_commit(enqueue_delivery)


def queue_delivery_on_commit() -> None:
    """One delivery task per transaction, however many notifications it queued; inside
    ``one_delivery_trigger`` one for the whole batch."""
    if getattr(_batch, "depth", 0):
        _batch.pending = True
        return
    pending = getattr(connection, "run_on_commit", [])
    if not any(entry[1] is enqueue_delivery for entry in pending):
        transaction.on_commit(enqueue_delivery)


