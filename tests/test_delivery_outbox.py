"""The outbox's delivery rules, against a real SMTP server on loopback (aiosmtpd): the
circuit breaker, one connection per batch, critical alerts first, the overall deadline of
an SMTP attempt, never a resolved alert, coalesced triggers, one batch at a time, claims
that go stale after a minute, and no patient data in logs or stored errors."""

from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from clinic.models import AlertRecipient
from pumps import outbox, tasks
from pumps import projection as pj
from pumps import services as s
from pumps.alerting.sweep import sweep
from pumps.models import Alert, DeliveryAttempt, Notification
from tests.test_alerts_smtp import Inbox, free_port, low_reservoir_pump

MRN = "MRN-SECRET-77"


class CountingInbox(Inbox):
    """Also counts SMTP sessions (one EHLO per connection)."""

    def __init__(self):
        super().__init__()
        self.sessions = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.sessions += 1
        session.host_name = hostname
        return responses


@pytest.fixture
def smtp(settings):
    """SMTP settings for a loopback port; ``start()`` starts a server there."""
    port = free_port()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 5
    started = []

    class Server:
        def __init__(self):
            self.port = port

        def start(self) -> CountingInbox:
            inbox = CountingInbox()
            controller = Controller(inbox, hostname="127.0.0.1", port=port)
            controller.start()
            started.append(controller)
            return inbox

    yield Server()
    for controller in started:
        controller.stop()


@pytest.fixture
def ten_recipients(db):
    """A pump in low-reservoir alarm; ten addresses: 10 critical and 10 warning
    (refill overdue) e-mails once swept."""
    pump = low_reservoir_pump(mrn=MRN)
    for i in range(8):
        AlertRecipient.objects.create(clinic=pump.clinic, email=f"r{i}@clinic.example")
    now = timezone.now()
    sweep(now)
    Notification.objects.filter(kind="digest").delete()  # whether the digest hour has passed depends on the clock
    assert Notification.objects.filter(channel="email", kind="low_reservoir").count() == 10
    assert Notification.objects.filter(channel="email", kind="refill_overdue").count() == 10
    return pump, now


def attempts() -> int:
    return DeliveryAttempt.objects.count()


def test_breaker_stops_a_batch_after_three_failures_and_resumes_with_backoff(ten_recipients, smtp):
    _, t0 = ten_recipients
    # nothing listens on the port: connection refused
    assert outbox.deliver_due(t0) == 0
    assert attempts() == 3  # not 20
    assert Notification.objects.filter(attempts=0, status="pending").count() == 17
    assert outbox.deliver_due(t0 + timedelta(seconds=5)) == 0
    assert attempts() == 3  # open for 10 s: nothing tried
    assert outbox.deliver_due(t0 + timedelta(seconds=11)) == 0
    assert attempts() == 6  # resumed: three more, then open again, for 20 s
    assert outbox.deliver_due(t0 + timedelta(seconds=25)) == 0
    assert attempts() == 6
    inbox = smtp.start()
    assert outbox.deliver_due(t0 + timedelta(seconds=32)) == 20
    assert attempts() == 26
    assert inbox.sessions == 1  # one SMTP connection for the batch
    severities = [msg["X-Clinic-Alert-Severity"] for _, msg in inbox.messages]
    assert severities == ["critical"] * 10 + ["warning"] * 10  # critical alerts first
    assert not Notification.objects.exclude(status="sent").exists()


def test_breaker_state_is_per_server(ten_recipients, smtp):
    _, t0 = ten_recipients
    assert outbox.deliver_due(t0) == 0
    assert outbox.email_breaker().is_open(t0 + timedelta(seconds=9))
    assert not outbox.email_breaker().is_open(t0 + timedelta(seconds=10))
    assert not outbox.webhook_breaker(1).is_open(t0)


def test_a_refused_recipient_does_not_trip_the_breaker(ten_recipients, smtp):
    _, t0 = ten_recipients

    class Refusing(CountingInbox):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address.startswith("r"):
                return "550 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    inbox = Refusing()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp.port)
    controller.start()
    try:
        assert outbox.deliver_due(t0) == 4  # nurse@ and ward@, two kinds each
    finally:
        controller.stop()
    assert attempts() == 20  # every one tried: the server answered each time
    refused = Notification.objects.filter(recipient="r0@clinic.example", kind="low_reservoir").get()
    assert refused.last_error.startswith("SMTPRecipientsRefused: {'r0@clinic.example': (550, b'no such user')}")


