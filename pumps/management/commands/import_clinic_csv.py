"""``manage.py import_clinic_csv --clinic C FILE [--commit]``

Imports a clinic's spreadsheet (one row per patient: the implanted pump, the last refill
and the program in force; columns in docs/import.md, template docs/import-template.csv).

Without ``--commit`` it is a dry run: every row is checked through the same services as
the API and nothing is saved. With ``--commit`` the rows are saved in one transaction,
only when every row is clean. Errors are printed one a line as ``row N, column: message``
and the command exits with status 1.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from clinic.models import Clinic
from clinic.terminal import safe
from pumps.importer import ImportFileError, import_clinic_csv


class Command(BaseCommand):
    help = (
        "Import patients, pumps, last refills and programs from a CSV file (dry run unless --commit). "
        "Columns: docs/import.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("--clinic", required=True, help="Code of the clinic the patients belong to.")
        parser.add_argument("file", help="The CSV file (UTF-8; comma, semicolon or tab separated).")
        parser.add_argument(
            "--commit",
            action="store_true",
            help="Save the rows (all or nothing). Without it, only check them and save nothing.",
        )

    def handle(self, *args, clinic, file, commit, **options):
        found = Clinic.objects.filter(code=clinic.strip()).first()
        if found is None:
            known = ", ".join(Clinic.objects.values_list("code", flat=True)) or "none yet"
            raise CommandError(f"No clinic with code '{safe(clinic)}' (known clinics: {safe(known)}).")
        path = Path(file)
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {safe(file)}: {safe(exc.strerror or exc)}.") from None
        try:
            report = import_clinic_csv(clinic=found, content=content, commit=commit, source=path.name)
        except ImportFileError as exc:
            raise CommandError(f"{safe(file)}: {safe(exc)}") from None

        for error in report.errors:
            self.stdout.write(safe(error))
        records = f"{report.patients} patients, {report.pumps} pumps, {report.refills} refills with their programs"
        if report.errors:
            raise CommandError(
                f"{len(report.errors)} errors in {report.rows_with_errors} of {report.rows} rows: nothing was "
                "imported. Correct the file and run again."
            )
        if report.committed:
            self.stdout.write(self.style.SUCCESS(f"Imported {report.rows} rows into {safe(found.code)}: {records}."))
        else:
            self.stdout.write(
                f"Dry run: all {report.rows} rows are clean ({records}). Nothing was saved: run again with "
                "--commit to import them."
            )
