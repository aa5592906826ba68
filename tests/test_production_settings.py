"""Production settings (README, Security): ``check --deploy`` clean; over HTTPS every answer carries
HSTS, nosniff, X-Frame-Options DENY and a Content-Security-Policy without inline scripts;
plain HTTP is redirected; the session and CSRF cookies are Secure; passwords are hashed
with Argon2.

Settings are read at import time, so everything here runs in a subprocess under the
production environment (``DJANGO_DEBUG=false``, a 60-character secret key, the allowed
host), with its own SQLite database and ``var/`` under ``tmp_path``.

Login throttling (django-axes: the sixth sign-in after five failures is refused with 429,
even with the right password) is exercised by
``tests/test_pages_auth.py::test_login_is_throttled_after_five_failures``; here we only
check that production keeps it switched on with the same limit.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOST = "pumps.example.org"
HSTS = "max-age=31536000; includeSubDomains; preload"
CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}


def production_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_URL", "SITE_URL", "CELERY_", "EMAIL_URL", "AXES_", "CACHE_URL"))
    }
    alphabet = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
    key = "".join(secrets.choice(alphabet) for _ in range(60))
    env.update(
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=key,
        DJANGO_ALLOWED_HOSTS=HOST,
        SITE_URL=f"https://{HOST}",
        PUMPCLINIC_VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        LOG_LEVEL="CRITICAL",
    )
    return env


def collectstatic(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "--verbosity", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_is_clean(tmp_path):
    env = production_env(tmp_path)
    collectstatic(env)  # as a deployment does (the Dockerfile, at build time)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."


# Fail fast: production settings refuse to run without collected static files, a secret
# key or allowed hosts (clinic/checks.py), in manage.py commands and in gunicorn alike.
@pytest.mark.parametrize(("change", "expected"), [
    ({}, "python manage.py collectstatic --no-input"),
    ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY is not set"),
    ({"DJANGO_ALLOWED_HOSTS": ""}, "DJANGO_ALLOWED_HOSTS is empty"),
], ids=["no-static", "no-secret-key", "no-allowed-hosts"])
def test_production_refuses_to_run_half_configured(tmp_path, change, expected):
    env = production_env(tmp_path)
    if change:
        collectstatic(env)
    for name, value in change.items():
        if value is None:
            env.pop(name)
        else:
            env[name] = value
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


def test_gunicorn_refuses_to_start_without_collected_static_files(tmp_path):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    if not gunicorn.exists():
        pytest.skip("gunicorn is not installed next to this Python")
    result = subprocess.run(
        [str(gunicorn), "clinic.wsgi", "--bind", "127.0.0.1:0", "--workers", "1"],
        cwd=ROOT, env=production_env(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "python manage.py collectstatic --no-input" in result.stderr, result.stderr


# The script run under production settings: it prepares the database and the static
# manifest as a deployment does, then makes requests and prints what it saw as JSON.
PROBE = r"""
import json
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from pumps.models import SweepRun

call_command("collectstatic", interactive=False, verbosity=0)  # before migrate, which runs the checks
call_command("migrate", verbosity=0)
SweepRun.objects.create(started_at=timezone.now(), finished_at=timezone.now())  # alerting is healthy
user = get_user_model().objects.create_user("nina", password="correct horse battery")

HEADERS = ("Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy",
           "Location")

def seen(response):
    return {"status": response.status_code, "headers": {h: response.get(h) for h in HEADERS}}

def cookie(morsel):
    return {"secure": morsel["secure"] is True, "httponly": morsel["httponly"] is True,
            "samesite": morsel["samesite"]}

out = {}
client = Client(HTTP_HOST="__HOST__")
out["health_secure"] = seen(client.get("/health/", secure=True))
out["health_secure_body"] = client.get("/health/", secure=True).json()["status"]
out["health_forwarded"] = seen(client.get("/health/", HTTP_X_FORWARDED_PROTO="https"))
out["health_http"] = seen(client.get("/health/"))

