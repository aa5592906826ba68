"""The load test's files (loadtest/): the locustfile imports and defines its users, and
the run script is bounded (headless, a fixed duration and user count) and stays on
loopback. No network: the locustfile is imported in a child process (Locust patches the
standard library with gevent on import)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOADTEST = ROOT / "loadtest"

PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import locustfile as f
from locust import HttpUser
out = {}
for name in ("StaffUser", "ApiUser"):
    cls = getattr(f, name)
    out[name] = {"http": issubclass(cls, HttpUser), "weight": cls.weight,
                 "tasks": sorted({t.__name__ for t in cls.tasks})}
print(json.dumps(out))
"""


def test_the_locustfile_imports_and_defines_staff_and_api_users():
    if importlib.util.find_spec("locust") is None:  # not imported here: it would patch this process
        pytest.skip("locust is not installed (pip install -e '.[dev]')")
    done = subprocess.run([sys.executable, "-c", PROBE, str(LOADTEST)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    users = json.loads(done.stdout.strip().splitlines()[-1])
    staff, api = users["StaffUser"], users["ApiUser"]
    assert staff["http"] and api["http"]
    assert (staff["weight"], api["weight"]) == (50, 10)
    assert staff["tasks"] == ["alerts_page", "pump_page", "refill_preview", "refill_save", "worklist"]
    assert api["tasks"] == ["projection", "refill", "worklist"]


def test_the_locustfile_sends_an_idempotency_key_and_records_every_write():
    text = (LOADTEST / "locustfile.py").read_text()
    assert '"Idempotency-Key": key' in text
    assert text.count("record_write(") >= 3  # the definition, the page save, the API refill


def test_the_run_script_is_bounded_and_on_loopback():
    script = (LOADTEST / "run.sh").read_text()
    assert subprocess.run(["bash", "-n", str(LOADTEST / "run.sh")]).returncode == 0
    for needle in ("--headless", "--run-time", "--users", "--workers 4", "celery -A clinic worker",
                   "celery -A clinic beat", "seed_demo --pumps", "loadtest/check.py", "--pumps)", "--duration)"):
        assert needle in script, needle
    assert "0.0.0.0" not in script
    hosts = {part.split(":")[0] for part in script.split("http://")[1:]}
    assert hosts <= {"127.0.0.1"}, hosts


def test_the_check_script_sets_the_targets():
    text = (LOADTEST / "check.py").read_text()
    assert "PAGE_P95_MS = 300" in text and "API_READ_P95_MS = 150" in text
    assert "HAVING count(*) > 1" in text
