"""The outbox: notifications committed with their alerts are claimed by compare-and-swap
and sent (e-mail or webhook); every attempt is logged, failures retried with backoff.

- **Claims.** A sender claims one notification at a time (``claim``: ``UPDATE … WHERE
  status = 'pending'`` or a stale claim), right before it sends it. An attempt cannot last
  longer than ``DELIVERY_DEADLINE_SECONDS`` (10 s: resolution, connect, TLS, send and the
  answer, cut when it passes), so a claim older than ``STALE_CLAIM`` (the deadline plus a
  margin, 60 s) belongs to a worker that died, and the next delivery run takes it over.
  If that worker died after the SMTP server accepted the message, it is sent again:
  delivery is at-least-once, the right side to err on for a clinical alert.
- **Never for a resolved alert.** A notification whose alert was resolved before it was
  sent (a refill, an explant) is marked ``cancelled`` instead, with the reason in
  ``last_error``; no delivery attempt is logged for it, as nothing was sent.
- **Batches.** ``deliver_due`` sends the due notifications of one channel (or all):
  critical alerts first, then by due time; e-mails over one SMTP connection. After
  ``BREAKER_THRESHOLD`` consecutive failures to reach the server (a webhook endpoint, or
  the SMTP server) the batch stops and that server is left alone for a while (a circuit
  breaker whose state is in the Django cache: 10, 20, then 30 s), instead of one attempt
  per pending notification.
- **Backoff.** A notification of a critical alert is retried after 15 s, then every 30 s;
  others after 1, 2, 4 … 60 minutes. A notification is marked ``failed`` (listed in the
  daily digest and the admin) after ``MAX_ATTEMPTS`` failures, for a critical alert only
  once it has also been failing for ``CRITICAL_GIVE_UP``.

Logs and ``last_error`` name the notification id, never the patient.
"""

from __future__ import annotations

import copy
import logging
import os
import smtplib
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.mail import get_connection
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.db import connection as db_connection
from django.db.models import Case, IntegerField, Q, Value, When
from django.utils import timezone

from . import net
from .alerting.evaluate import CANCELLED_RESOLVED
from .emails import build_email, header_safe
from .models import DeliveryAttempt, Notification, Severity
from .webhooks import WebhookGone, post_webhook

log = logging.getLogger("pumps.outbox")

STALE_CLAIM = timedelta(seconds=60)  # > DELIVERY_DEADLINE_SECONDS (10 s) + the claim's own writes
MAX_ATTEMPTS = 10
CRITICAL_GIVE_UP = timedelta(hours=1)
CRITICAL_RETRY_FIRST = timedelta(seconds=15)
CRITICAL_RETRY_CAP = timedelta(seconds=30)
BREAKER_THRESHOLD = 3  # consecutive failures to reach a server before a batch stops
BREAKER_OPEN = (10, 20, 30)  # seconds the breaker stays open after its 1st, 2nd, 3rd+ trip
BATCH_SECONDS = 120  # a batch takes no new notification after this (the rest: the next run)
CANCELLED_NO_WEBHOOK = "not sent: the API client has no webhook any more"


def email_timeout_seconds() -> float:
    return float(getattr(settings, "EMAIL_TIMEOUT", None) or 10)


def backoff(attempts: int, critical: bool = False) -> timedelta:
    """Critical: 15 s, then 30 s. Others: 1, 2, 4, … minutes, at most an hour."""
    if critical:
        return min(CRITICAL_RETRY_FIRST * 2 ** max(attempts - 1, 0), CRITICAL_RETRY_CAP)
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 60))


def _due(now: datetime) -> Q:
    return Q(status=Notification.PENDING, next_attempt_at__lte=now) | Q(
        status=Notification.SENDING, claimed_at__lt=now - STALE_CLAIM
    )


def claim(notification_id: int, now: datetime) -> bool:
    """Compare-and-swap: pending and due, or a stale claim of a worker that died."""
    return bool(
        Notification.objects.filter(pk=notification_id)
        .filter(_due(now))
        .update(status=Notification.SENDING, claimed_at=now)
    )


def _due_queryset(now: datetime, *, kind: str | None = None, channel: str | None = None,
                  api_client_id: int | None = None):
    rows = Notification.objects.filter(_due(now))
    if kind is not None:
        rows = rows.filter(kind=kind)
    if channel is not None:
        rows = rows.filter(channel=channel)
    if api_client_id is not None:
        rows = rows.filter(api_client_id=api_client_id)
    return rows


