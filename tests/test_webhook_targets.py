"""Where a webhook may point (SSRF): https only, no credentials, no loopback, private,
link-local (cloud metadata), multicast, reserved or unspecified address unless the
operator allows the network (WEBHOOK_ALLOWED_NETWORKS), checked at registration and at
every send on the address actually connected to; redirects never followed; and one
overall deadline per attempt.

No test sends traffic anywhere but to loopback servers it starts: names are resolved by a
stub, and refused addresses are never connected to."""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal as D
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pumps import net, outbox
from pumps import services as s
from pumps.alerting.sweep import sweep
from pumps.models import DeliveryAttempt, Notification, Program
from tests.api_support import API, token_client
from tests.conftest import CHICAGO
from tests.factories import make_user

LRA = datetime(2026, 4, 18, 23, 20, tzinfo=CHICAGO)
PUBLIC = "93.184.215.14"  # a public address: resolved to by the stub, never connected to
REFUSED_TAIL = ("webhooks are not sent to loopback, private, link-local, multicast or reserved addresses "
                "unless the operator allows the network (WEBHOOK_ALLOWED_NETWORKS).")


class Receiver:
    """HTTP on 127.0.0.1: records POSTs (with their Host header) and answers ``status``
    (with ``location`` for a redirect)."""

    def __init__(self, status=200, location=None):
        self.requests = []
        self.status = status
        self.location = location
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/hooks/pumps"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    started = []

    def start(**kwargs):
        r = Receiver(**kwargs)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


class StubResolver:
    """Stands in for DNS: name -> addresses; records each lookup."""

    def __init__(self, **names):
        self.names = {k.replace("_", "."): v for k, v in names.items()}
        self.lookups = []

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        self.lookups.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port) if ":" not in a else (a, port, 0, 0)) for a in self.names[host]]


@pytest.fixture
def dns(monkeypatch):
    stub = StubResolver()
    monkeypatch.setattr(net, "getaddrinfo", stub)
    return stub


