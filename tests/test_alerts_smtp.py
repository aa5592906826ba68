"""Alert e-mails through a real SMTP server (aiosmtpd on loopback), a real Celery worker on
the Redis broker, and two sweeps at once in two processes on PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal as D
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from unittest.mock import patch

import pytest
from aiosmtpd.controller import Controller
from django.db import connection
from django.utils import timezone

from clinic.models import AlertRecipient, Clinic
from pumps import outbox
from pumps import services as s
from pumps.alerting import delivery
from pumps.alerting.sweep import sweep
from pumps.models import DeliveryAttempt, Notification, Program
from tests.conftest import require_service
from tests.factories import make_clinic, make_patient, make_pump, make_user

ROOT = Path(__file__).resolve().parent.parent


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        msg = message_from_bytes(envelope.content, policy=default_policy)
        self.messages.append((envelope.rcpt_tos, msg))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_port():
    return free_port()


def start_smtp(port: int) -> tuple[Controller, Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, inbox


@pytest.fixture
def use_smtp(settings, smtp_port):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = smtp_port
    settings.EMAIL_TIMEOUT = 5
    return smtp_port


def low_reservoir_pump(code="north", mrn="MRN-LR"):
    """A pump whose worst-case LRA passed yesterday (real clock), with two recipients."""
    now = timezone.now()
    clinic = make_clinic(code=code, timezone="America/Chicago")
    AlertRecipient.objects.create(clinic=clinic, email="ward@clinic.example")
    nurse = make_user(f"nurse-{code}", clinic, "nurse", email="nurse@clinic.example")
    prescriber = make_user(f"dr-{code}", clinic, "prescriber")
    second = make_user(f"dr2-{code}", clinic, "prescriber")
    from clinic.models import Membership

    Membership.objects.filter(user=nurse).update(receives_alerts=True)
    pump = make_pump(make_patient(clinic, mrn=mrn))
    filled_at = now - timedelta(days=76)  # LRA after 75.56 days at 0.45 mL/day
    s.record_refill(
        pump=pump, performed_at=filled_at, added_volume_ml=D(36), concentration_mcg_per_ml=D(1000),
        actor=s.Actor(prescriber), program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)),
        now=filled_at + timedelta(minutes=1),
    )
    s.verify_program(program=Program.objects.get(pump=pump), actor=s.Actor(second), now=filled_at)
    pump.refresh_from_db()
    return pump


def kinds(inbox: Inbox, kind: str):
    return [(rcpts[0], msg) for rcpts, msg in inbox.messages if msg["X-Clinic-Alert-Kind"] == kind]


def test_smtp_down_then_up_every_email_arrives(db, use_smtp):
    pump = low_reservoir_pump()
    now = timezone.now()
    sweep(now)
    assert outbox.deliver_due(now) == 0  # nothing listens on the port yet
    failed = Notification.objects.filter(kind="low_reservoir")
    assert {n.status for n in failed} == {"pending"}
    assert all("ConnectionRefusedError" in n.last_error for n in failed)
    controller, inbox = start_smtp(use_smtp)
    try:
        outbox.deliver_due(now + timedelta(minutes=1))
        low = kinds(inbox, "low_reservoir")
        assert sorted(r for r, _ in low) == ["nurse@clinic.example", "ward@clinic.example"]
        msg = low[0][1]
        assert msg["Subject"] == "[CRITICAL] Low reservoir: MRN MRN-LR (AG)"
        assert msg["X-Clinic-Alert-Severity"] == "critical"
        text = msg.get_body(preferencelist=("plain",)).get_content()
        html = msg.get_body(preferencelist=("html",)).get_content()
        assert f"https://pumps.example.org/pumps/{pump.pk}/" in text and "<a href=" in html
        assert "Garcia" not in text + html
        # one more sweep and delivery send nothing new
        sweep(now + timedelta(minutes=5))
        outbox.deliver_due(now + timedelta(minutes=5))
        assert len(kinds(inbox, "low_reservoir")) == 2
    finally:
        controller.stop()


def _subprocess_env(smtp_port: int) -> dict:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
        "SITE_URL": "https://pumps.example.org",
        "DJANGO_SETTINGS_MODULE": "clinic.settings",
    }
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    return env


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_sweep_processes_at_once_send_one_email_per_recipient(smtp_port):
    low_reservoir_pump()
    controller, inbox = start_smtp(smtp_port)
    try:
        env = _subprocess_env(smtp_port)
        cmd = [sys.executable, "manage.py", "run_alert_sweep"]
        procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
        low = kinds(inbox, "low_reservoir")
        assert sorted(r for r, _ in low) == ["nurse@clinic.example", "ward@clinic.example"]
        overdue = kinds(inbox, "refill_overdue")
        assert sorted(r for r, _ in overdue) == ["nurse@clinic.example", "ward@clinic.example"]
        # every message the server got is one sent notification: no double sends
        assert Notification.objects.filter(status="sent").count() == len(inbox.messages)
    finally:
        controller.stop()


def _redis_url() -> str | None:
    url = os.environ.get("CELERY_BROKER_URL", "")
    return url if url.startswith("redis://") else None


def require_redis() -> str:
    url = _redis_url()
    if not url:
        require_service("Redis broker", "set CELERY_BROKER_URL=redis://... to run the worker test")
    import redis

    try:
        redis.Redis.from_url(url).ping()
    except redis.exceptions.ConnectionError as exc:
        require_service("Redis broker", str(exc))
    return url


class Queues:
    """Queue names of this test only (the default, e-mail and webhook queues), passed to
    the worker and beat processes through the environment."""

    def __init__(self, prefix: str):
        self.default = f"{prefix}-{os.getpid()}-{int(time.time() * 1000)}"
        self.email = f"{self.default}-email"
        self.webhooks = f"{self.default}-webhooks"

    def env(self) -> dict:
        return {"CELERY_TASK_DEFAULT_QUEUE": self.default, "CELERY_EMAIL_QUEUE": self.email,
                "CELERY_WEBHOOK_QUEUE": self.webhooks}


class Worker:
    """A real ``celery worker`` (or ``beat``) process; ``start`` waits until it is ready."""

    def __init__(self, env: dict, args: list[str]):
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "clinic", *args], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if " ready." in line or "beat: Starting" in line:
                self.ready.set()

    @classmethod
    def worker(cls, env: dict, queues: list[str], name: str) -> Worker:
        w = cls(env, ["worker", "--pool=solo", "-Q", ",".join(queues), "-n", f"{name}-{os.getpid()}@%h",
                      "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "info"])
        assert w.ready.wait(60), "".join(w.lines)
        return w

    @classmethod
    def beat(cls, env: dict, schedule: Path) -> Worker:
        w = cls(env, ["beat", "-l", "info", "--schedule", str(schedule)])
        assert w.ready.wait(60), "".join(w.lines)
        return w

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@contextmanager
def publishing_to(url: str, queues: Queues):
    """The test process publishes to the test's Redis and default queue."""
    from clinic.celery import app

    saved = app.conf.task_always_eager, app.conf.task_default_queue, app.conf.broker_url
    app.conf.task_always_eager = False
    app.conf.task_default_queue = queues.default
    app.conf.broker_url = url
    try:
        yield app
    finally:
        app.conf.task_always_eager, app.conf.task_default_queue, app.conf.broker_url = saved


