"""The load test's users (Locust): 50 staff users on the pages and 10 API clients.

Staff (``StaffUser``): the worklist with filters, a pump page, the refill page's live
preview, a refill saved through the page, the alerts page. API clients (``ApiUser``):
the API worklist, a pump's projection, a refill POSTed with an ``Idempotency-Key`` (every
fourth key is sent twice: the replay must answer the same refill, not a second one).

Pacing: a staff user waits 5-15 s between actions (reading the page it opened), an API
client 1-3 s (``LOADTEST_STAFF_WAIT`` and ``LOADTEST_API_WAIT``, "min,max" in seconds;
run.sh --staff-wait and --api-wait).

Every write that got its 201 (API) or its redirect (page) is appended to the file named
by ``LOADTEST_WRITES`` (JSON lines); ``loadtest/check.py`` then finds each one in the
database exactly once. The users' accounts, tokens and pumps come from the JSON file of
``loadtest/prepare.py`` (``LOADTEST_FIXTURES``); each virtual user refills pumps of its
own, one refill per pump, so no two writes collide.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from http.cookiejar import DefaultCookiePolicy
from zoneinfo import ZoneInfo

from locust import HttpUser, between, task

FIXTURES_ENV = "LOADTEST_FIXTURES"
WRITES_ENV = "LOADTEST_WRITES"
#: Seconds a user waits between two actions, "min,max" (run.sh --staff-wait, --api-wait).
STAFF_WAIT_ENV, API_WAIT_ENV = "LOADTEST_STAFF_WAIT", "LOADTEST_API_WAIT"
PAGE_ZONES = {"lakeshore": "America/Chicago", "thames": "Europe/London", "harbour": "Australia/Sydney",
              "rockies": "America/Denver"}
STATUSES = ["", "empty", "alarm", "overdue", "due_soon", "ok"]

_fixtures: dict | None = None
_staff_numbers = itertools.count()
_api_numbers = itertools.count()
_lock = threading.Lock()


def fixtures() -> dict:
    global _fixtures
    if _fixtures is None:
        path = os.environ.get(FIXTURES_ENV)
        _fixtures = json.loads(open(path).read()) if path else {
            "password": "", "users": ["nobody"], "api": [{"token": "", "clinic": ""}], "clinics": [""],
            "read_pumps": [1], "staff_write_pumps": [[]], "api_write_pumps": [[]]}
    return _fixtures


def pacing(variable: str, default: tuple[float, float]):
    """Locust's ``between`` from "min,max" in ``variable`` (else ``default``)."""
    text = os.environ.get(variable, "")
    low, high = (float(part) for part in text.split(",")) if text else default
    return between(low, high)


def record_write(**row) -> None:
    path = os.environ.get(WRITES_ENV)
    if not path:
        return
    with _lock, open(path, "a") as out:
        out.write(json.dumps(row) + "\n")


def _secure_cookies_over_http(self, cookie, request):
    return True


# The app marks its cookies Secure (production settings); the load test talks plain HTTP
# on loopback, so this process's cookie jars send them anyway (requests copies the
# session's jar into a fresh one per request: a policy on the session's jar is lost).
DefaultCookiePolicy.return_ok_secure = _secure_cookies_over_http


def refill_body(pump: dict) -> dict:
    reservoir = Decimal(pump["reservoir"])
    return {"extracted_volume_ml": "5.0", "residual_left_ml": "0",
            "added_volume_ml": str(reservoir - Decimal(6)), "concentration_mcg_per_ml": pump["concentration"]}


