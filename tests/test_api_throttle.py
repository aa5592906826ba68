"""Per-client throttling: one API client over its rate gets 429; others are unaffected."""

import pytest
from django.core.cache import cache
from rest_framework.settings import api_settings

from clinic.auth import ApiClientRateThrottle
from tests.api_support import API, token_client


@pytest.fixture
def three_per_minute(monkeypatch):
    cache.clear()
    monkeypatch.setattr(ApiClientRateThrottle, "THROTTLE_RATES", {"api_client": "3/min"})
    yield
    cache.clear()


def test_a_client_over_its_rate_gets_429_and_another_client_does_not(db, clinic, three_per_minute):
    busy, _ = token_client(clinic, name="Busy")
    calm, _ = token_client(clinic, name="Calm")
    assert [busy.get(f"{API}/patients/").status_code for _ in range(3)] == [200, 200, 200]
    response = busy.get(f"{API}/patients/")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response.json()["detail"].startswith("Request was throttled.")
    assert calm.get(f"{API}/patients/").status_code == 200


def test_default_rate_is_configured(db):
    assert api_settings.DEFAULT_THROTTLE_RATES["api_client"] == "600/min"
