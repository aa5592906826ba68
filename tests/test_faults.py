"""Faults that really stop and start a service (README, Resilience):
the broker (a Redis server of the test's own, on its own port) goes down during a refill
write: the write succeeds, its notifications wait in the outbox, and once Redis is back
the delivery task is queued and the e-mail goes out."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import datetime
from decimal import Decimal as D

import pytest
from django.core import mail

from pumps import outbox
from pumps import services as s
from pumps.models import Notification, Program, Refill
from tests.conftest import CHICAGO, require_service
from tests.factories import make_user


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A throwaway redis-server that the test can stop and start again."""

    def __init__(self, port: int):
        self.port = port
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def queue_length(self, queue: str = "celery") -> int:
        out = subprocess.run(["redis-cli", "-p", str(self.port), "LLEN", queue], capture_output=True, text=True)
        return int(out.stdout.strip() or 0)


@pytest.fixture
def redis_server():
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        require_service("redis-server", "the fault test starts and stops a Redis server of its own")
    server = RedisServer(_free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker(redis_server):
    from clinic.celery import app

    saved = {k: app.conf[k] for k in ("broker_url", "broker_write_url", "task_always_eager", "task_publish_retry",
                                      "broker_connection_timeout", "broker_transport_options")}
    # broker_write_url wins over broker_url when the settings set one (CELERY_BROKER_URL)
    app.conf.broker_url = app.conf.broker_write_url = f"redis://127.0.0.1:{redis_server.port}/0"
    app.conf.task_always_eager = False
    app.conf.task_publish_retry = False
    app.conf.broker_connection_timeout = 1
    app.conf.broker_transport_options = {"max_retries": 0}
    _reset_pool(app)
    yield redis_server
    app.conf.update(saved)
    _reset_pool(app)


def _reset_pool(app):
    """Forget pooled broker connections and producers so the new broker settings apply
    (and later tests get fresh ones, not pools closed here)."""
    from kombu import pools

    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None  # as Celery does after a fork
    pools.reset()


def test_redis_down_during_a_refill_write_then_back(
    broker, pump, nurse, prescriber, django_capture_on_commit_callbacks, caplog
):
    pump.clinic.alert_recipients.create(email="ward@clinic.example")
    actor = s.Actor(nurse)
    s.record_refill(  # a refill carrying a program: a prescriber's, verified by a second one
        pump=pump, performed_at=datetime(2026, 2, 2, 9, tzinfo=CHICAGO), added_volume_ml=D(36),
        concentration_mcg_per_ml=D(1000), actor=s.Actor(prescriber), now=datetime(2026, 2, 2, 10, tzinfo=CHICAGO),
        program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)),
    )
    second = make_user("dr_two", pump.clinic, "prescriber")
    s.verify_program(program=Program.objects.get(), actor=s.Actor(second), now=datetime(2026, 2, 2, 11, tzinfo=CHICAGO))

    broker.stop()  # Redis goes down
    with django_capture_on_commit_callbacks(execute=True):
        refill = s.record_refill(
            pump=pump, performed_at=datetime(2026, 3, 28, 9, tzinfo=CHICAGO), extracted_volume_ml=D("9"),
            added_volume_ml=D(25), concentration_mcg_per_ml=D(1000), actor=actor,
            now=datetime(2026, 3, 28, 12, tzinfo=CHICAGO),
        )
    # queuing the delivery failed (and was logged), the write succeeded, its alert waits
    assert "could not queue delivery (OperationalError); the next sweep will deliver" in caplog.text
    assert Refill.objects.filter(pk=refill.pk, discrepancy_flagged=True).exists()
    note = Notification.objects.get(kind="residual_discrepancy")
    assert note.status == "pending"
    assert mail.outbox == []

    broker.start()  # Redis is back: the next sweep queues delivery, a worker sends
    from pumps.tasks import deliver_pending

    deliver_pending.delay()
    assert broker.queue_length() == 1
    assert outbox.deliver_due() == 1  # what the worker runs for that task
    note.refresh_from_db()
    assert note.status == "sent"
    assert [m.to for m in mail.outbox] == [["ward@clinic.example"]]
    assert mail.outbox[0].extra_headers["X-Clinic-Alert-Kind"] == "residual_discrepancy"