class StaffUser(HttpUser):
    """A nurse at the pages (signed in once, then browsing)."""

    weight = 50
    # a nurse reads the page she opened before the next click (run.sh --staff-wait)
    wait_time = pacing(STAFF_WAIT_ENV, (5, 15))

    def on_start(self):
        data = fixtures()
        number = next(_staff_numbers)
        self.username = data["users"][number % len(data["users"])]
        slices = data["staff_write_pumps"]
        self.to_refill = list(slices[number % len(slices)]) if slices else []
        page = self.client.get("/accounts/login/", name="login page")
        token = self.client.cookies.get("csrftoken", "")
        with self.client.post("/accounts/login/", data={"username": self.username, "password": data["password"],
                                                        "csrfmiddlewaretoken": token},
                              headers={"Referer": page.url}, name="login", catch_response=True) as response:
            if "/accounts/login/" in response.url:
                response.failure("not signed in")

    def _page(self, path: str, name: str, **kwargs):
        """A page that must be the page, not the sign-in form it would redirect to."""
        with self.client.get(path, name=name, catch_response=True, **kwargs) as response:
            if response.status_code == 200 and "/accounts/login/" in response.url:
                response.failure("redirected to the sign-in page")

    def _csrf(self) -> str:
        return self.client.cookies.get("csrftoken", "")

    @task(6)
    def worklist(self):
        data = fixtures()
        params = {}
        if random.random() < 0.5:
            params["status"] = random.choice(STATUSES)
        if random.random() < 0.3:
            params["clinic"] = random.choice(data["clinics"])
        if random.random() < 0.1:
            params["q"] = random.choice(["MRN", "SN-", "Smith", "00"])
        if random.random() < 0.2:
            params["page"] = random.choice([2, 3])
        self._page("/", "page: worklist", params=params)

    @task(4)
    def pump_page(self):
        pump = random.choice(fixtures()["read_pumps"])
        self._page(f"/pumps/{pump}/", "page: pump")

    @task(2)
    def alerts_page(self):
        self._page("/alerts/", "page: alerts", params=random.choice([{}, {"severity": "critical"}]))

    def _refill_form(self, pump: dict) -> dict:
        tz = ZoneInfo(PAGE_ZONES.get(pump["clinic"], "UTC"))
        return {"performed_at": datetime.now(UTC).astimezone(tz).strftime("%Y-%m-%dT%H:%M"),
                **refill_body(pump), "csrfmiddlewaretoken": self._csrf()}

    @task(3)
    def refill_preview(self):
        if not self.to_refill:
            return
        pump = self.to_refill[0]
        self.client.post(f"/pumps/{pump['id']}/refill/preview/", data=self._refill_form(pump),
                         headers={"HX-Request": "true", "X-CSRFToken": self._csrf()}, name="page: refill preview")

    @task(1)
    def refill_save(self):
        if not self.to_refill:
            return
        pump = self.to_refill.pop(0)
        self._page(f"/pumps/{pump['id']}/refill/", "page: refill form")
        form = self._refill_form(pump)
        with self.client.post(f"/pumps/{pump['id']}/refill/", data=form, allow_redirects=False,
                              name="write: refill (page)", catch_response=True) as response:
            if response.status_code == 302:
                response.success()
                record_write(channel="page", pump=pump["id"], performed_at_local=form["performed_at"],
                             user=self.username)
            else:
                text = re.sub(r"\s+", " ", response.text)[:200]
                response.failure(f"refill page answered {response.status_code}: {text}")


class ApiUser(HttpUser):
    """An integration (EHR) on the REST API with its bearer token."""

    weight = 10
    wait_time = pacing(API_WAIT_ENV, (1, 3))

    def on_start(self):
        data = fixtures()
        number = next(_api_numbers)
        client = data["api"][number % len(data["api"])]
        self.token = client["token"]
        self.read_pumps = data.get("read_pumps_by_clinic", {}).get(client["clinic"]) or data["read_pumps"]
        slices = data["api_write_pumps"]
        self.to_refill = list(slices[number % len(slices)]) if slices else []
        self.client.headers["Authorization"] = f"Bearer {self.token}"

    @task(6)
    def worklist(self):
        params = {"status": random.choice(STATUSES)} if random.random() < 0.5 else {}
        self.client.get("/api/v1/worklist/", params=params, name="api: worklist")

    @task(4)
    def projection(self):
        pump = random.choice(self.read_pumps)
        with self.client.get(f"/api/v1/pumps/{pump}/projection/", name="api: projection",
                             catch_response=True) as response:
            if response.status_code == 404:  # a pump of another clinic than the token's
                response.success()

    @task(1)
    def refill(self):
        if not self.to_refill:
            return
        pump = self.to_refill.pop(0)
        key = str(uuid.uuid4())
        body = {"pump": pump["id"], "performed_at": datetime.now(UTC).isoformat(), **refill_body(pump)}
        replays = 2 if random.random() < 0.25 else 1
        for attempt in range(replays):
            with self.client.post("/api/v1/refills/", json=body, headers={"Idempotency-Key": key},
                                  name="write: refill (API)" if attempt == 0 else "write: refill (API, replay)",
                                  catch_response=True) as response:
                if response.status_code == 404:  # another clinic's pump: not this token's
                    response.success()
                    return
                if response.status_code != 201:
                    response.failure(f"refill API answered {response.status_code}: {response.text[:200]}")
                    return
                record_write(channel="api", pump=pump["id"], refill=response.json().get("id"), key=key,
                             replay=attempt > 0)
