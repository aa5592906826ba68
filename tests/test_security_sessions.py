"""Sessions end after SESSION_IDLE_MINUTES idle (with a warning script on the page);
answers with patient data carry Cache-Control: no-store; no query string reaches a log
line or the access log; commands print no raw control characters."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.test import Client

from clinic.logfilters import RedactQueryStrings
from clinic.terminal import safe
from pumps.access import record_patients_access
from pumps.models import PatientAccess
from tests.api_support import token_client
from tests.factories import make_clinic, make_patient, make_user

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clinic(db):
    return make_clinic(code="north", name="North", timezone="America/Chicago")


@pytest.fixture
def nurse(clinic):
    return make_user("nina", clinic, "nurse")


# ------------------------------------------------------------------ idle sign-out


def test_a_request_after_the_idle_time_signs_the_user_out(nurse, settings):
    settings.SESSION_IDLE_SECONDS = 30 * 60
    client = Client()
    with time_machine.travel(T0, tick=False) as clock:
        client.force_login(nurse)
        page = client.get("/")
        assert page.status_code == 200
        html = page.content.decode()
        assert 'data-session-idle-seconds="1800"' in html
        assert "js/session-timeout.js" in html
        clock.move_to(T0 + timedelta(minutes=29))
        assert client.get("/").status_code == 200  # activity: the idle time starts again
        clock.move_to(T0 + timedelta(minutes=29 + 29))
        assert client.get("/").status_code == 200
        clock.move_to(T0 + timedelta(minutes=58 + 31))
        response = client.get("/")
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
        # Signed out for good, not only for that request.
        assert client.get("/").status_code == 302
        login = client.get("/accounts/login/").content.decode()
        assert "without activity" in login


def test_the_idle_time_comes_from_session_idle_minutes(tmp_path):
    import subprocess
    import sys

    from tests.test_production_settings import ROOT

    result = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='clinic.settings'; "
         "django.setup(); from django.conf import settings as s; print(s.SESSION_IDLE_SECONDS)"],
        cwd=ROOT, env={**__import__("os").environ, "SESSION_IDLE_MINUTES": "10",
                       "PUMPCLINIC_VAR_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=120,
    )
    assert result.stdout.strip().splitlines()[-1] == "600", result.stderr


def test_the_warning_script_is_self_hosted_and_not_inline(nurse):
    client = Client()
    client.force_login(nurse)
    html = client.get("/").content.decode()
    assert '<script src="/static/js/session-timeout.js" defer></script>' in html
    assert "<script>" not in html
    anonymous = Client().get("/accounts/login/").content.decode()
    assert "session-timeout.js" not in anonymous


# ------------------------------------------------------------------ no-store


def test_signed_in_pages_and_the_api_are_not_stored(nurse, clinic):
    patient = make_patient(clinic)
    client = Client()
    client.force_login(nurse)
    for path in ("/", f"/patients/{patient.pk}/", "/admin/"):
        response = client.get(path)
        assert "no-store" in response.get("Cache-Control", ""), path
    api, _ = token_client(clinic)
    for path in ("/api/v1/patients/", f"/api/v1/patients/{patient.pk}/", f"/fhir/r4/Patient/{patient.pk}",
                 "/fhir/r4/metadata"):
        response = api.get(path)
        assert response.status_code == 200, path
        assert "no-store" in response["Cache-Control"], path
    # Even an error answer of the API.
    assert "no-store" in Client().get("/api/v1/patients/")["Cache-Control"]
    # The sign-in page and health carry no patient data: cacheable as Django decides.
    assert "no-store" not in Client().get("/health/").get("Cache-Control", "")


# ------------------------------------------------------------------ logs, access log


def test_query_strings_are_redacted_from_log_records():
    record = logging.LogRecord(
        "django.server", logging.INFO, __file__, 1, '"%s" %s %s', ("GET /patients/?q=Garcia HTTP/1.1", "200", "5"),
        None,
    )
    assert RedactQueryStrings().filter(record)
    assert record.getMessage() == '"GET /patients/?… HTTP/1.1" 200 5'
    assert "Garcia" not in record.getMessage()


def test_the_server_and_request_loggers_print_no_query_string(tmp_path):
    """As configured by settings, in a process of its own (pytest replaces handlers)."""
    import os
    import subprocess
    import sys

    from tests.test_production_settings import ROOT

    script = (
        "import django, logging, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'clinic.settings'; django.setup(); "
        "logging.getLogger('django.server').info('\"%s\" %s %s', 'GET /?q=Zyxwabc HTTP/1.1', '200', '5'); "
        "logging.getLogger('django.request').warning('Not Found: %s', 'https://h/x?name=Zyxwabc'); "
        "logging.getLogger('pumps').warning('search /api/v1/patients/?family_name=Zyxwabc')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(PUMPCLINIC_VAR_DIR=str(tmp_path), LOG_LEVEL="INFO")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Zyxwabc" not in result.stderr + result.stdout
    assert result.stderr.count("?…") == 3, result.stderr


def test_a_search_leaves_no_name_in_the_access_log(nurse, clinic):
    patient = make_patient(clinic, family_name="Zyxwabc")
    client = Client()
    client.force_login(nurse)
    client.get(f"/patients/{patient.pk}/?q=Zyxwabc")
    client.get("/?q=Zyxwabc")
    assert PatientAccess.objects.exists()
    assert not PatientAccess.objects.filter(path__contains="?").exists()
    assert not PatientAccess.objects.filter(path__icontains="Zyxwabc").exists()


def test_record_patients_access_writes_the_returned_ids_in_one_statement(nurse, clinic, django_assert_num_queries):
    from django.test import RequestFactory

    patients = [make_patient(clinic, mrn=f"M{i}") for i in range(3)]
    request = RequestFactory().get("/api/v1/patients/?family_name=Garcia")
    request.user = nurse
    ids = [p.pk for p in patients] + [patients[0].pk]  # a duplicate counts once
    with django_assert_num_queries(1):
        count = record_patients_access(request, ids, {p.pk: p.clinic_id for p in patients}, "api")
    assert count == 3
    rows = PatientAccess.objects.filter(user=nurse)
    assert sorted(rows.values_list("patient_id", flat=True)) == sorted(p.pk for p in patients)
    assert set(rows.values_list("path", flat=True)) == {"/api/v1/patients/"}
    assert len(set(rows.values_list("at", flat=True))) == 1
    # Without the clinics at hand it looks them up; nothing returned, nothing written.
    assert record_patients_access(request, [patients[1].pk], None, "fhir") == 1
    assert record_patients_access(request, [], None, "page") == 0
    with pytest.raises(ValueError):
        record_patients_access(request, ids, None, "email")


# ------------------------------------------------------------------ terminal output


def test_safe_escapes_control_characters():
    assert safe("a\x1b[31mred\x07\n\x9b\u202eb é") == "a\\x1b[31mred\\x07\\x0a\\x9b\\u202eb é"


def test_the_import_prints_no_escape_sequence_from_a_header(clinic, tmp_path):
    path = tmp_path / "clinic.csv"
    path.write_text("\x1b[31mmrn\x1b]0;owned\x07,family_name\nM1,Garcia\n", encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("import_clinic_csv", "--clinic", "north", str(path), stdout=out, stderr=err)
    printed = out.getvalue() + err.getvalue() + str(failure.value)
    assert "\x1b" not in printed and "\x07" not in printed
    assert "\\x1b[31m" in printed


def test_commands_escape_names_they_print(db):
    out = io.StringIO()
    call_command("create_clinic", "--code", "east", "--name", "East\x1b[2J", "--timezone", "UTC", stdout=out)
    assert "\x1b" not in out.getvalue() and "East\\x1b[2J" in out.getvalue()
    out = io.StringIO()
    call_command("create_api_client", "--clinic", "east", "--name", "EHR\x1b[8m", stdout=out)
    assert "\x1b" not in out.getvalue()
    out = io.StringIO()
    call_command("create_staff", "--clinic", "east", "--username", "eve\x1b[1A", "--role", "nurse", stdout=out)
    assert "\x1b" not in out.getvalue()
    with pytest.raises(CommandError) as failure:
        call_command("create_staff", "--clinic", "no\x1bpe", "--username", "x", "--role", "nurse")
    assert "\x1b" not in str(failure.value)