def test_critical_notifications_are_retried_within_30_seconds_others_by_minutes():
    assert [outbox.backoff(n, critical=True).total_seconds() for n in (1, 2, 3, 10)] == [15, 30, 30, 30]
    assert [outbox.backoff(n).total_seconds() / 60 for n in (1, 2, 3, 7, 8, 10)] == [1, 2, 4, 60, 60, 60]


def test_a_critical_notification_is_given_up_only_after_ten_attempts_and_an_hour(ten_recipients, monkeypatch):
    _, t0 = ten_recipients
    note = Notification.objects.filter(kind="low_reservoir").first()
    Notification.objects.filter(pk=note.pk).update(attempts=9)
    monkeypatch.setattr("pumps.outbox._send_email", lambda *a: (_ for _ in ()).throw(OSError("down")))
    outbox.deliver(note.pk, t0 + timedelta(minutes=5))
    note.refresh_from_db()
    assert (note.status, note.attempts) == ("pending", 10)
    cache.clear()  # the breaker
    outbox.deliver(note.pk, note.created_at + timedelta(hours=1))
    note.refresh_from_db()
    assert (note.status, note.attempts) == ("failed", 11)


def test_a_claim_goes_stale_after_a_minute_not_ten(ten_recipients):
    _, t0 = ten_recipients
    note = Notification.objects.first()
    assert outbox.claim(note.pk, t0)
    assert not outbox.claim(note.pk, t0 + timedelta(seconds=59))
    assert outbox.claim(note.pk, t0 + timedelta(seconds=61))  # the worker that held it died
    assert outbox.STALE_CLAIM > timedelta(seconds=10) + timedelta(seconds=30)  # deadline + margin


class DripSmtp:
    """A 'server' that greets one byte every ``every`` seconds."""

    def __init__(self, port: int, every: float):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.every = every
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        with conn:
            try:
                for byte in b"220-" + b"x" * 1000:
                    if self.stop.wait(self.every):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def close(self):
        self.stop.set()
        self.sock.close()


def test_an_smtp_server_answering_byte_by_byte_is_cut_at_the_deadline(ten_recipients, smtp, settings):
    _, t0 = ten_recipients
    settings.DELIVERY_DEADLINE_SECONDS = 2  # EMAIL_TIMEOUT (5 s) bounds each read, not their sum
    drip = DripSmtp(smtp.port, every=0.3)
    try:
        started = time.monotonic()
        result = outbox.deliver_batch(t0)
        elapsed = time.monotonic() - started
    finally:
        drip.close()
    assert (result.sent, result.failed) == (0, 3)  # then the breaker stopped the batch
    assert 5.8 <= elapsed <= 9, elapsed
    errors = set(DeliveryAttempt.objects.values_list("error", flat=True))
    assert errors == {"TimeoutError: no answer within the 2-second deadline"}


def test_a_resolved_alert_is_never_sent(ten_recipients, smtp, nurse_of):
    pump, t0 = ten_recipients
    inbox = smtp.start()
    # explanted before anything went out (SMTP was down); delivered two months later
    explanted_on = pj.local_date(t0, pump.clinic.tz)  # the clinic's today, whatever the hour in UTC
    s.explant_pump(withdrawal_plan="taper_completed", pump=pump, explanted_on=explanted_on, actor=s.Actor(nurse_of(pump)),
                   now=t0 + timedelta(minutes=1))
    assert set(Alert.objects.values_list("resolution", flat=True)) == {"pump explanted"}
    assert outbox.deliver_due(t0 + timedelta(days=60)) == 0
    assert inbox.messages == []
    assert set(Notification.objects.values_list("status", "last_error")) == {
        ("cancelled", "not sent: the alert was resolved before delivery")}
    assert attempts() == 0  # nothing was sent, so no attempt is logged


def test_an_alert_resolved_after_the_batch_started_is_not_sent(ten_recipients, smtp):
    _, t0 = ten_recipients
    inbox = smtp.start()
    note = Notification.objects.filter(kind="low_reservoir").first()
    Alert.objects.filter(pk=note.alert_id).update(resolved_at=t0, resolution="a new refill was recorded")
    assert outbox.deliver(note.pk, t0) is False  # claimed, then cancelled, not sent
    note.refresh_from_db()
    assert (note.status, note.claimed_at, note.attempts) == ("cancelled", None, 0)
    assert inbox.messages == []


@pytest.fixture
def nurse_of():
    def get(pump):
        from clinic.models import Membership

        return Membership.objects.filter(clinic=pump.clinic, role="nurse").first().user

    return get


