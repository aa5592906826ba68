"""Copies of recorded pump histories for new patients, made by the database.

``seed_demo`` at scale records a few dozen planned histories through the services (the
templates: validation, audit, stored projection, alerts) and then gives every other
synthetic patient a copy of one of them. The copies are made here with ``COPY`` and
``INSERT ... SELECT`` on PostgreSQL: 100,000 pumps with their refills, programs,
readings, events and appointments in seconds rather than hours.

A copy has the template's records and stored projection (the same history gives the same
projection) under a new patient, pump and serial number. Its audit history is not copied:
the copies are synthetic data, not clinical changes. A copy whose template has open
alerts is marked due (``next_change_at`` = the seeding instant), so that the first sweep
raises its alerts as it would after an import.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, models

from pumps.models import Appointment, Assessment, Event, Patient, Program, Pump, Reading, Refill, WithdrawalPlan

#: Records copied with each pump, in an order that satisfies the foreign keys (a copied
#: explant keeps its withdrawal plan: no stop without a plan, docs/clinical-rules.md §15).
CHILDREN: tuple[type[models.Model], ...] = (Refill, Program, Reading, Event, Appointment, Assessment, WithdrawalPlan)
#: Foreign keys to a record copied before, mapped to its copy: (model, column, mapped table).
MAPPED = {
    Program: ("refill_id", "seed_map_pumps_refill"),
    Assessment: ("refill_id", "seed_map_pumps_refill"),
    WithdrawalPlan: ("program_id", "seed_map_pumps_program"),
}


@dataclass(frozen=True)
class Copy:
    template_id: int  # the pump whose history is copied
    patient: dict  # Patient field name -> value (no id; clinic_id included)
    serial_number: str
    due_now: bool  # the template has open alerts: the first sweep raises them for the copy


def _columns(model: type[models.Model]) -> list[str]:
    return [f.column for f in model._meta.concrete_fields]


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _sequence(cursor, model: type[models.Model]) -> str:
    """The id sequence of ``model`` as a constant, ``'name'::regclass``. Looked up once per
    copy: left in the query, ``pg_get_serial_sequence`` (a catalog lookup) ran for every
    row and took most of the time of numbering the copied rows."""
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [model._meta.db_table])
    name = cursor.fetchone()[0]
    return "'{}'::regclass".format(name.replace("'", "''"))


def _allocate(cursor, model: type[models.Model], count: int) -> list[int]:
    cursor.execute(f"SELECT nextval({_sequence(cursor, model)}) FROM generate_series(1, %s)", [count])
    return [row[0] for row in cursor.fetchall()]


def _copy_rows(cursor, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    names = ", ".join(_qn(c) for c in columns)
    with cursor.copy(f"COPY {_qn(table)} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def copy_pumps(copies: Sequence[Copy], *, now: datetime) -> list[int]:
    """Create the patients and pumps of ``copies`` with every record of their templates;
    returns the new pump ids. Runs inside the caller's transaction (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        raise RuntimeError("copying pump histories in bulk needs PostgreSQL")
    if not copies:
        return []
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor  # the driver's cursor, for COPY
        # Room to join and sort the copies in memory: with the default 4 MB, copying the
        # programs (each mapped to the copy of its refill) sorted 750k rows on disk.
        # Set for the seed's transaction only.
        cursor.execute("SELECT set_config('work_mem', '256MB', true)")
        cursor.execute("SELECT set_config('maintenance_work_mem', '256MB', true)")
        # Foreign keys and secondary indexes of the copied tables are set aside while the
        # rows go in and made again afterwards, as a restore does: each foreign key is then
        # checked once by one join instead of row by row at commit (about 5 million checks,
        # 40 s of the commit at 100k pumps), and each index built once instead of updated
        # for every row. Primary keys and unique indexes stay, so duplicates still fail at
        # once. All of it is inside the seed's transaction: an error rolls the schema back
        # with the rows. The tables (and the users, clinics and drug products they refer
        # to) are locked against other sessions until the commit, which is fine for a seed
        # into an empty database before the app starts (make run, the load test).
        tables = [m._meta.db_table for m in (Patient, Pump, *CHILDREN)]
        # A table cannot be altered while checks of its earlier rows (the templates) wait
        # for the commit: run those checks now, then defer again as before.
        connection.check_constraints()
        foreign_keys = _drop_foreign_keys(cursor, tables)
        indexes = _drop_indexes(cursor, tables)
        patient_ids = _allocate(cursor, Patient, len(copies))
        pump_ids = _allocate(cursor, Pump, len(copies))

        fields = [f for f in Patient._meta.concrete_fields if f.column != "id"]
        _copy_rows(
            cursor, Patient._meta.db_table, ["id"] + [f.column for f in fields],
            ([pid] + [c.patient[f.attname] if f.attname in c.patient else _default(f, now) for f in fields]
             for pid, c in zip(patient_ids, copies, strict=True)),
        )

        cursor.execute(
            "CREATE TEMP TABLE seed_pump_map (template_id bigint, new_id bigint, patient_id bigint, "
            "serial_number varchar(64), due_now boolean) ON COMMIT DROP"
        )
        _copy_rows(
            cursor, "seed_pump_map", ["template_id", "new_id", "patient_id", "serial_number", "due_now"],
            ((c.template_id, new, pid, c.serial_number, c.due_now)
             for new, pid, c in zip(pump_ids, patient_ids, copies, strict=True)),
        )
        cursor.execute("CREATE INDEX ON seed_pump_map (template_id)")
        cursor.execute("ANALYZE seed_pump_map")

        overrides = {
            "id": "m.new_id",
            "patient_id": "m.patient_id",
            "serial_number": "m.serial_number",
            "next_change_at": "CASE WHEN m.due_now THEN %(now)s ELSE t.next_change_at END",
        }
        _insert_select(cursor, Pump, overrides, "seed_pump_map m JOIN {table} t ON t.id = m.template_id", now)

        for model in CHILDREN:
            table = model._meta.db_table
            mapping = f"seed_map_{table}"
            cursor.execute(
                f"CREATE TEMP TABLE {mapping} ON COMMIT DROP AS "
                f"SELECT t.id AS old_id, m.new_id AS pump_id, nextval({_sequence(cursor, model)}) AS new_id "
                f"FROM seed_pump_map m JOIN {_qn(table)} t ON t.pump_id = m.template_id ORDER BY m.new_id, t.id"
            )
            overrides = {"id": "x.new_id", "pump_id": "x.pump_id"}
            source = f"{mapping} x JOIN {{table}} t ON t.id = x.old_id"
            if model in MAPPED:
                # e.g. a program saved with a refill points at the copy of that refill
                column, mapped = MAPPED[model]
                overrides[column] = "r.new_id"
                source += f" LEFT JOIN {mapped} r ON r.old_id = t.{column} AND r.pump_id = x.pump_id"
            if model in (Refill, Program):
                # row counts for the planner: later copies join this map as a whole (hash join)
                cursor.execute(f"ANALYZE {mapping}")
            _insert_select(cursor, model, overrides, source, now)
        for definition in indexes:
            cursor.execute(definition)
        # After a bulk load the planner needs fresh statistics (autovacuum would get there
        # later): the worklist and the sweep read these tables through their indexes.
        for model in (Patient, Pump, *CHILDREN):
            cursor.execute(f"ANALYZE {_qn(model._meta.db_table)}")
        for table, name, definition in foreign_keys:
            cursor.execute(f"ALTER TABLE {_qn(table)} ADD CONSTRAINT {_qn(name)} {definition}")
    return pump_ids


