"""Counts of implanted pumps per clinic and stored status, read from ``StatusTally``.

The rows are written by database triggers (migration ``pumps.0009``) in the transaction
of every write to a pump, so the tally commits, or rolls back, with the pumps it counts.
``fold`` merges them into one row per clinic and status; the sweep calls it, and its
quiet tick checks whether there are ``FOLD_AFTER`` rows to fold.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Iterable

from django.db import connection, connections, transaction
from django.db.models import QuerySet, Sum

from .models import StatusTally

#: Unfolded rows the sweep lets accumulate before it folds them (read by every worklist).
FOLD_AFTER = 500


def counts(clinic_ids: Iterable[int] | QuerySet) -> Counter:
    """Implanted pumps per stored status in the clinics ``clinic_ids`` (a list of ids, or
    a queryset of ids): one query over the tally rows, whatever the number of pumps."""
    rows = (
        StatusTally.objects.filter(clinic_id__in=clinic_ids).order_by()
        .values("status").annotate(n=Sum("delta")).values_list("status", "n")
    )
    return Counter({status: n for status, n in rows if n})


def _delete_returning() -> bool:
    """Whether ``DELETE ... RETURNING`` is there: PostgreSQL, SQLite from 3.35."""
    return connection.vendor != "sqlite" or connection.Database.sqlite_version_info >= (3, 35)


@transaction.atomic
def fold() -> int:
    """Replace the tally rows by their sums per clinic and status (zeros dropped);
    returns the number of rows folded. Safe beside writers and other folds: it sums
    exactly the rows it deletes, and a row committed meanwhile stays for the next fold."""
    table = connection.ops.quote_name(StatusTally._meta.db_table)
    with connection.cursor() as cursor:
        if _delete_returning():
            cursor.execute(f"DELETE FROM {table} RETURNING clinic_id, status, delta")
            deleted = cursor.fetchall()
        else:
            # An older SQLite: one writer at a time, and ids only grow, so the rows up to
            # the highest id seen now are exactly the rows summed.
            cursor.execute(f"SELECT max(id) FROM {table}")
            (last,) = cursor.fetchone()
            cursor.execute(f"SELECT clinic_id, status, delta FROM {table} WHERE id <= %s", [last or 0])
            deleted = cursor.fetchall()
            cursor.execute(f"DELETE FROM {table} WHERE id <= %s", [last or 0])
    sums: Counter = Counter()
    for clinic_id, status, delta in deleted:
        sums[(clinic_id, status)] += delta
    StatusTally.objects.bulk_create(
        StatusTally(clinic_id=clinic_id, status=status, delta=n)
        for (clinic_id, status), n in sorted(sums.items()) if n
    )
    return len(deleted)


def ensure_sqlite_triggers(using: str = "default", **kwargs) -> bool:
    """After ``migrate`` on SQLite: put the tally's triggers back if a migration lost
    them, and count the pumps again. SQLite alters a table by building a new one and
    dropping the old, and the old table's triggers go with it (PostgreSQL keeps them).
    Returns True when the triggers had to be made again."""
    db = connections[using]
    if db.vendor != "sqlite":
        return False
    tables = set(db.introspection.table_names())
    if not {"pumps_pump", StatusTally._meta.db_table} <= tables:
        return False  # migrated back before the tally
    migration = importlib.import_module("pumps.migrations.0009_status_tally")
    names = {f"pumps_status_tally_{op}" for op in ("insert", "update", "delete")}
    with db.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'pumps_pump'")
        if names <= {row[0] for row in cursor.fetchall()}:
            return False
    with transaction.atomic(using=using), db.cursor() as cursor:
        for sql in migration.SQLITE_DROP + migration.SQLITE_TRIGGERS:
            cursor.execute(sql)
        cursor.execute(f"DELETE FROM {db.ops.quote_name(StatusTally._meta.db_table)}")
        cursor.execute(migration.START)
    return True
