"""Webhooks: an API client's URL receives each alert as JSON, signed with HMAC-SHA256.

Where a webhook may go (https, no credentials, no private addresses unless allowed) is
``pumps.net``; every send checks it again on the addresses it connects to."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import ssl
from datetime import datetime

from . import net
from .alerting.rules import ADVICE
from .emails import pump_url
from .models import Alert, Notification


class WebhookError(Exception):
    pass


class WebhookGone(WebhookError):
    """The API client was revoked or removed its webhook: nothing to retry."""


def webhook_payload(alert: Alert, repeat_number: int) -> dict:
    pump = alert.pump
    tz = alert.clinic.tz
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "severity": alert.severity,
        "clinic": alert.clinic.code,
        "pump": pump.pk if pump else None,
        "patient": pump.patient_id if pump else None,
        "mrn": pump.patient.mrn if pump else None,
        "episode": alert.episode,
        "message": alert.message,
        "due_at": alert.due_at.astimezone(tz).isoformat() if alert.due_at else None,
        "created_at": alert.created_at.astimezone(tz).isoformat(),
        "repeat": repeat_number,
        "escalated": alert.escalated_at is not None,
        "advice": ADVICE[alert.kind],
        "url": pump_url(pump) if pump else None,
    }


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``<timestamp>.<body>`` with the client's secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def post_webhook(note: Notification, now: datetime, deadline: net.Deadline | None = None) -> None:
    """POST the alert as JSON, signed; any answer but 2xx is a failure to retry.

    The URL is checked again here (``net.vet``): resolved once, the addresses checked, and
    the connection made to a checked address, with the host name as ``Host`` and TLS SNI.
    Redirects are never followed (a 3xx is a failure). The whole attempt (resolution,
    connect, TLS, send, the answer's status line and headers) ends at ``deadline``."""
    client = note.api_client
    if client is None or client.is_revoked or not client.webhook_url:
        raise WebhookGone("the API client has no webhook any more")
    deadline = deadline or net.Deadline(net.delivery_deadline_seconds())
    url = client.webhook_url
    try:
        target, addresses = net.vet(url, timeout=deadline.remaining())
    except net.TargetRefused as exc:
        raise WebhookError(f"refused {url}: {exc}") from None
    body = json.dumps(webhook_payload(note.alert, note.repeat_number), separators=(",", ":")).encode()
    timestamp = str(int(now.timestamp()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "pump-clinic-webhook/1",
        "X-Clinic-Alert-Kind": note.alert.kind,
        "X-Clinic-Alert-Severity": note.alert.severity,
        "X-Clinic-Alert-Id": str(note.alert.pk),
        "X-Clinic-Delivery": str(note.pk),
        "X-Clinic-Timestamp": timestamp,
        "X-Clinic-Signature": sign_webhook(client.webhook_secret, timestamp, body),
    }
    status = _post(target, addresses, body, headers, deadline)
    if 300 <= status < 400:
        raise WebhookError(f"HTTP {status} from {url}: redirects are not followed")
    if not 200 <= status < 300:
        raise WebhookError(f"HTTP {status} from {url}")


def _post(target: net.Target, addresses: list, body: bytes, headers: dict, deadline: net.Deadline) -> int:
    """One POST to the first checked address that accepts a connection; returns the status."""
    if target.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            target.host, target.port, timeout=deadline.remaining(), context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=deadline.remaining())

    def connect_to_checked_address(_address, timeout=None, source_address=None):
        last: OSError | None = None
        for address in addresses:
            try:
                return socket.create_connection((str(address), target.port), timeout=deadline.remaining() or 0.001)
            except OSError as exc:
                last = exc
        raise last or OSError("no address to connect to")

    conn._create_connection = connect_to_checked_address  # the host name stays for Host and SNI
    try:
        with net.cut_at(deadline, lambda: conn.sock) as cut:
            try:
                conn.request("POST", target.path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status  # the body is not read: the status is the answer
            except (OSError, http.client.HTTPException) as exc:
                if cut.is_set() or deadline.passed:
                    raise WebhookError(
                        f"no answer from {target.url} within the {deadline.seconds:g}-second deadline"
                    ) from None
                raise WebhookError(f"{exc.__class__.__name__} from {target.url}: {exc}") from None
    finally:
        conn.close()