def _drop_foreign_keys(cursor, tables: Sequence[str]) -> list[tuple[str, str, str]]:
    """Drop the foreign keys declared on ``tables``; returns (table, name, definition)."""
    cursor.execute(
        "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
        "JOIN pg_class c ON c.oid = k.conrelid WHERE k.contype = 'f' AND k.conrelid = ANY(%s::regclass[]) "
        "ORDER BY c.relname, k.conname",
        [list(tables)],
    )
    found = cursor.fetchall()
    for table, name, _ in found:
        cursor.execute(f"ALTER TABLE {_qn(table)} DROP CONSTRAINT {_qn(name)}")
    return found


def _drop_indexes(cursor, tables: Sequence[str]) -> list[str]:
    """Drop the indexes of ``tables`` that enforce nothing (not primary, not unique, not a
    constraint's); returns their definitions."""
    cursor.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary AND NOT i.indisunique "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) ORDER BY 1",
        [list(tables)],
    )
    found = cursor.fetchall()
    for name, _ in found:
        cursor.execute(f"DROP INDEX {name}")
    return [definition for _, definition in found]


def _default(field: models.Field, now: datetime):
    if field.attname in ("created_at", "updated_at"):
        return now
    return field.get_default()


def _insert_select(cursor, model: type[models.Model], overrides: dict[str, str], source: str, now: datetime) -> None:
    table = _qn(model._meta.db_table)
    columns = _columns(model)
    select = ", ".join(overrides.get(c, f"t.{_qn(c)}") for c in columns)
    cursor.execute(
        f"INSERT INTO {table} ({', '.join(_qn(c) for c in columns)}) SELECT {select} FROM {source.format(table=table)}",
        {"now": now},
    )
