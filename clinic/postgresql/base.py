"""Django's PostgreSQL backend, reading ``timestamptz`` values with psycopg's C loader.

Django reads every ``timestamptz`` value through a Python subclass of psycopg's Python
loader (to force its connection's time zone onto the values), so each one is parsed in
Python, about 10 µs: a worklist page reads a few thousand of them, about a quarter of its
time.
The connection's time zone here is UTC (``TIME_ZONE = "UTC"``), and on a UTC session
psycopg's C loader returns the very same values (aware, in ``datetime.UTC``). So each
cursor reads them with the C loader when both hold: Django's zone for the connection is
UTC, and psycopg's C implementation is installed (``psycopg[binary]`` or ``psycopg[c]``).
Otherwise Django's own loader stays. ``tests/test_database_backend.py`` checks the values.
"""

from __future__ import annotations

from datetime import UTC

import psycopg
from django.db.backends.postgresql import base
from psycopg.postgres import types
from psycopg.pq import Format

#: psycopg's default text loader of timestamptz: its C class when the C implementation is installed.
_LOADER = psycopg.adapters.get_loader(types["timestamptz"].oid, Format.TEXT)
C_TIMESTAMPTZ_LOADER = _LOADER if _LOADER is not None and _LOADER.__module__.startswith(
    ("psycopg_binary", "psycopg_c")) else None


class DatabaseWrapper(base.DatabaseWrapper):
    def create_cursor(self, name=None):
        cursor = super().create_cursor(name)
        if C_TIMESTAMPTZ_LOADER is not None and self.timezone == UTC:
            # on the cursor: Django compares the connection's loader's zone with its own
            cursor.adapters.register_loader("timestamptz", C_TIMESTAMPTZ_LOADER)
        return cursor
