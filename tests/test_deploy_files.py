"""The deployment files: the production compose shape (README, Two commands and Configuration), the image, the Makefile
and CI entry points, and ``manage.py check --deploy`` under production settings."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("web", "worker", "beat")
APP_ENV = (
    "DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DJANGO_ALLOWED_HOSTS", "SITE_URL",
    "EMAIL_URL",
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def command_text(service: dict) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def test_compose_has_the_production_services(compose):
    services = compose["services"]
    assert set(services) == {"db", "redis", "web", "worker", "beat"}
    assert services["db"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"


def test_web_worker_and_beat_share_one_image_built_from_the_dockerfile(compose):
    services = compose["services"]
    images = {services[name]["image"] for name in APP_SERVICES}
    builds = {services[name]["build"] for name in APP_SERVICES}
    assert len(images) == 1 and len(builds) == 1
    assert builds == {"."}
    assert (ROOT / "Dockerfile").is_file()


def test_web_migrates_then_serves_with_gunicorn(compose):
    command = command_text(compose["services"]["web"])
    assert "manage.py migrate" in command
    assert "gunicorn clinic.wsgi" in command
    assert command.index("manage.py migrate") < command.index("gunicorn clinic.wsgi")
    assert compose["services"]["web"]["depends_on"]["db"]["condition"] == "service_healthy"


def test_worker_and_beat_run_the_celery_app(compose):
    assert command_text(compose["services"]["worker"]).startswith("celery -A clinic worker")
    assert command_text(compose["services"]["beat"]).startswith("celery -A clinic beat")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_get_the_production_environment(compose, name):
    env = compose["services"][name]["environment"]
    assert set(APP_ENV) <= set(env)
    assert env["DJANGO_DEBUG"] == "false"
    assert env["DATABASE_URL"].startswith("postgres://") and "@db:5432/" in env["DATABASE_URL"]
    assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    # Secrets and site settings come from the operator, never from the file.
    for key in ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "SITE_URL", "EMAIL_URL"):
        assert env[key].startswith("${" + key + ":?"), key


def test_web_health_check_calls_health(compose):
    check = compose["services"]["web"]["healthcheck"]
    test = " ".join(check["test"]) if isinstance(check["test"], list) else check["test"]
    assert "http://localhost:8000/health/" in test
    # The check must pass the production HTTPS redirect and ALLOWED_HOSTS.
    assert "X-Forwarded-Proto" in test
    assert compose["services"]["web"]["environment"]["DJANGO_ALLOWED_HOSTS"].endswith(",localhost")
    for name in ("worker", "beat"):
        assert compose["services"][name]["depends_on"]["web"]["condition"] == "service_healthy"


def test_dockerfile_runs_as_an_unprivileged_user_with_collected_static_files():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11" in text
    assert "collectstatic" in text
    assert "\nUSER app\n" in text
    assert 'CMD ["gunicorn", "clinic.wsgi"' in text


def test_makefile_and_ci_entry_points():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run:", "test:", "install:", "migrate:", "clean:"):
        assert f"\n{target}" in makefile
    assert "seed_demo --if-empty" in makefile
    assert "celery -A clinic worker" in makefile and "celery -A clinic beat" in makefile
    assert "trap stop EXIT" in makefile
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    text = ci.read_text()
    assert "REQUIRE_SERVICES=1" in text and "exec make test" in text
    assert "postgres://postgres@${PGHOST}:${PGPORT}/${DB_NAME}" in text and "pumpclinic_ci" in text


def _production_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "SITE_URL"))}
    env.update(
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        DJANGO_ALLOWED_HOSTS="pumps.example.org",
        SITE_URL="https://pumps.example.org",
        PUMPCLINIC_VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        LOG_LEVEL="ERROR",
    )
    return env


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    env = _production_env(tmp_path)
    # production refuses to run without collected static files: collect them first
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--no-input", "--verbosity", "0"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_are_strict(tmp_path):
    code = (
        "from django.conf import settings as s; "
        "print(s.DEBUG, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_SECONDS >= 31536000, s.ALLOWED_HOSTS)"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT, env=_production_env(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False True True True True ['pumps.example.org']"


def test_development_defaults_need_no_environment(tmp_path):
    """With no environment the app runs in development mode and generates its secret key
    once into var/ (README, Two commands and Configuration)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "DATABASE_URL", "SITE_URL", "CELERY_", "EMAIL_URL"))}
    env["PUMPCLINIC_VAR_DIR"] = str(tmp_path / "var")
    code = "from django.conf import settings as s; print(s.DEBUG, s.DATABASES['default']['ENGINE'], s.EMAIL_BACKEND)"
    def run():
        result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    assert run() == "True django.db.backends.sqlite3 django.core.mail.backends.filebased.EmailBackend"
    key_file = tmp_path / "var" / "secret_key"
    key = key_file.read_text()
    assert len(key) >= 50
    assert key_file.stat().st_mode & 0o077 == 0  # readable by the owner only
    run()
    assert key_file.read_text() == key  # generated once, kept across runs
