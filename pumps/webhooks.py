"""Webhooks: an API client's URL receives each alert as JSON, signed with HMAC-SHA256."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from datetime import datetime

from .alerts import ADVICE
from .emails import pump_url
from .models import Alert, Notification

WEBHOOK_TIMEOUT_SECONDS = 10


class WebhookError(Exception):
    pass


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


def post_webhook(note: Notification, now: datetime) -> None:
    """POST the alert as JSON, signed; any answer but 2xx is a failure to retry."""
    client = note.api_client
    if client is None or client.is_revoked or not client.webhook_url:
        raise WebhookError("the API client has no webhook any more")
    body = json.dumps(webhook_payload(note.alert, note.repeat_number), separators=(",", ":")).encode()
    timestamp = str(int(now.timestamp()))
    request = urllib.request.Request(
        client.webhook_url, data=body, method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "pump-clinic-webhook/1",
            "X-Clinic-Alert-Kind": note.alert.kind,
            "X-Clinic-Alert-Severity": note.alert.severity,
            "X-Clinic-Alert-Id": str(note.alert.pk),
            "X-Clinic-Delivery": str(note.pk),
            "X-Clinic-Timestamp": timestamp,
            "X-Clinic-Signature": sign_webhook(client.webhook_secret, timestamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"HTTP {exc.code} from {client.webhook_url}") from None
    if not 200 <= status < 300:
        raise WebhookError(f"HTTP {status} from {client.webhook_url}")

