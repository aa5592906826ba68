"""After the load test: the numbers (from Locust's CSV) and the database's word on the
writes. Exit status 1 when a target is missed or a write is missing or duplicated.

    python loadtest/check.py STATS_PREFIX WRITES.jsonl
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE_P95_MS = 300
API_READ_P95_MS = 150


def stats_table(prefix: str) -> tuple[list[str], list[tuple[str, bool]]]:
    rows = list(csv.DictReader(open(f"{prefix}_stats.csv")))
    lines = [f"{'endpoint':34}{'requests':>9}{'errors':>8}{'req/s':>8}{'p50':>7}{'p95':>7}{'p99':>7}  ms",
             "-" * 83]
    checks = []
    for row in rows:
        name = row["Name"] if row["Name"] != "Aggregated" else "all"
        lines.append(f"{name:34}{row['Request Count']:>9}{row['Failure Count']:>8}{float(row['Requests/s']):>8.1f}"
                     f"{row['50%']:>7}{row['95%']:>7}{row['99%']:>7}")
        p95 = float(row["95%"] or 0)
        if name.startswith("page: "):
            checks.append((f"{name} p95 {p95:.0f} ms <= {PAGE_P95_MS} ms", p95 <= PAGE_P95_MS))
        elif name.startswith("api: "):
            checks.append((f"{name} p95 {p95:.0f} ms <= {API_READ_P95_MS} ms", p95 <= API_READ_P95_MS))
        elif name == "all":
            errors = int(row["Failure Count"])
            checks.append((f"errors: {errors} (target 0)", errors == 0))
    return lines, checks


def database_checks(writes_path: str) -> tuple[list[str], list[tuple[str, bool]]]:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinic.settings")
    import django

    django.setup()
    from datetime import datetime

    from django.db import connection

    from pumps.models import Pump, Refill

    writes = [json.loads(line) for line in open(writes_path)] if Path(writes_path).exists() else []
    api = [w for w in writes if w["channel"] == "api"]
    page = [w for w in writes if w["channel"] == "page"]
    checks = []
    # API: one refill per Idempotency-Key, the replay answered with the same one
    by_key = defaultdict(set)
    for w in api:
        by_key[w["key"]].add(w["refill"])
    checks.append((f"API: {len(by_key)} keys, each answered with one refill (replays: "
                   f"{sum(1 for w in api if w['replay'])})", all(len(ids) == 1 for ids in by_key.values())))
    ids = [next(iter(v)) for v in by_key.values()]
    found = Counter(Refill.objects.filter(pk__in=ids, voided_at__isnull=True).values_list("pk", flat=True))
    checks.append((f"API: every refill that got a 201 is in the database once ({len(found)} of {len(ids)})",
                   len(found) == len(ids)))
    # Pages: the refill saved at that local minute on that pump, exactly once
    zones = {p.pk: p.clinic.tz for p in Pump.objects.filter(pk__in=[w["pump"] for w in page]).select_related("clinic")}
    missing = duplicated = 0
    for w in page:
        local = datetime.fromisoformat(w["performed_at_local"]).replace(tzinfo=zones[w["pump"]])
        n = Refill.objects.filter(pump_id=w["pump"], performed_at=local, voided_at__isnull=True).count()
        missing += n == 0
        duplicated += n > 1
    checks.append((f"pages: every refill saved is in the database once ({len(page)} saves; "
                   f"{missing} missing, {duplicated} duplicated)", missing == duplicated == 0))
    # every written pump was written once (each virtual user refills a pump once)
    pumps = [w["pump"] for w in writes if not w.get("replay")]
    twice = [p for p, n in Counter(pumps).items() if n > 1]
    checks.append((f"no pump written twice by the test ({len(set(pumps))} pumps)", not twice))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM (SELECT 1 FROM pumps_alert GROUP BY clinic_id, pump_id, kind, episode "
                       "HAVING count(*) > 1) d")
        alerts = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM (SELECT 1 FROM pumps_notification WHERE alert_id IS NOT NULL "
                       "GROUP BY alert_id, recipient, repeat_number HAVING count(*) > 1) d")
        notes = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM pumps_sweeprun")
        sweeps = cursor.fetchone()[0]
    checks.append((f"no alert duplicated ({alerts} duplicates)", alerts == 0))
    checks.append((f"no notification duplicated ({notes} duplicates)", notes == 0))
    checks.append((f"beat swept during the run ({sweeps} sweeps recorded)", sweeps > 0))
    return [], checks


def main(argv: list[str]) -> int:
    prefix, writes = argv
    lines, checks = stats_table(prefix)
    _, db_checks = database_checks(writes)
    print("\n".join(lines))
    print()
    for text, ok in checks + db_checks:
        print(f"[{'met' if ok else 'MISSED'}] {text}")
    return 0 if all(ok for _, ok in checks + db_checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