def test_delivery_logs_and_errors_name_the_notification_never_the_patient(ten_recipients, smtp, caplog):
    _, t0 = ten_recipients
    with caplog.at_level(logging.DEBUG, logger="pumps"):
        outbox.deliver_due(t0)
        cache.clear()
        smtp.start()
        outbox.deliver_due(t0 + timedelta(minutes=5))
    assert Notification.objects.filter(status="sent").count() == 20
    delivery = [r.getMessage() for r in caplog.records if r.name == "pumps.outbox"]
    failed = Notification.objects.filter(attempts=2).order_by("id").first()
    assert f"notification {failed.pk} (email) attempt 1 failed: ConnectionRefusedError: " \
           "[Errno 111] Connection refused" in delivery
    assert any(line.startswith("notification ") and line.endswith(" (low_reservoir, email) sent") for line in delivery)
    assert MRN not in "\n".join(delivery) and "Garcia" not in caplog.text and MRN not in caplog.text
    stored = list(DeliveryAttempt.objects.values_list("error", flat=True)) + list(
        Notification.objects.values_list("last_error", flat=True))
    assert not [e for e in stored if MRN in e or "Garcia" in e]


def test_many_triggers_queue_one_dispatch(db, monkeypatch):
    scheduled = []
    monkeypatch.setattr(tasks.deliver_outbox, "apply_async", lambda *a, **k: scheduled.append(k))
    started = time.monotonic()
    results = [tasks.deliver_pending() for _ in range(378)]  # a sweep's reminders, one trigger each
    assert time.monotonic() - started < 1.0
    assert results.count(1) == 1 and scheduled == [{"countdown": 1}]
    monkeypatch.undo()
    tasks.deliver_outbox()  # the dispatch starts: triggers after this schedule a new one
    monkeypatch.setattr(tasks.deliver_outbox, "apply_async", lambda *a, **k: scheduled.append(k))
    assert tasks.deliver_pending() == 1 and len(scheduled) == 2


def test_dispatcher_queues_email_and_each_webhook_endpoint_on_their_queues(ten_recipients, monkeypatch, settings):
    pump, t0 = ten_recipients
    from clinic.models import ApiClient

    settings.WEBHOOK_ALLOWED_NETWORKS = "127.0.0.0/8"
    clients = []
    for name in ("EHR", "Pharmacy"):
        client, _ = ApiClient.create_with_token(clinic=pump.clinic, name=name, can_write=True)
        client.set_webhook("http://127.0.0.1:9/hook")
        clients.append(client)
    Notification.objects.filter(channel="email").update(next_attempt_at=t0)
    for client in clients:
        Notification.objects.create(alert=Alert.objects.first(), clinic=pump.clinic, kind="low_reservoir",
                                    channel="webhook", recipient=f"webhook:{client.pk}", api_client=client,
                                    next_attempt_at=t0, created_at=t0)
    queued = []
    monkeypatch.setattr(tasks.deliver_email, "apply_async", lambda *a, **k: queued.append(("email", a, k)))
    monkeypatch.setattr(tasks.deliver_webhooks, "apply_async", lambda *a, **k: queued.append(("webhooks", a, k)))
    assert tasks.deliver_outbox() == {"email": True, "webhook_clients": [c.pk for c in clients]}
    assert queued == [("email", (), {"queue": "email"})] + [
        ("webhooks", ((c.pk,),), {"queue": "webhooks"}) for c in clients]


@pytest.mark.postgres
def test_a_second_email_batch_exits_at_once_while_one_runs(ten_recipients, smtp):
    """The batch lock is a PostgreSQL advisory lock: held by another session (another
    worker), a batch does nothing; released (or that worker's connection gone), it runs."""
    import psycopg

    inbox = smtp.start()
    settings_dict = connection.settings_dict
    other = psycopg.connect(host=settings_dict["HOST"] or "127.0.0.1", port=settings_dict["PORT"] or 5432,
                            user=settings_dict["USER"], dbname=settings_dict["NAME"], autocommit=True)
    try:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [outbox._LOCK_CLASS, outbox._lock_key("email")])
        started = time.monotonic()
        assert tasks.deliver_email() == 0
        assert time.monotonic() - started < 0.5
        assert inbox.messages == []
    finally:
        other.close()  # like a worker that died: the database drops its lock
    with connection.cursor() as cursor:  # once the server has ended that session
        for _ in range(100):
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s",
                           [outbox._lock_key("email")])
            if cursor.fetchone()[0] == 0:
                break
            time.sleep(0.05)
    assert tasks.deliver_email() == 20