browser = Client(HTTP_HOST="__HOST__", enforce_csrf_checks=True)
form = browser.get("/accounts/login/", secure=True)
out["login_page"] = seen(form)
out["login_page_cookies"] = {name: cookie(m) for name, m in form.cookies.items()}
signed_in = browser.post(
    "/accounts/login/",
    {"username": "nina", "password": "correct horse battery", "csrfmiddlewaretoken": form.cookies["csrftoken"].value},
    secure=True, HTTP_REFERER="https://__HOST__/accounts/login/",
)
out["sign_in"] = seen(signed_in)
out["sign_in_cookies"] = {name: cookie(m) for name, m in signed_in.cookies.items()}
out["worklist_after_sign_in"] = browser.get("/", secure=True).status_code

out["password_prefix"] = user.password.split("$")[0] + "$" + user.password.split("$")[1]
out["first_hasher"] = settings.PASSWORD_HASHERS[0]
out["axes"] = [settings.AXES_ENABLED, settings.AXES_FAILURE_LIMIT, settings.MIDDLEWARE[-1],
               "axes" in settings.INSTALLED_APPS]
out["worklist_cache_control"] = browser.get("/", secure=True)["Cache-Control"]
out["throttling"] = [settings.TRUSTED_PROXY_COUNT, settings.AXES_CLIENT_IP_CALLABLE,
                     settings.AXES_LOCKOUT_PARAMETERS, settings.SESSION_IDLE_SECONDS]
print("PROBE " + json.dumps(out))
""".replace("__HOST__", HOST)


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> dict:
    tmp_path = tmp_path_factory.mktemp("production")
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", PROBE],
        cwd=ROOT, env=production_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("PROBE ")]
    assert len(line) == 1, result.stdout + result.stderr
    return json.loads(line[0][len("PROBE "):])


def parse_csp(value: str) -> dict[str, list[str]]:
    policy = {}
    for directive in value.split(";"):
        name, *sources = directive.split()
        assert name not in policy, f"{name} twice"
        policy[name] = sources
    return policy


def assert_secure_headers(seen: dict) -> None:
    headers = seen["headers"]
    assert headers["Strict-Transport-Security"] == HSTS
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    policy = parse_csp(headers["Content-Security-Policy"])
    assert policy == CSP
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]


@pytest.mark.parametrize("key", ["health_secure", "health_forwarded"])
def test_health_over_https_carries_the_security_headers(production, key):
    assert production[key]["status"] == 200
    assert_secure_headers(production[key])
    assert production["health_secure_body"] == "ok"


def test_plain_http_is_redirected_to_https(production):
    seen = production["health_http"]
    assert seen["status"] == 301
    assert seen["headers"]["Location"] == f"https://{HOST}/health/"
    assert seen["headers"]["Strict-Transport-Security"] is None  # HSTS only over HTTPS


def test_sign_in_page_and_cookies_are_secure(production):
    assert production["login_page"]["status"] == 200
    assert_secure_headers(production["login_page"])
    assert production["login_page_cookies"] == {"csrftoken": {"secure": True, "httponly": False, "samesite": "Lax"}}
    assert production["sign_in"]["status"] == 302
    assert production["sign_in"]["headers"]["Location"] == "/"
    assert_secure_headers(production["sign_in"])
    assert production["sign_in_cookies"] == {
        "csrftoken": {"secure": True, "httponly": False, "samesite": "Lax"},
        "sessionid": {"secure": True, "httponly": True, "samesite": "Lax"},
    }
    assert production["worklist_after_sign_in"] == 200


def test_passwords_are_hashed_with_argon2(production):
    assert production["first_hasher"] == "django.contrib.auth.hashers.Argon2PasswordHasher"
    assert production["password_prefix"] == "argon2$argon2id"


def test_login_throttling_stays_on_in_production(production):
    assert production["axes"] == [True, 5, "axes.middleware.AxesMiddleware", True]


@pytest.mark.parametrize(("value", "expected"), [(None, [0, False]), ("300", [300, True])])
def test_database_connections_are_kept_for_database_conn_max_age_seconds(tmp_path, value, expected):
    env = production_env(tmp_path)
    if value is not None:
        env["DATABASE_CONN_MAX_AGE"] = value
    script = ("import json; from django.conf import settings; d = settings.DATABASES['default']; "
              "print(json.dumps([d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS']]))")
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


def test_patient_pages_are_not_stored_and_throttles_key_on_the_client_address(production):
    assert "no-store" in production["worklist_cache_control"]
    assert production["throttling"] == [0, "clinic.throttling.client_ip", [["username", "ip_address"]], 1800]
