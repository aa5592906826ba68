"""Helpers for the REST API tests: clients with a Bearer token or a staff session, the
clock, and the worked example (docs/clinical-rules.md §12) as API calls."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import time_machine
from rest_framework.test import APIClient

from clinic.models import ApiClient

CHICAGO = ZoneInfo("America/Chicago")
API = "/api/v1"

# The worked example (docs/clinical-rules.md §12): the refill is recorded an hour after it was performed.
REFILL_AT = "2026-02-02T09:00:00-06:00"
AFTER_REFILL = datetime(2026, 2, 2, 10, 0, tzinfo=CHICAGO)


# Query counts are measured with the clock frozen: a token's last_used_at is stamped at
# most once a minute (one more query), and that must not depend on how long a test runs.
QUERY_CLOCK = datetime(2026, 6, 1, 12, 0, tzinfo=CHICAGO)


def token_client(clinic, *, write: bool = True, name: str = "EHR") -> tuple[APIClient, ApiClient]:
    client, token = ApiClient.create_with_token(clinic=clinic, name=name, can_write=write)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api, client


def session_client(user) -> APIClient:
    api = APIClient()
    api.force_login(user)
    return api


def travel(moment: datetime):
    """Freeze the clock (services refuse times more than 5 minutes ahead of it)."""
    return time_machine.travel(moment, tick=False)


def worked_example_refill(pump_id: int, **overrides) -> dict:
    """The worked example (docs/clinical-rules.md §12): 36 mL of 1000 mcg/mL with a continuous program of 450 mcg/day."""
    body = {
        "pump": pump_id,
        "performed_at": REFILL_AT,
        "extracted_volume_ml": None,
        "added_volume_ml": 36,
        "concentration_mcg_per_ml": "1000",
        "drug_product": "gablofen-1000",
        "lot_number": "L123",
        "performed_by": "nina",
        "program": {"concentration_mcg_per_ml": 1000, "mode": "continuous", "daily_dose_mcg": "450"},
    }
    body.update(overrides)
    return body
