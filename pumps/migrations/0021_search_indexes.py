"""Indexes for the worklist search (``selectors._search``), PostgreSQL only: the search
compares upper-cased MRNs, names and serial numbers (Django's ``iexact``, ``istartswith``
and ``icontains``), which no plain index of those columns serves, so every search read
every pump of the clinics with its patient.

- MRN, exact or its start: a B-tree of ``upper(mrn)`` with ``text_pattern_ops`` (which
  serves ``=`` and ``LIKE 'ABC%'`` whatever the database's collation).
- Family and given names, a word anywhere in them: trigram (GIN) indexes of
  ``upper(…)`` from the ``pg_trgm`` extension, shipped with PostgreSQL and "trusted"
  since PostgreSQL 13 (the database's owner may create it). Where it cannot be created
  the migration goes on without these two indexes and says so: the search still works,
  by reading the clinic's patients.
- Serial number, exact: a B-tree of ``upper(serial_number)``.

SQLite (the embedded default) gets none of them: its demo database is small."""

import sys

from django.db import migrations, transaction
from django.db.utils import DatabaseError

BTREE = [
    ("pumps_patient", "patient_mrn_upper_idx", "(UPPER(mrn::text) text_pattern_ops)"),
    ("pumps_pump", "pump_serial_upper_idx", "(UPPER(serial_number::text))"),
]
TRIGRAM = [
    ("pumps_patient", "patient_family_trgm_idx", "(UPPER(family_name::text) gin_trgm_ops)"),
    ("pumps_patient", "patient_given_trgm_idx", "(UPPER(given_name::text) gin_trgm_ops)"),
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, name, expression in BTREE:
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} {expression}")
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DatabaseError as exc:
        sys.stderr.write(f"  pg_trgm could not be created ({str(exc).strip()}): the worklist's name search "
                         "goes without its trigram indexes; see README, Deploy.\n")
        return
    for table, name, expression in TRIGRAM:
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin {expression}")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for _table, name, _expression in BTREE + TRIGRAM:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("pumps", "0020_quiet_tick_stop_index")]

    operations = [migrations.RunPython(create, drop)]
