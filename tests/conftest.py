"""Shared fixtures.

Tests that need a real service (PostgreSQL, Redis, SMTP, a Celery worker, Chromium) call
``require_service(name, reason)`` when it is absent: locally they skip with the reason;
under ``REQUIRE_SERVICES=1`` (CI) the skip becomes a failure.
"""

from __future__ import annotations

import os
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tests.factories import make_clinic, make_patient, make_pump, make_user

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def require_service(name: str, reason: str) -> None:
    """Skip (locally) or fail (CI) because ``name`` is not available."""
    message = f"{name} not available: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but {message}", pytrace=False)
    pytest.skip(message)


def pytest_runtest_setup(item):
    if item.get_closest_marker("postgres"):
        from django.conf import settings

        if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
            require_service("PostgreSQL", "set DATABASE_URL=postgres://... to run this test")


CHICAGO = ZoneInfo("America/Chicago")


@pytest.fixture
def clinic(db):
    return make_clinic(code="north", name="North Spasticity Clinic", timezone="America/Chicago")


@pytest.fixture
def other_clinic(db):
    return make_clinic(code="south", name="South Clinic", timezone="Australia/Sydney")


@pytest.fixture
def nurse(clinic):
    return make_user("nina", clinic, "nurse")


@pytest.fixture
def prescriber(clinic):
    return make_user("dr_pat", clinic, "prescriber")


@pytest.fixture
def patient(clinic):
    return make_patient(clinic, mrn="MRN001", family_name="Garcia", given_name="Ana", origin="spinal")


@pytest.fixture
def pump(patient):
    return make_pump(patient, model_code="8637-40", implanted_on=date(2026, 1, 15))


@pytest.fixture
def now():
    return datetime(2026, 3, 1, 12, 0, tzinfo=CHICAGO)


D = Decimal


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counts live in the cache; ids repeat across tests."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture(autouse=True)
def _celery_eager(settings):
    """Unit tests run tasks in-process; tests of the real worker turn this off."""
    from clinic.celery import app

    app.conf.task_always_eager = True
    settings.SITE_URL = "https://pumps.example.org"
    yield
    app.conf.task_always_eager = False
