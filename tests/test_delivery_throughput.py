"""E-mail delivery at the speed of the mail server (``outbox.deliver_emails``): claims of a
few dozen rows at once (``SKIP LOCKED``: workers in parallel never share a row), each
alert rendered once for all its recipients, critical first, each success recorded in one
statement; and exactly once when a real worker is killed in the middle of a batch."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from aiosmtpd.controller import Controller
from django.db import connections
from django.utils import timezone

from clinic.models import AlertRecipient
from pumps import outbox, tasks
from pumps.alerting import delivery
from pumps.alerting.sweep import sweep
from pumps.models import DeliveryAttempt, Notification
from tests.test_alerts_smtp import (
    Inbox,
    Queues,
    Worker,
    _subprocess_env,
    free_port,
    low_reservoir_pump,
    publishing_to,
    require_redis,
    trigger_delivery,
    wait_for,
)

pytestmark = pytest.mark.postgres

RECIPIENTS = 40  # + the nurse and the ward address: 42 per alert, two e-mailed alerts


@pytest.fixture
def smtp(settings):
    port = free_port()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_TIMEOUT = 5
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox
    controller.stop()


def backlog(now=None) -> int:
    """A pump at its alarm and overdue, many recipients: a backlog of pending e-mails."""
    pump = low_reservoir_pump()
    for n in range(RECIPIENTS):
        AlertRecipient.objects.create(clinic=pump.clinic, email=f"r{n:02d}@clinic.example")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(delivery, "queue_delivery_on_commit", lambda: None)
        sweep(now or timezone.now())
    Notification.objects.filter(kind="digest").delete()  # alert e-mails only
    return Notification.objects.filter(channel="email", status="pending").count()


def delivered(inbox: Inbox) -> Counter:
    return Counter((rcpts[0], msg["X-Clinic-Alert-Id"]) for rcpts, msg in inbox.messages)


@pytest.mark.django_db
def test_a_batch_sends_every_email_once_critical_first_rendering_each_alert_once(smtp, monkeypatch):
    total = backlog()
    per_alert = RECIPIENTS + 2
    assert total % per_alert == 0 and total >= 2 * per_alert
    builds = []
    real = outbox.build_email
    monkeypatch.setattr(outbox, "build_email", lambda note, now: builds.append(note.alert_id) or real(note, now))
    result = outbox.deliver_emails(claim_size=30)
    assert result.sent == total and not result.more
    assert len(builds) == total // per_alert  # one rendering per alert, whatever the recipients
    assert set(delivered(smtp).values()) == {1} and len(smtp.messages) == total
    # critical (low_reservoir) first
    severities = [msg["X-Clinic-Alert-Severity"] for _, msg in smtp.messages]
    assert severities == sorted(severities, key=lambda s: s != "critical"), [
        (msg["X-Clinic-Alert-Kind"], msg["X-Clinic-Alert-Severity"]) for _, msg in smtp.messages]
    assert Notification.objects.exclude(status="sent").count() == 0
    assert DeliveryAttempt.objects.filter(ok=True).count() == total
    # each message carries its own recipient
    assert all(msg["To"] == rcpts[0] for rcpts, msg in smtp.messages)


@pytest.mark.django_db
def test_claims_are_released_when_a_batch_runs_out_of_time(smtp):
    total = backlog()
    result = outbox.deliver_emails(claim_size=20, budget_seconds=0.0)
    assert result.sent == 0 and result.more
    result = outbox.deliver_emails(claim_size=20)
    assert result.sent == total
    assert not Notification.objects.filter(status="sending").exists()


@pytest.mark.django_db(transaction=True)
def test_two_workers_in_parallel_never_send_the_same_email(smtp):
    total = backlog()
    results = []

    def worker():
        try:
            results.append(outbox.deliver_emails(claim_size=10).sent)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(results) == total and all(results), results
    assert len(smtp.messages) == total and set(delivered(smtp).values()) == {1}


@pytest.mark.django_db(transaction=True)
def test_a_backlog_batch_queues_helpers_and_its_successor(smtp, monkeypatch, settings):
    backlog()
    settings.EMAIL_PARALLEL_BATCHES = 3
    queued = []
    monkeypatch.setattr(tasks.deliver_email, "apply_async", lambda *a, **k: queued.append(a))
    real = outbox.deliver_emails
    monkeypatch.setattr(outbox, "deliver_emails", lambda **kw: real(budget_seconds=0.0, **kw))
    assert tasks.deliver_email() == 0
    assert queued == [((),)]  # out of time at once: its successor, no helpers yet
    monkeypatch.setattr(outbox, "deliver_emails", lambda **kw: real(claim_size=10, **kw))
    queued.clear()
    assert tasks.deliver_email() > 0
    assert queued == [((1,),), ((2,),)]  # a full claim: two helpers, each its own slot
    assert tasks.deliver_email(1) >= 0


class HoldNth(Inbox):
    """Takes the first ``n - 1`` messages, then holds the n-th (the worker is killed
    meanwhile) and never takes it."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.count = 0
        self.holding = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        import asyncio

        self.count += 1
        if self.count == self.n:
            self.holding.set()
            await asyncio.sleep(90)
            return "451 too late"
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_loses_nothing_and_sends_nothing_twice(tmp_path):
    """A real worker on Redis is killed (SIGKILL) in the middle of a batch (the server
    holds its 30th message); another worker and beat finish the backlog once the dead
    worker's claims go stale: every e-mail arrives exactly once (the one in flight was
    never taken by the server), every row is sent."""
    import signal

    url = require_redis()
    queues = Queues("bulkkill")
    port = free_port()
    total = backlog()
    inbox = HoldNth(30)
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    env = {**_subprocess_env(port), "CELERY_BROKER_URL": url, **queues.env()}
    all_queues = [queues.default, queues.email, queues.webhooks]
    first = Worker.worker(env, all_queues, "first")
    others: list[Worker] = []
    try:
        with publishing_to(url, queues) as app:
            trigger_delivery(app, queues)
        assert inbox.holding.wait(60), "".join(first.lines)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=20)
        sent_before = Notification.objects.filter(status="sent").count()
        assert sent_before == 29  # each success recorded as it happened
        controller.stop()
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        others = [Worker.worker(env, all_queues, "second"), Worker.beat(env, tmp_path / "beat-schedule")]
        assert wait_for(lambda: not Notification.objects.exclude(status="sent").exists(), 150, every=0.5), list(
            Notification.objects.exclude(status="sent").values_list("pk", "status", "claimed_at", "last_error"))
    finally:
        for w in [first, *others]:
            w.stop()
        controller.stop()
    got = delivered(inbox)
    assert len(got) == total and set(got.values()) == {1}, [k for k, v in got.items() if v > 1]
    assert Notification.objects.filter(status="sent").count() == total


def test_the_rate_is_measured_by_the_bench():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "bench" / "bench.py").read_text()
    assert "delivery_per_s" in text and "burst_1_worker_s" in text