def trigger_delivery(app, queues: Queues) -> None:
    from pumps.tasks import deliver_pending

    with app.connection_for_write() as conn:
        deliver_pending.apply_async(connection=conn, queue=queues.default)


def wait_for(predicate, seconds: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_on_redis_delivers_the_outbox(smtp_port):
    url = require_redis()
    queues = Queues("test")
    low_reservoir_pump()
    controller, inbox = start_smtp(smtp_port)
    env = {**_subprocess_env(smtp_port), "CELERY_BROKER_URL": url, **queues.env()}
    worker = Worker.worker(env, [queues.default, queues.email, queues.webhooks], "all")
    try:
        with publishing_to(url, queues) as app, app.connection_for_write() as conn:
            from pumps.tasks import run_sweep

            run_sweep.apply_async(connection=conn, queue=queues.default)
        sent = Notification.objects.filter(kind="low_reservoir", status="sent")
        # The worker marks a notification sent just after the SMTP server took it: wait for both.
        wait_for(lambda: len(kinds(inbox, "low_reservoir")) >= 2 and sent.count() >= 2, 60)
        low = kinds(inbox, "low_reservoir")
        assert sorted(r for r, _ in low) == ["nurse@clinic.example", "ward@clinic.example"]
        assert sent.count() == 2
    finally:
        worker.stop()
        controller.stop()


class SlowFirstInbox(Inbox):
    """Holds the first message for a long time (the worker is killed meanwhile)."""

    def __init__(self):
        super().__init__()
        self.first = True
        self.holding = threading.Event()  # set once the first message is being held

    async def handle_DATA(self, server, session, envelope):
        import asyncio

        if self.first:
            self.first = False
            self.holding.set()
            await asyncio.sleep(60)
            return "451 too late"
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_send_loses_no_alert_and_delivery_recovers_promptly(smtp_port, tmp_path):
    """A real worker is killed (SIGKILL) while it sends; the SMTP server then refuses
    connections for a while. Another worker and beat (its 15-second outbox tick) take
    over: the dead worker's claim within 2 minutes of being made, and every critical
    notification within 60 s of the SMTP server answering again. Meanwhile the circuit
    breaker keeps the attempts against the refusing server few."""
    import signal

    url = require_redis()
    queues = Queues("kill")
    pump = low_reservoir_pump()
    inbox = SlowFirstInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    env = {**_subprocess_env(smtp_port), "CELERY_BROKER_URL": url, **queues.env()}
    all_queues = [queues.default, queues.email, queues.webhooks]
    first = Worker.worker(env, all_queues, "first")
    others: list[Worker] = []
    try:
        # the sweep commits alerts and notifications (the outbox); delivery is queued on a
        # connection of its own so that the test does not depend on pooled connections
        # no daily digest in this test, whatever the time of day it runs at
        Clinic.objects.update(digest_settled_until=timezone.now() + timedelta(days=1))
        with patch.object(delivery, "queue_delivery_on_commit", lambda: None):
            sweep(timezone.now())
        with publishing_to(url, queues) as app:
            trigger_delivery(app, queues)
        assert wait_for(lambda: Notification.objects.filter(status="sending").exists(), 60)
        stuck = Notification.objects.filter(status="sending").order_by("claimed_at", "id").first()
        claimed_at = stuck.claimed_at
        assert stuck.alert.severity == "critical"  # critical alerts go first
        # kill only once the worker is inside the SMTP DATA phase (claimed, mid-send)
        assert inbox.holding.wait(60), "the worker never reached the SMTP server"
        first.proc.send_signal(signal.SIGKILL)  # dies between claiming and recording
        first.proc.wait(timeout=20)
        controller.stop()  # and the SMTP server goes away: connections refused
        assert inbox.messages == []
        others = [Worker.worker(env, all_queues, "second"), Worker.beat(env, tmp_path / "beat-schedule")]
        # SMTP stays down until 40 s after the claim: beat's ticks try, the breaker limits them
        time.sleep(max(0.0, (claimed_at + timedelta(seconds=40) - timezone.now()).total_seconds()))
        tried_while_down = DeliveryAttempt.objects.filter(ok=False).count()
        controller = Controller(inbox := Inbox(), hostname="127.0.0.1", port=smtp_port)
        controller.start()
        back_at = time.monotonic()
        critical = Notification.objects.filter(alert__pump=pump, alert__severity="critical")
        assert wait_for(lambda: not critical.exclude(status="sent").exists(), 90, every=0.5), [
            (n.pk, n.status, n.attempts, n.next_attempt_at, n.last_error) for n in critical]
        critical_out_after = time.monotonic() - back_at
        stuck.refresh_from_db()
        assert wait_for(lambda: not Notification.objects.filter(alert__pump=pump).exclude(status="sent").exists(), 90)
    finally:
        for w in [first, *others]:
            w.stop()
        controller.stop()
    assert stuck.status == "sent" and stuck.recipient in [r[0] for r, _ in inbox.messages]
    assert critical_out_after <= 60, critical_out_after
    # the dead worker's claim was taken over (and the message sent) within 2 minutes of it
    assert (stuck.sent_at - claimed_at).total_seconds() <= 120, stuck.sent_at - claimed_at
    assert (stuck.sent_at - claimed_at) >= outbox.STALE_CLAIM  # and not before it went stale
    assert tried_while_down <= 12, tried_while_down
    assert Notification.objects.filter(alert__pump=pump).exclude(status="sent").count() == 0
