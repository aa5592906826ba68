"""PostgreSQL restarted under the app: requests fail cleanly (503, nothing half-done) while
it is down and succeed again once it is back. The test runs a PostgreSQL server of its
own (initdb in a temporary folder, its own port) so that it can stop and start it."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.conftest import require_service

ROOT = Path(__file__).resolve().parent.parent

SCENARIO = textwrap.dedent("""
    import json, os, subprocess, django
    django.setup()
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    call_command("create_clinic", code="north", name="North", timezone="America/Chicago", stdout=open(os.devnull, "w"))
    from clinic.models import ApiClient, Clinic
    _, token = ApiClient.create_with_token(clinic=Clinic.objects.get(code="north"), name="EHR", can_write=False)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    pg = os.environ["PG_CTL_CMD"]

    from django.db import close_old_connections

    def get(path):
        # What a real server does around each request (the test client leaves it out):
        # a connection that saw an error is dropped, the next request opens a new one.
        close_old_connections()
        try:
            return client.get(path)
        finally:
            close_old_connections()

    def snapshot():
        health = get("/health/")
        api = get("/api/v1/patients/")
        return {"health": health.status_code, "database": health.json()["checks"]["database"],
                "api": api.status_code, "api_body": api.json(), "retry_after": api.get("Retry-After")}

    out = {"up": snapshot()}
    subprocess.run(pg.replace("ACTION", "stop -m fast"), shell=True, check=True, capture_output=True)
    out["down"] = snapshot()
    subprocess.run(pg.replace("ACTION", "start -w"), shell=True, check=True, capture_output=True)
    out["back"] = snapshot()
    print("RESULT " + json.dumps(out))
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def own_postgres():
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries or os.geteuid() != 0 or not shutil.which("su"):
        require_service("PostgreSQL server binaries", "initdb and pg_ctl run as the postgres user (needs root)")
    bindir = os.path.dirname(binaries[-1])
    folder = tempfile.mkdtemp(prefix="pgfault-")
    shutil.chown(folder, "postgres", "postgres")
    data, port = os.path.join(folder, "data"), _free_port()
    as_pg = "su postgres -s /bin/sh -c"
    subprocess.run(f"{as_pg} '{bindir}/initdb -D {data} -A trust -U postgres'", shell=True, check=True,
                   capture_output=True)
    ctl = (f"{as_pg} '{bindir}/pg_ctl -D {data} -l {folder}/log "
           f"-o \"-p {port} -k {folder} -c listen_addresses=127.0.0.1\" ACTION'")
    subprocess.run(ctl.replace("ACTION", "start -w"), shell=True, check=True, capture_output=True)
    subprocess.run([f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "app"], check=True)
    try:
        yield f"postgres://postgres@127.0.0.1:{port}/app", ctl
    finally:
        subprocess.run(ctl.replace("ACTION", "stop -m immediate"), shell=True, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_requests_fail_cleanly_while_postgres_is_down_and_recover(own_postgres):
    url, ctl = own_postgres
    env = {**os.environ, "DATABASE_URL": url, "PG_CTL_CMD": ctl, "DJANGO_SETTINGS_MODULE": "clinic.settings",
           "CELERY_TASK_ALWAYS_EAGER": "true"}
    run = subprocess.run([sys.executable, "-c", SCENARIO], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["up"]["database"] == "ok" and result["up"]["api"] == 200
    down = result["down"]
    assert down["health"] == 503 and down["database"] == "error: OperationalError"
    assert down["api"] == 503 and down["retry_after"] == "5"
    assert down["api_body"] == {
        "detail": "The database is unavailable for a moment. Nothing was saved; try again shortly.",
        "code": "database_unavailable",
    }
    back = result["back"]
    assert back["database"] == "ok" and back["api"] == 200
