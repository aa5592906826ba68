"""``manage.py seed_demo [--pumps N] [--seed S] [--now ISO-DATETIME] [--if-empty]``

Synthetic clinics for demonstrations and benchmarks: two clinics in different time zones
(America/Chicago and Europe/London), staff, patients, implanted pumps of the catalog
models, refill histories, titrations and program changes (flex programs with steps,
on-demand boluses, a concentration change with a bridge bolus), readings, MRI and other
events, appointments, a replaced and an explanted pump.

Each clinic has a refill capacity of its own (docs/clinical-rules.md §14): Lakeshore runs
its refill clinic on Tuesdays and Thursdays, three visits each; Thames books two refills
on every open day. Booked refills go on the latest refill day with a free slot on or
before the due date, so the refill plan of a demo shows days at capacity; with one slot
a refill day it has pumps that cannot be booked in time.

Every clinical record is written through ``pumps.services`` (validation, audit history,
stored projection), as a clinic would record it. The histories are built backwards from
the status each pump should have *today*: the last refill is placed so that, as of the
reference day, the clinic sees every status (ok, due_soon, overdue, alarm, empty,
incomplete, inactive). Each planned history is checked with the pure projection engine
before it is written, over the whole reference day in both clinics' zones.

The planner (``pumps.demo.plan``, pure) plans the clinics, patients and histories; the
writers (``pumps.demo.writers``, ``pumps.demo.bulk``) record them. This command parses
the arguments, checks the database and prints a summary.

Deterministic: the data is a function of ``--seed``, ``--pumps`` and the UTC date of
``--now`` (default: the current time). Two runs on the same day with the same arguments
into empty databases write the same records.

No real person is described: names are common first and family names combined at
random, phone numbers are in the ranges reserved for fiction (US 555-01xx, UK Ofcom
020 7946 0xxx), e-mail addresses are under example.org.
"""


from __future__ import annotations

import argparse
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from clinic.models import Clinic
from pumps import projection as pj
from pumps.demo.bulk import BULK_FROM, BulkDemoWriter
from pumps.demo.plan import MIN_PUMPS
from pumps.demo.specs import CLINICS, EXTRA_CLINICS
from pumps.demo.writers import DEMO_PASSWORD, DEMO_USERNAME, DemoWriter
from pumps.models import Patient, PumpModel


def reference_instant(value: str | None) -> datetime:
    if not value:
        return timezone.now()
    moment = parse_datetime(value)
    if moment is None or timezone.is_naive(moment):
        raise CommandError("--now must be an ISO 8601 date and time with an offset, e.g. 2026-03-01T12:00:00Z.")
    return moment


def check_database(bulk: bool) -> None:
    if bulk and connection.vendor != "postgresql":
        raise CommandError(
            f"The bulk path (--pumps {BULK_FROM} or more, or --bulk) needs PostgreSQL (DATABASE_URL=postgres://...)."
        )
    codes = [c.code for c in CLINICS + EXTRA_CLINICS]
    existing = list(Clinic.objects.filter(code__in=codes).values_list("code", flat=True))
    if existing:
        raise CommandError(f"Demo clinics already exist ({', '.join(existing)}): use an empty database.")
    if not PumpModel.objects.exists():
        raise CommandError("The pump catalog is empty: run 'manage.py migrate' first.")


class Command(BaseCommand):
    help = (
        "Create realistic synthetic demo clinics, staff, patients, pumps and histories (deterministic for a "
        "given --seed), and the demo sign-in."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--pumps", type=int, default=40, help=f"Number of pumps (at least {MIN_PUMPS}; default 40)."
        )
        parser.add_argument("--seed", type=int, default=1, help="Random seed (default 1).")
        parser.add_argument(
            "--now",
            help="Reference instant (ISO 8601 with an offset); default: the current time. The data depends on "
            "its UTC date.",
        )
        parser.add_argument(
            "--if-empty", action="store_true", help="Do nothing when any clinic exists (for make run)."
        )
        parser.add_argument(
            "--bulk", action=argparse.BooleanOptionalAction, default=None,
            help=f"Four clinics, and most pumps copies of planned histories made by the database (PostgreSQL); "
            f"the default from --pumps {BULK_FROM} on.",
        )

    def handle(self, *args, pumps, seed, now, if_empty, bulk=None, **options):
        if if_empty and Clinic.objects.exists():
            self.stdout.write("Clinics already exist: demo data not created.")
            return
        if pumps < MIN_PUMPS:
            raise CommandError(f"--pumps must be at least {MIN_PUMPS} so that every status can be shown.")
        moment = reference_instant(now)
        bulk = pumps >= BULK_FROM if bulk is None else bulk
        check_database(bulk)
        with transaction.atomic():
            result = (BulkDemoWriter if bulk else DemoWriter)(pumps=pumps, seed=seed, now=moment).run()
        self.report(result, seed)

    def report(self, result: dict, seed: int) -> None:
        counts = result["counts"]
        statuses = {s: counts[f"status:{s}"] for s in pj.STATUSES}
        for clinic in result["clinics"]:
            self.stdout.write(f"Clinic {clinic.code}: {clinic.name} ({clinic.timezone})")
        patients = Patient.objects.filter(clinic__in=result["clinics"]).count()
        self.stdout.write(
            f"Created {patients} patients, {counts['pumps']} pumps, "
            f"{counts['refills']} refills and {counts['readings']} readings (seed {seed})."
        )
        self.stdout.write(
            "Pump status now: " + ", ".join(f"{s} {statuses[s]}" for s in pj.STATUSES if statuses[s])
        )
        if counts["awaiting_sweep"]:
            self.stdout.write(
                f"{counts['awaiting_sweep']} copied pumps have alerts to raise: the next sweep raises them "
                "(manage.py run_alert_sweep, or the worker within 5 minutes)."
            )
        self.stdout.write(self.style.SUCCESS(f"Sign in as '{DEMO_USERNAME}' with password '{DEMO_PASSWORD}'."))
        self.stdout.write(
            "To try a role, sign in as a demo staff member with the same password, e.g. "
            "'lakeshore.rn.hayes' (nurse) or 'lakeshore.dr.chen' (prescriber)."
        )