def _due_rows(now: datetime, limit: int = 1000, **filters) -> list[tuple[int, str, int | None]]:
    """(id, channel, API client id) of due notifications, critical alerts first, then by
    due time."""
    return list(
        _due_queryset(now, **filters)
        .annotate(urgency=Case(When(alert__severity=Severity.CRITICAL, then=Value(0)), default=Value(1),
                               output_field=IntegerField()))
        .order_by("urgency", "next_attempt_at", "id")
        .values_list("id", "channel", "api_client_id")[:limit]
    )


def due_channels(now: datetime) -> tuple[bool, list[int]]:
    """What a dispatcher should start: (whether e-mails are due, the API clients whose
    webhooks are due). One indexed read."""
    rows = set(_due_queryset(now).order_by().values_list("channel", "api_client_id").distinct())
    email = any(channel == Notification.EMAIL for channel, _ in rows)
    clients = sorted({cid for channel, cid in rows if channel == Notification.WEBHOOK and cid is not None})
    return email, clients


def cancel_resolved(now: datetime) -> int:
    """Pending notifications of resolved alerts are never sent."""
    count = Notification.objects.filter(status=Notification.PENDING, alert__resolved_at__isnull=False).update(
        status=Notification.CANCELLED, last_error=CANCELLED_RESOLVED, claimed_at=None
    )
    if count:
        log.info("cancelled %s notifications of resolved alerts", count)
    return count


# ------------------------------------------------------------------- circuit breaker


class Breaker:
    """Consecutive failures to reach one server (the SMTP server, a webhook endpoint);
    the state lives in the Django cache (shared between processes when ``CACHE_URL`` is
    a Redis URL). Time is the caller's ``now``."""

    def __init__(self, name: str):
        self.key = f"pumps.outbox.breaker:{name}"

    def _state(self) -> dict:
        return cache.get(self.key) or {"failures": 0, "trips": 0, "open_until": 0.0}

    def open_until(self) -> float:
        return self._state()["open_until"]

    def is_open(self, now: datetime) -> bool:
        return now.timestamp() < self.open_until()

    def success(self) -> None:
        if cache.get(self.key) is not None:
            cache.delete(self.key)

    def failure(self, now: datetime) -> bool:
        """Record a failure; True when the breaker (now) trips: stop the batch."""
        state = self._state()
        if state["open_until"] and now.timestamp() >= state["open_until"] and state["failures"] >= BREAKER_THRESHOLD:
            state["failures"] = 0  # it was open and has expired: a fresh count
        state["failures"] += 1
        tripped = state["failures"] >= BREAKER_THRESHOLD
        if tripped:
            seconds = BREAKER_OPEN[min(state["trips"], len(BREAKER_OPEN) - 1)]
            state["trips"] += 1
            state["open_until"] = now.timestamp() + seconds
            log.warning("%s: %s consecutive failures, paused for %s s", self.key, state["failures"], seconds)
        cache.set(self.key, state, timeout=3600)
        return tripped


def email_breaker() -> Breaker:
    return Breaker("email")


def webhook_breaker(api_client_id: int | None) -> Breaker:
    return Breaker(f"webhook:{api_client_id}")