@pytest.fixture
def no_allowed_networks(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ""


@pytest.fixture
def loopback_allowed(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = "127.0.0.0/8"


def put(api, url):
    return api.put(f"{API}/webhook/", {"url": url}, format="json")


# ------------------------------------------------------------------ registration


@pytest.mark.parametrize(("url", "message"), [
    ("http://127.0.0.1:8940/", f"127.0.0.1 is a loopback address: {REFUSED_TAIL}"),
    ("http://169.254.169.254/latest/meta-data/", f"169.254.169.254 is a link-local address: {REFUSED_TAIL}"),
    ("http://10.0.0.1/", f"10.0.0.1 is a private address: {REFUSED_TAIL}"),
    ("http://[::1]:8940/", f"::1 is a loopback address: {REFUSED_TAIL}"),
    ("https://[::ffff:127.0.0.1]/", f"::ffff:127.0.0.1 is a loopback address: {REFUSED_TAIL}"),
    ("https://0.0.0.0/", f"0.0.0.0 is an unspecified address: {REFUSED_TAIL}"),
    ("https://224.0.0.251/", f"224.0.0.251 is a multicast address: {REFUSED_TAIL}"),
    ("https://240.0.0.1/", f"240.0.0.1 is a reserved address: {REFUSED_TAIL}"),
    ("https://100.64.0.1/", f"100.64.0.1 is a non-public address: {REFUSED_TAIL}"),
    ("https://user:pass@127.0.0.1:8940/", "The URL may not contain a user name or password: deliveries are "
                                          "authenticated by their signature (X-Clinic-Signature)."),
    ("https://user@hooks.example.org/", "The URL may not contain a user name or password: deliveries are "
                                        "authenticated by their signature (X-Clinic-Signature)."),
    ("ftp://hooks.example.org/", "Use an https URL."),
    ("https://nowhere.example.test/", "The host name nowhere.example.test could not be resolved."),
])
def test_registration_refuses_what_could_reach_inside(clinic, dns, no_allowed_networks, url, message):
    api, client = token_client(clinic, write=True, name="EHR")
    response = put(api, url)
    assert (response.status_code, response.json()) == (400, {"url": [message]})
    client.refresh_from_db()
    assert client.webhook_url == ""
    assert dns.lookups == (["nowhere.example.test"] if "nowhere" in url else [])  # literals: no DNS


def test_registration_refuses_a_name_when_any_of_its_addresses_is_private(clinic, dns, no_allowed_networks):
    dns.names["hooks.example.org"] = [PUBLIC, "10.1.2.3"]
    dns.names["plain.example.org"] = [PUBLIC]
    dns.names["good.example.org"] = [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"]
    api, _ = token_client(clinic, write=True, name="EHR")
    assert put(api, "https://hooks.example.org/in").json() == {
        "url": [f"hooks.example.org resolves to 10.1.2.3, which is a private address: {REFUSED_TAIL}"]}
    assert put(api, "http://plain.example.org/in").json() == {
        "url": ["Use an https URL: plain http is allowed only to networks the operator allows "
                "(WEBHOOK_ALLOWED_NETWORKS)."]}
    response = put(api, "https://good.example.org/in")
    assert response.status_code == 200 and response.json()["url"] == "https://good.example.org/in"


def test_allowed_networks_admit_their_addresses_over_plain_http(clinic, dns, settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = "127.0.0.0/8, 10.20.0.0/16"
    api, _ = token_client(clinic, write=True, name="EHR")
    assert put(api, "http://127.0.0.1:8940/in").status_code == 200
    assert put(api, "http://10.20.3.4/in").status_code == 200
    assert put(api, "http://10.21.0.1/in").json() == {"url": [f"10.21.0.1 is a private address: {REFUSED_TAIL}"]}
    assert put(api, "http://169.254.169.254/latest/meta-data/").status_code == 400


def test_allowed_networks_read_from_a_list_or_the_environment(settings, monkeypatch):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8", "fd00::/8"]
    assert [str(n) for n in net.allowed_networks()] == ["127.0.0.0/8", "fd00::/8"]
    del settings.WEBHOOK_ALLOWED_NETWORKS
    monkeypatch.setenv("WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/8,")
    assert [str(n) for n in net.allowed_networks()] == ["10.0.0.0/8"]
    monkeypatch.delenv("WEBHOOK_ALLOWED_NETWORKS")
    assert net.allowed_networks() == []


# ----------------------------------------------------------------------- sending


@pytest.fixture
def alarm_pump(pump, clinic, prescriber):
    s.record_refill(
        pump=pump, performed_at=datetime(2026, 2, 2, 9, tzinfo=CHICAGO), added_volume_ml=D(36),
        concentration_mcg_per_ml=D(1000), actor=s.Actor(prescriber), now=datetime(2026, 2, 2, 10, tzinfo=CHICAGO),
        program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)),
    )
    second = make_user("dr_two", clinic, "prescriber")
    s.verify_program(program=Program.objects.get(), actor=s.Actor(second), now=datetime(2026, 2, 2, 11, tzinfo=CHICAGO))
    return pump


def low_reservoir_webhook() -> Notification:
    now = LRA + timedelta(minutes=40)
    sweep(now)
    outbox.deliver_due(now)
    return Notification.objects.get(channel="webhook", kind="low_reservoir")


def test_a_redirect_is_not_followed_and_is_a_failure_to_retry(alarm_pump, clinic, receivers, loopback_allowed):
    target = receivers()
    redirecting = receivers(status=302, location=target.url)
    api, _ = token_client(clinic, write=True, name="EHR")
    assert put(api, redirecting.url).status_code == 200
    note = low_reservoir_webhook()
    assert (note.status, note.attempts) == ("pending", 1)
    assert note.last_error == f"WebhookError: HTTP 302 from {redirecting.url}: redirects are not followed"
    assert list(DeliveryAttempt.objects.filter(notification=note).values_list("ok", "error")) == [
        (False, note.last_error)]
    assert len(redirecting.requests) == 2  # low_reservoir and refill_overdue, each once
    assert target.requests == []


def test_a_name_that_resolves_to_loopback_at_send_time_is_refused(alarm_pump, clinic, receivers, dns,
                                                                   no_allowed_networks):
    """DNS rebinding: public at registration, loopback when the alert is sent."""
    receiver = receivers()
    dns.names["hooks.example.org"] = [PUBLIC]
    api, _ = token_client(clinic, write=True, name="EHR")
    url = f"https://hooks.example.org:{receiver.port}/hooks/pumps"
    assert put(api, url).status_code == 200
    dns.names["hooks.example.org"] = ["127.0.0.1"]
    note = low_reservoir_webhook()
    assert (note.status, note.attempts) == ("pending", 1)
    assert note.last_error == (f"WebhookError: refused {url}: hooks.example.org resolves to 127.0.0.1, which is a "
                               f"loopback address: {REFUSED_TAIL}")
    assert receiver.requests == []
    assert dns.lookups.count("hooks.example.org") == 3  # registration, then each of the two sends


def test_the_sender_connects_to_the_checked_address_with_the_name_as_host(alarm_pump, clinic, receivers, dns,
                                                                          loopback_allowed):
    receiver = receivers()
    dns.names["hooks.internal.example"] = ["127.0.0.1"]
    api, _ = token_client(clinic, write=True, name="EHR")
    url = f"http://hooks.internal.example:{receiver.port}/hooks/pumps?site=north"
    assert put(api, url).status_code == 200
    note = low_reservoir_webhook()
    assert note.status == "sent"
    hosts = {headers["Host"] for headers, _ in receiver.requests}
    assert hosts == {f"hooks.internal.example:{receiver.port}"}


class DripServer:
    """Accepts, reads the request, then answers one byte every ``every`` seconds
    (a status line that never ends in time)."""

    def __init__(self, every: float):
        self.every = every
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/slow"
        self.connections = 0
        self.stopping = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        with conn:
            conn.settimeout(1)
            try:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 1000:
                    if self.stopping.wait(self.every):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def close(self):
        self.stopping.set()
        self.sock.close()


def test_an_endpoint_dripping_bytes_is_cut_at_the_overall_deadline(alarm_pump, clinic, loopback_allowed, settings):
    settings.DELIVERY_DEADLINE_SECONDS = 2
    drip = DripServer(every=0.3)  # each read is quick: only an overall deadline stops it
    try:
        api, _ = token_client(clinic, write=True, name="EHR")
        assert put(api, drip.url).status_code == 200
        now = LRA + timedelta(minutes=40)
        sweep(now)
        started = time.monotonic()
        result = outbox.deliver_batch(now, channel="webhook")
        elapsed = time.monotonic() - started
    finally:
        drip.close()
    # two notifications (low_reservoir, refill_overdue), each cut at 2 s
    assert (result.sent, result.failed) == (0, 2)
    assert 3.8 <= elapsed <= 6.5, elapsed
    for note in Notification.objects.filter(channel="webhook"):
        assert (note.status, note.attempts) == ("pending", 1)
        assert note.last_error == f"WebhookError: no answer from {drip.url} within the 2-second deadline"
