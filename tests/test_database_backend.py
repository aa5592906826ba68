"""The PostgreSQL backend (``clinic/postgresql/base.py``): timestamps are read by
psycopg's C loader, and they are the very values Django's own loader reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg.postgres import types
from psycopg.pq import Format

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

TIMESTAMPTZ = types["timestamptz"].oid
INSTANTS = [
    "2026-03-08 07:59:59.999999+00",  # a microsecond before Chicago springs forward
    "2026-03-08 08:00:00+00",
    "2026-11-01 01:30:00-05",  # given at an offset: read back in UTC
    "2026-04-05 02:30:00+11",  # Sydney's autumn change
    "2026-10-04 02:00:00+10:30",  # Lord Howe: a half-hour offset
    "1999-12-31 23:59:59+00",
    "2099-12-31 23:59:00+00",
]


def _read(register_django_loader: bool) -> list[datetime]:
    values = []
    with connection.cursor() as cursor:
        if register_django_loader:
            register_tzloader(connection.timezone, cursor.cursor)
        for text in INSTANTS:
            cursor.execute("SELECT %s::timestamptz", [text])
            values.append(cursor.fetchone()[0])
    return values


def test_the_backend_reads_timestamps_with_psycopgs_c_loader():
    from clinic.postgresql.base import C_TIMESTAMPTZ_LOADER

    assert connection.vendor == "postgresql"
    assert C_TIMESTAMPTZ_LOADER is not None, "psycopg[binary] is a dependency: its C loader must be there"
    with connection.cursor() as cursor:
        assert cursor.cursor.adapters.get_loader(TIMESTAMPTZ, Format.TEXT) is C_TIMESTAMPTZ_LOADER


def test_timestamps_read_by_the_c_loader_equal_djangos():
    fast, django = _read(False), _read(True)
    assert fast == django
    assert [v.tzinfo for v in fast] == [UTC] * len(INSTANTS)
    assert [v.tzinfo for v in django] == [UTC] * len(INSTANTS)
    assert fast[0] == datetime(2026, 3, 8, 7, 59, 59, 999999, tzinfo=UTC)
    assert fast[2] == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    assert fast[4] == datetime(2026, 10, 3, 15, 30, tzinfo=UTC)


def test_a_models_instants_round_trip(pump):
    from pumps.models import Pump

    moment = datetime(2026, 3, 8, 8, 0, 0, 123456, tzinfo=UTC)
    Pump.objects.filter(pk=pump.pk).update(next_change_at=moment)
    assert Pump.objects.get(pk=pump.pk).next_change_at == moment
    assert Pump.objects.filter(next_change_at=moment).count() == 1