def _reaches_server(exc: BaseException) -> bool:
    """Whether a failure says the server is unreachable or broken (it counts towards the
    breaker), rather than refusing this one message (a bad recipient)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused | smtplib.SMTPSenderRefused | smtplib.SMTPDataError):
        return False
    return isinstance(exc, OSError)


# ------------------------------------------------------------------------ sending


DJANGO_SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


class DeadlineSMTPBackend(SMTPBackend):
    """Django's SMTP backend, keeping hold of its socket from the moment it connects (the
    server's greeting is read inside smtplib's constructor), so that the attempt's
    deadline can cut it."""

    sock = None

    @property
    def connection_class(self):
        base = super().connection_class
        backend = self

        class Tracked(base):
            def _get_socket(self, host, port, timeout):
                backend.sock = super()._get_socket(host, port, timeout)
                return backend.sock

        return Tracked

    def close(self):
        try:
            super().close()
        finally:
            self.sock = None


@dataclass
class SmtpSession:
    """One connection of the e-mail backend for a batch, reopened after a failure."""

    connection: object = None

    def get(self):
        if self.connection is None:
            smtp = getattr(settings, "EMAIL_BACKEND", "") == DJANGO_SMTP_BACKEND
            self.connection = get_connection(
                "pumps.outbox.DeadlineSMTPBackend" if smtp else None, fail_silently=False,
                timeout=email_timeout_seconds(),
            )
        return self.connection

    def socket(self):
        return getattr(self.connection, "sock", None)

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # noqa: BLE001 - a broken connection is dropped either way
                pass
            self.connection = None


def _send_email(note: Notification, now: datetime, session: SmtpSession | None, deadline: net.Deadline) -> None:
    message = build_email(note, now)
    owned = session is None
    session = session or SmtpSession()
    try:
        with net.cut_at(deadline, session.socket) as cut:
            try:
                conn = session.get()
                conn.open()  # no-op when already open; keeps it open across the batch
                message.connection = conn
                message.send(fail_silently=False)
            except OSError as exc:
                session.close()  # the connection may be half-way through a message
                if cut.is_set():
                    raise TimeoutError(f"no answer within the {deadline.seconds:g}-second deadline") from exc
                raise
    finally:
        if owned:
            session.close()


def _error_text(exc: BaseException) -> str:
    # Exception texts name the server, the URL or the recipient address, never the
    # patient: alert e-mails and payloads are built from the database, not echoed back.
    return f"{exc.__class__.__name__}: {exc}"[:2000]


def deliver(notification_id: int, now: datetime | None = None, *, session: SmtpSession | None = None) -> bool:
    """Claim and send one notification. Returns True when it was sent. Raises nothing:
    every failure is recorded on the row and in its attempt log."""
    return _deliver(notification_id, now or timezone.now(), session)[0]


def _deliver(notification_id: int, now: datetime, session: SmtpSession | None) -> tuple[bool, BaseException | None]:
    if not claim(notification_id, now):
        return False, None
    note = Notification.objects.select_related(
        "alert__pump__patient", "alert__pump__model", "clinic", "api_client"
    ).get(pk=notification_id)
    mine = Notification.objects.filter(pk=note.pk, status=Notification.SENDING, claimed_at=now)
    if note.alert is not None and note.alert.resolved_at is not None:
        mine.update(status=Notification.CANCELLED, last_error=CANCELLED_RESOLVED, claimed_at=None)
        log.info("notification %s cancelled: its alert was resolved", note.pk)
        return False, None
    deadline = net.Deadline(net.delivery_deadline_seconds())
    try:
        if note.channel == Notification.WEBHOOK:
            post_webhook(note, now, deadline)
        else:
            _send_email(note, now, session, deadline)
    except WebhookGone:
        mine.update(status=Notification.CANCELLED, last_error=CANCELLED_NO_WEBHOOK, claimed_at=None)
        log.info("notification %s cancelled: the API client has no webhook any more", note.pk)
        return False, None
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
        _record_failure(note, now, exc)
        return False, exc
    updated = mine.update(status=Notification.SENT, sent_at=now, attempts=note.attempts + 1, last_error="",
                          claimed_at=None)
    DeliveryAttempt.objects.create(notification=note, at=now, ok=True)
    if updated:
        log.info("notification %s (%s, %s) sent", note.pk, note.kind, note.channel)
    else:  # our claim went stale meanwhile and another worker took it over
        log.warning("notification %s sent, but its claim had been taken over: it may be sent twice", note.pk)
    return True, None


def _record_failure(note: Notification, now: datetime, exc: BaseException) -> None:
    error = _error_text(exc)
    attempts = note.attempts + 1
    critical = note.alert is not None and note.alert.severity == Severity.CRITICAL
    failed = attempts >= MAX_ATTEMPTS and (not critical or now - note.created_at >= CRITICAL_GIVE_UP)
    Notification.objects.filter(pk=note.pk, status=Notification.SENDING, claimed_at=now).update(
        status=Notification.FAILED if failed else Notification.PENDING,
        attempts=attempts, last_error=error, next_attempt_at=now + backoff(attempts, critical), claimed_at=None,
    )
    DeliveryAttempt.objects.create(notification=note, at=now, ok=False, error=error)
    log.warning("notification %s (%s) attempt %s failed: %s", note.pk, note.channel, attempts, error)


# ------------------------------------------------------------------------- batches


@dataclass
class BatchResult:
    sent: int = 0
    failed: int = 0
    skipped_by_breaker: set = field(default_factory=set)  # "email" or API client ids
    more: bool = False  # stopped by its time budget with work left (deliver_emails)


def deliver_due(now: datetime | None = None, kind: str | None = None, *, channel: str | None = None,
                api_client_id: int | None = None) -> int:
    """Deliver the due notifications (of one kind, channel or API client); returns how
    many were sent. ``now``: a fixed instant (tests); by default the clock, read again for
    each claim."""
    return deliver_batch(now, kind=kind, channel=channel, api_client_id=api_client_id).sent


def deliver_batch(now: datetime | None = None, *, kind: str | None = None, channel: str | None = None,
                  api_client_id: int | None = None, budget_seconds: float = BATCH_SECONDS) -> BatchResult:
    fixed = now
    clock = (lambda: fixed) if fixed is not None else timezone.now
    result = BatchResult()
    cancel_resolved(clock())
    started = time.monotonic()
    session = SmtpSession()
    seen: set[int] = set()
    try:
        while time.monotonic() - started < budget_seconds:
            filters = {"kind": kind, "channel": channel, "api_client_id": api_client_id}
            batch = [row for row in _due_rows(clock(), **filters) if row[0] not in seen]
            if not batch:
                break
            for notification_id, row_channel, client_id in batch:
                if time.monotonic() - started >= budget_seconds:
                    break
                seen.add(notification_id)
                is_email = row_channel == Notification.EMAIL
                server = "email" if is_email else client_id
                if server in result.skipped_by_breaker:
                    continue
                breaker = email_breaker() if is_email else webhook_breaker(client_id)
                at = clock()
                if breaker.is_open(at):
                    result.skipped_by_breaker.add(server)
                    continue
                sent, error = _deliver(notification_id, at, session if is_email else None)
                if sent:
                    result.sent += 1
                    breaker.success()
                elif error is not None:
                    result.failed += 1
                    if not is_email or _reaches_server(error):
                        if breaker.failure(at):
                            result.skipped_by_breaker.add(server)
                    elif isinstance(error, smtplib.SMTPException):
                        breaker.success()  # the server answered: it refused this message only
    finally:
        session.close()
    return result


# ------------------------------------------------------------- e-mail at speed


CLAIM_BATCH = 50  # e-mails claimed at once by a delivering worker
#: A worker sends from its claim for at most this long, then gives the rest back and claims
#: again: a claim is never near ``STALE_CLAIM`` while its worker is alive and sending.
CLAIM_HOLD_SECONDS = STALE_CLAIM.total_seconds() / 3


def email_parallel() -> int:
    """How many e-mail batches may run at once (workers deliver in parallel, each over
    its own SMTP connection): ``EMAIL_PARALLEL_BATCHES``, default 2."""
    value = getattr(settings, "EMAIL_PARALLEL_BATCHES", None) or os.environ.get("EMAIL_PARALLEL_BATCHES") or 2
    return max(1, int(value))


def claim_emails(now: datetime, limit: int = CLAIM_BATCH) -> list[int]:
    """Claim up to ``limit`` due e-mails in one statement, critical alerts first, then by
    due time: ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING id``, so
    that workers claiming at once take different rows without waiting. The same
    compare-and-swap as ``claim``: pending and due, or a stale claim."""
    table = Notification._meta.db_table
    alerts_table = Notification._meta.get_field("alert").related_model._meta.db_table
    if db_connection.vendor != "postgresql":  # SQLite: one writer at a time anyway
        ids = [row[0] for row in _due_rows(now, limit, channel=Notification.EMAIL)]
        return [i for i in ids if claim(i, now)]
    sql = f"""
        UPDATE "{table}" SET status = %s, claimed_at = %s
        WHERE id IN (
            SELECT n.id FROM "{table}" n LEFT JOIN "{alerts_table}" a ON a.id = n.alert_id
            WHERE n.channel = %s AND ((n.status = %s AND n.next_attempt_at <= %s)
                                      OR (n.status = %s AND n.claimed_at < %s))
            ORDER BY CASE WHEN a.severity = %s THEN 0 ELSE 1 END, n.next_attempt_at, n.id
            LIMIT %s FOR UPDATE OF n SKIP LOCKED)
        RETURNING id"""
    with db_connection.cursor() as cursor:
        cursor.execute(sql, [Notification.SENDING, now, Notification.EMAIL, Notification.PENDING, now,
                             Notification.SENDING, now - STALE_CLAIM, Severity.CRITICAL, limit])
        return [row[0] for row in cursor.fetchall()]


def _release(ids: list[int], claimed_at: datetime) -> None:
    """Give back claims this worker will not use (they are due again at once)."""
    if ids:
        Notification.objects.filter(pk__in=ids, status=Notification.SENDING, claimed_at=claimed_at).update(
            status=Notification.PENDING, claimed_at=None)


def _record_sent(note: Notification, claimed_at: datetime, at: datetime) -> bool:
    """The row marked sent and its attempt logged: one statement (PostgreSQL), right after
    the SMTP server took the message, so a worker killed mid-batch leaves at most the one
    message in flight to be sent again."""
    if db_connection.vendor != "postgresql":
        updated = Notification.objects.filter(pk=note.pk, status=Notification.SENDING, claimed_at=claimed_at).update(
            status=Notification.SENT, sent_at=at, attempts=note.attempts + 1, last_error="", claimed_at=None)
        DeliveryAttempt.objects.create(notification=note, at=at, ok=True)
        return bool(updated)
    table, attempts = Notification._meta.db_table, DeliveryAttempt._meta.db_table
    with db_connection.cursor() as cursor:
        cursor.execute(
            f"""WITH s AS (UPDATE "{table}" SET status = %s, sent_at = %s, attempts = attempts + 1, last_error = '',
                                  claimed_at = NULL
                           WHERE id = %s AND status = %s AND claimed_at = %s RETURNING id)
                INSERT INTO "{attempts}" (notification_id, at, ok, error) VALUES (%s, %s, true, '')
                RETURNING (SELECT count(*) FROM s)""",
            [Notification.SENT, at, note.pk, Notification.SENDING, claimed_at, note.pk, at],
        )
        return bool(cursor.fetchone()[0])


def _message_for(note: Notification, now: datetime, cache_: dict):
    """The e-mail of ``note``: rendered once per (alert, repeat), or per clinic digest and
    day, in a batch, and addressed to each recipient (the text names no recipient)."""
    if note.alert_id is not None:
        key = (note.alert_id, note.repeat_number)
    elif note.digest_on is not None:
        key = ("digest", note.clinic_id, note.digest_on)
    else:
        return build_email(note, now)
    if key not in cache_:
        cache_[key] = build_email(note, now)
        return cache_[key]
    message = copy.copy(cache_[key])
    message.to = [header_safe(note.recipient)]
    return message


def deliver_emails(now: datetime | None = None, *, budget_seconds: float = BATCH_SECONDS,
                   claim_size: int = CLAIM_BATCH, on_backlog=None) -> BatchResult:
    """Send due e-mails at the speed of the mail server: claim ``claim_size`` at once (any
    number of workers in parallel, each its own claims), render each alert's message once
    for all its recipients, send over one SMTP connection, and record each success in one
    statement. Critical alerts first. Failures, the circuit breaker and cancellations as
    in ``deliver_batch``. ``result.more``: stopped by the budget with work left.
    ``on_backlog``: called once, when a claim comes back full (more workers would help)."""
    fixed = now
    run = _EmailRun(clock=(lambda: fixed) if fixed is not None else timezone.now, started=time.monotonic(),
                    budget=budget_seconds)
    cancel_resolved(run.clock())
    _commit_without_flush(True)
    try:
        while not run.out_of_time():
            claimed_at = run.clock()
            if run.breaker.is_open(claimed_at):
                run.result.skipped_by_breaker.add("email")
                return run.result
            ids = claim_emails(claimed_at, claim_size)
            if not ids:
                return run.result
            if on_backlog is not None and len(ids) == claim_size:
                on_backlog()
                on_backlog = None
            notes = sorted(  # RETURNING has no order: critical first, then by due time
                Notification.objects.filter(pk__in=ids).select_related(
                    "alert__pump__patient", "alert__pump__model", "clinic"),
                key=lambda n: (n.alert is None or n.alert.severity != Severity.CRITICAL, n.next_attempt_at, n.pk))
            if not run.send_claimed(notes, claimed_at):
                return run.result
        run.result.more = True
    finally:
        run.session.close()
        _commit_without_flush(False)
    return run.result


@dataclass
class _EmailRun:
    """One ``deliver_emails`` run: its clock, budget, SMTP connection, breaker, renderings."""

    clock: object
    started: float
    budget: float
    result: BatchResult = field(default_factory=BatchResult)
    session: SmtpSession = field(default_factory=SmtpSession)
    breaker: Breaker = field(default_factory=email_breaker)
    rendered: dict = field(default_factory=dict)  # one rendering per alert and repeat (or digest)
    clean: bool = False  # the breaker's count is cleared (one cache round trip per run of successes)

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started >= self.budget

    def send_claimed(self, notes: list[Notification], claimed_at: datetime) -> bool:
        """Send one claim's notifications; False when the breaker tripped (stop)."""
        held = time.monotonic()
        for index, note in enumerate(notes):
            if time.monotonic() - held >= CLAIM_HOLD_SECONDS or self.out_of_time():
                _release([n.pk for n in notes[index:]], claimed_at)  # the next run (or claim) takes them
                self.result.more = True
                return True
            if not self.send_one(note, claimed_at):
                _release([n.pk for n in notes[index + 1:]], claimed_at)
                return False
        return True

    def send_one(self, note: Notification, claimed_at: datetime) -> bool:
        if note.alert is not None and note.alert.resolved_at is not None:
            Notification.objects.filter(pk=note.pk, status=Notification.SENDING, claimed_at=claimed_at).update(
                status=Notification.CANCELLED, last_error=CANCELLED_RESOLVED, claimed_at=None)
            return True
        at = self.clock()
        try:
            _send_message(_message_for(note, at, self.rendered), self.session,
                          net.Deadline(net.delivery_deadline_seconds()))
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
            _record_failure(note, claimed_at, exc)
            self.result.failed += 1
            self.clean = False
            if _reaches_server(exc):
                if self.breaker.failure(at):
                    self.result.skipped_by_breaker.add("email")
                    return False
            elif isinstance(exc, smtplib.SMTPException):
                self.breaker.success()
            return True
        if not _record_sent(note, claimed_at, at):
            log.warning("notification %s sent, but its claim had been taken over: it may be sent twice", note.pk)
        self.result.sent += 1
        if not self.clean:
            self.breaker.success()
            self.clean = True
        return True


