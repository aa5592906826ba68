"""Webhooks: each alert POSTed as signed JSON to the API client's URL, through the same
outbox and retries as e-mails, tested against a real HTTP server on loopback (allowed
here by WEBHOOK_ALLOWED_NETWORKS=127.0.0.0/8, as an operator would allow an internal
network). Where a webhook may not point: tests/test_webhook_targets.py."""

import hashlib
import hmac
import json
import threading
from datetime import datetime, timedelta
from decimal import Decimal as D
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pumps import outbox
from pumps import services as s
from pumps.alerting.sweep import sweep
from pumps.models import DeliveryAttempt, Notification, Program
from tests.api_support import API, token_client
from tests.conftest import CHICAGO

LRA = datetime(2026, 4, 18, 23, 20, tzinfo=CHICAGO)


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs and answers ``status``."""

    def __init__(self):
        self.requests = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/pumps"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def loopback_allowed(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = "127.0.0.0/8"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def alarm_pump(pump, clinic, prescriber):
    """Refilled 2026-02-02 with a program (entered and verified by two prescribers): the
    low-reservoir alarm is LRA."""
    from tests.factories import make_user

    s.record_refill(
        pump=pump, performed_at=datetime(2026, 2, 2, 9, tzinfo=CHICAGO), added_volume_ml=D(36),
        concentration_mcg_per_ml=D(1000), actor=s.Actor(prescriber), now=datetime(2026, 2, 2, 10, tzinfo=CHICAGO),
        program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)),
    )
    second = make_user("dr_two", clinic, "prescriber")
    s.verify_program(program=Program.objects.get(), actor=s.Actor(second), now=datetime(2026, 2, 2, 11, tzinfo=CHICAGO))
    return pump


def register(clinic, url):
    api, client = token_client(clinic, write=True, name="EHR")
    response = api.put(f"{API}/webhook/", {"url": url}, format="json")
    assert response.status_code == 200
    return api, client, response.json()["secret"]


def test_alert_is_posted_signed_to_the_registered_url(alarm_pump, clinic, receiver):
    api, client, secret = register(clinic, receiver.url)
    assert len(secret) == 64
    now = LRA + timedelta(minutes=40)
    sweep(now)
    outbox.deliver_due(now)
    posted = {json.loads(body)["kind"]: (headers, body) for headers, body in receiver.requests}
    assert set(posted) == {"low_reservoir", "refill_overdue"}
    headers, body = posted["low_reservoir"]
    payload = json.loads(body)
    assert payload["severity"] == "critical"
    assert payload["pump"] == alarm_pump.pk and payload["mrn"] == "MRN001"
    assert payload["due_at"] == "2026-04-18T23:20:00-05:00"
    assert payload["url"] == f"https://pumps.example.org/pumps/{alarm_pump.pk}/"
    assert "Garcia" not in body.decode()
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Clinic-Alert-Kind"] == "low_reservoir"
    assert headers["X-Clinic-Timestamp"] == str(int(now.timestamp()))
    expected = hmac.new(secret.encode(), headers["X-Clinic-Timestamp"].encode() + b"." + body, hashlib.sha256)
    assert headers["X-Clinic-Signature"] == f"sha256={expected.hexdigest()}"
    # a second sweep and delivery post nothing more
    sweep(now + timedelta(minutes=5))
    outbox.deliver_due(now + timedelta(minutes=5))
    assert len(receiver.requests) == 2


def test_failing_endpoint_is_retried_through_the_outbox(alarm_pump, clinic, receiver):
    register(clinic, receiver.url)
    receiver.status = 503
    now = LRA + timedelta(minutes=40)
    sweep(now)
    outbox.deliver_due(now)
    note = Notification.objects.get(channel="webhook", kind="low_reservoir")
    assert (note.status, note.attempts) == ("pending", 1)
    assert note.last_error == f"WebhookError: HTTP 503 from {receiver.url}"
    receiver.status = 204
    outbox.deliver_due(now + timedelta(minutes=1))
    note.refresh_from_db()
    assert note.status == "sent"
    assert list(DeliveryAttempt.objects.filter(notification=note).values_list("ok", flat=True)) == [False, True]
    assert [json.loads(b)["kind"] for _, b in receiver.requests].count("low_reservoir") == 2


def test_webhook_registration_api(clinic, receiver):
    api, client, secret = register(clinic, receiver.url)
    assert api.get(f"{API}/webhook/").json() == {"url": receiver.url}
    assert api.put(f"{API}/webhook/", {"url": "not a url"}, format="json").json() == {"url": ["Enter a valid URL."]}
    assert api.delete(f"{API}/webhook/").status_code == 204
    client.refresh_from_db()
    assert client.webhook_url == "" and client.webhook_secret == ""
    read_only, _ = token_client(clinic, write=False, name="Reader")
    assert read_only.put(f"{API}/webhook/", {"url": receiver.url}, format="json").status_code == 403


def test_revoked_client_gets_no_more_webhooks(alarm_pump, clinic, receiver):
    _, client, _ = register(clinic, receiver.url)
    client.revoke()
    now = LRA + timedelta(minutes=40)
    sweep(now)
    outbox.deliver_due(now)
    assert receiver.requests == []
    assert not Notification.objects.filter(channel="webhook").exists()
