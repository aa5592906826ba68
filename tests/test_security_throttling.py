"""Throttling that cannot be turned against staff.

- Sign-in lock-out (django-axes) keys on the username *and* the real client address
  behind ``TRUSTED_PROXY_COUNT`` proxies: five bad passwords for "nina" from address X do
  not lock nina out at address Y, and a spoofed X-Forwarded-For is ignored when no proxy
  is trusted.
- Password-reset requests: at most 3 e-mails an hour per address, 10 per client address;
  the page answers the same either way.
- Bad bearer tokens: 20 failures a minute per client address get 401, then 429 with
  Retry-After; a valid token from another address is unaffected.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.core import mail
from django.test import Client, RequestFactory

from clinic.throttling import client_ip
from tests.api_support import token_client
from tests.factories import make_clinic, make_user

pytestmark = pytest.mark.django_db

X, Y, PROXY = "203.0.113.7", "198.51.100.20", "10.0.0.2"


@pytest.fixture(autouse=True)
def mid_window():
    """The counters use fixed windows (a minute, an hour): the clock stays in one."""
    with time_machine.travel(datetime(2026, 6, 1, 12, 20, 30, tzinfo=UTC), tick=False):
        yield


@pytest.fixture
def nina(db):
    clinic = make_clinic(code="north", name="North", timezone="America/Chicago")
    user = make_user("nina", clinic, "nurse")
    user.email = "nina@north.example.org"
    user.save()
    return user


# ------------------------------------------------------------------ the client address


@pytest.mark.parametrize(("count", "remote", "forwarded", "expected"), [
    (0, PROXY, None, PROXY),
    (0, X, "1.2.3.4", X),  # no proxy trusted: the header is the client's own, ignored
    (1, PROXY, X, X),
    (1, PROXY, f"1.2.3.4, {X}", X),  # entries left of the proxy's are the client's: ignored
    (2, PROXY, f"1.2.3.4, {X}, 10.0.0.1", X),
    (1, X, None, X),  # came around the proxy: the connection's address
    (1, PROXY, "not-an-address", PROXY),
    (1, PROXY, "[2001:db8::1]:443", "2001:db8::1"),
])
def test_client_ip(settings, count, remote, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = count
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    assert client_ip(RequestFactory().get("/", **meta)) == expected


def sign_in(password: str, remote: str, forwarded: str | None = None):
    headers = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    return Client().post("/accounts/login/", {"username": "nina", "password": password}, **headers)


def test_a_stranger_behind_the_proxy_cannot_lock_nina_out(nina, settings):
    settings.AXES_ENABLED = True
    settings.TRUSTED_PROXY_COUNT = 1
    statuses = [sign_in("wrong", PROXY, X).status_code for _ in range(5)]
    assert statuses[-1] == 429  # the stranger is locked out...
    assert sign_in("correct horse battery", PROXY, X).status_code == 429
    # ...nina, through the same proxy from her own address, signs in.
    assert sign_in("correct horse battery", PROXY, Y).status_code == 302


def test_a_spoofed_forwarded_for_is_ignored_without_a_trusted_proxy(nina, settings):
    settings.AXES_ENABLED = True
    settings.TRUSTED_PROXY_COUNT = 0
    # An attacker rotating X-Forwarded-For values is still one address: locked after five.
    statuses = [sign_in("wrong", X, f"10.9.9.{i}").status_code for i in range(6)]
    assert statuses[4:] == [429, 429]
    assert sign_in("correct horse battery", X, "192.0.2.1").status_code == 429
    # Nina at her own address is not affected.
    assert sign_in("correct horse battery", Y).status_code == 302


# ------------------------------------------------------------------ password reset


def test_reset_requests_for_one_address_send_at_most_three_emails(nina, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    answers = set()
    for i in range(20):
        response = Client().post(
            "/accounts/password_reset/", {"email": "nina@north.example.org"}, REMOTE_ADDR=f"192.0.2.{i + 1}"
        )
        answers.add((response.status_code, response["Location"]))
    assert answers == {(302, "/accounts/password_reset/done/")}  # the same answer every time
    assert len(mail.outbox) == 3


def test_reset_requests_from_one_client_address_send_at_most_ten_emails(nina, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    clinic = nina.memberships.get().clinic
    for i in range(20):
        user = make_user(f"staff{i}", clinic, "nurse")
        user.email = f"staff{i}@north.example.org"
        user.save()
    for i in range(20):
        response = Client().post("/accounts/password_reset/", {"email": f"staff{i}@north.example.org"}, REMOTE_ADDR=X)
        assert response.status_code == 302
    assert len(mail.outbox) == 10
    # Another address is not affected.
    Client().post("/accounts/password_reset/", {"email": "nina@north.example.org"}, REMOTE_ADDR=Y)
    assert len(mail.outbox) == 11


# ------------------------------------------------------------------ bearer tokens


def test_bad_bearer_tokens_are_throttled_per_client_address(nina, settings):
    settings.TRUSTED_PROXY_COUNT = 0
    good, _ = token_client(nina.memberships.get().clinic)
    attacker = Client()
    statuses = []
    for i in range(700):
        response = attacker.get("/api/v1/patients/", HTTP_AUTHORIZATION=f"Bearer pc_guess{i}", REMOTE_ADDR=X)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response["Retry-After"]) >= 1
            break
    assert statuses[:20] == [401] * 20  # bad tokens still get 401 until throttled
    assert statuses[20] == 429
    # Further bad tokens, and the FHIR endpoints, from that address: 429.
    assert attacker.get("/api/v1/patients/", HTTP_AUTHORIZATION="Bearer pc_x", REMOTE_ADDR=X).status_code == 429
    assert attacker.get("/fhir/r4/Patient", HTTP_AUTHORIZATION="Bearer pc_x", REMOTE_ADDR=X).status_code == 429
    # A valid token from another address is unaffected.
    assert good.get("/api/v1/patients/", REMOTE_ADDR=Y).status_code == 200


def test_bearer_throttle_keys_on_the_address_behind_the_proxy(nina, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    good, _ = token_client(nina.memberships.get().clinic)
    for i in range(21):
        Client().get("/api/v1/patients/", HTTP_AUTHORIZATION=f"Bearer pc_{i}", REMOTE_ADDR=PROXY,
                     HTTP_X_FORWARDED_FOR=X)
    last = Client().get("/api/v1/patients/", HTTP_AUTHORIZATION="Bearer pc_z", REMOTE_ADDR=PROXY,
                        HTTP_X_FORWARDED_FOR=X)
    assert last.status_code == 429
    assert good.get("/api/v1/patients/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=Y).status_code == 200