def _commit_without_flush(on: bool) -> None:
    """During a batch the worker's commits (claims, sent marks, failures) do not wait for
    the database's WAL flush (``synchronous_commit = off`` for this session): a sent mark
    then costs a round trip, not a disk flush. What it risks: if the database server
    itself crashes, its last fraction of a second of marks is lost, and those messages
    are sent again; at-least-once, as a worker killed after the send. A killed worker
    loses nothing more than before (its marks were committed)."""
    if db_connection.vendor != "postgresql" or db_connection.in_atomic_block:
        return
    with db_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO OFF" if on else "RESET synchronous_commit")


def _send_message(message, session: SmtpSession, deadline: net.Deadline) -> None:
    with net.cut_at(deadline, session.socket) as cut:
        try:
            conn = session.get()
            conn.open()
            message.connection = conn
            message.send(fail_silently=False)
        except OSError as exc:
            session.close()
            if cut.is_set():
                raise TimeoutError(f"no answer within the {deadline.seconds:g}-second deadline") from exc
            raise


# --------------------------------------------------------------------------- locks


@contextmanager
def batch_lock(name: str, ttl_seconds: int = BATCH_SECONDS + 60) -> Iterator[bool]:
    """One batch per channel (or webhook endpoint) at a time; others exit at once.

    PostgreSQL: a session advisory lock, released by the database when the worker's
    connection ends (a killed worker leaves no lock behind). Other databases: a cache key
    with a time to live."""
    if db_connection.vendor == "postgresql":
        key = _lock_key(name)
        with db_connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_CLASS, key])
            got = cursor.fetchone()[0]
        try:
            yield got
        finally:
            if got:
                with db_connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_CLASS, key])
        return
    cache_key = f"pumps.outbox.lock:{name}"
    got = cache.add(cache_key, 1, timeout=ttl_seconds)
    try:
        yield got
    finally:
        if got:
            cache.delete(cache_key)


_LOCK_CLASS = 0x6F757478  # "outx"


def _lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF
