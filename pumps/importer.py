"""Spreadsheet import (``manage.py import_clinic_csv``): one CSV row per patient, with
the implanted pump, the last refill and the program in force. Columns: docs/import.md.

Every row goes through the services (``create_patient``, ``implant_pump``,
``record_refill`` with its embedded program, ``verify_program``), so an imported record
passes exactly the checks of the API and the staff pages, and the errors use their
messages. The whole file runs in one transaction, each row in a savepoint of its own:

- a dry run (the default) validates every row that way and then rolls everything back;
- a commit keeps the transaction only when every row is clean; one bad row and nothing
  at all is saved.

Errors are reported per row (the spreadsheet row number: the header is row 1), column
and message. A row's later parts are checked once its earlier parts are valid (the
refill needs the pump, the pump needs the patient), so fixing one error may reveal the
next; format errors of every column are reported at once.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from clinic.models import Clinic

from . import services
from .models import DrugProduct, Program, PumpModel

PATIENT_COLUMNS = (
    "mrn",
    "family_name",
    "given_name",
    "birth_date",
    "spasticity_origin",
    "withdrawal_high_risk",
    "high_risk_reason",
    "phone",
    "caregiver_phone",
)
PUMP_COLUMNS = ("pump_model", "serial_number", "udi", "implanted_on", "low_reservoir_alarm_ml")
REFILL_COLUMNS = (
    "last_refill_at",
    "added_volume_ml",
    "concentration_mcg_per_ml",
    "drug_product",
    "lot_number",
    "lot_expiry",
    "performed_by",
)
PROGRAM_COLUMNS = ("daily_dose_mcg", "flex_steps", "ptm_bolus_mcg", "ptm_max_per_day", "entered_by", "verified_by")
COLUMNS = PATIENT_COLUMNS + PUMP_COLUMNS + REFILL_COLUMNS + PROGRAM_COLUMNS
REQUIRED_HEADER = ("mrn", "family_name", "given_name", "birth_date", "spasticity_origin", "withdrawal_high_risk")

#: Where a service's field error belongs in the spreadsheet.
SERVICE_FIELD_COLUMN = {
    "performed_at": "last_refill_at",
    "patient": "mrn",
    "pump": "implanted_on",
    "program.concentration_mcg_per_ml": "concentration_mcg_per_ml",
    "program.daily_dose_mcg": "daily_dose_mcg",
    "program.steps": "flex_steps",
    "program.mode": "flex_steps",
    "program.override_reason": "daily_dose_mcg",
    "program.ptm_bolus_mcg": "ptm_bolus_mcg",
    "program.ptm_max_per_day": "ptm_max_per_day",
    "non_field_errors": "verified_by",
}

MSG_REQUIRED = "This field is required."
MSG_NUMBER = "A valid number is required."
MSG_INTEGER = "A valid integer is required."
MSG_DATE = "Enter a date as YYYY-MM-DD."
MSG_BOOLEAN = "Must be yes or no."
MSG_STEPS = "Write the steps as HH:MM=mcg/h separated by semicolons, for example 07:00=20; 19:30=15.5."

MAX_LENGTH = {
    "mrn": 64,
    "family_name": 100,
    "given_name": 100,
    "high_risk_reason": 300,
    "phone": 40,
    "caregiver_phone": 40,
    "serial_number": 64,
    "udi": 200,
    "lot_number": 64,
    "performed_by": 150,
    "entered_by": 150,
    "verified_by": 150,
}
WHOLE_DIGITS = {  # pumps.models.ML / DOSE: 9 and 12 digits with 3 decimals
    "low_reservoir_alarm_ml": 6,
    "added_volume_ml": 6,
    "concentration_mcg_per_ml": 9,
    "daily_dose_mcg": 9,
    "ptm_bolus_mcg": 9,
}

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LOCAL_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?$")
_STEP = re.compile(r"^(\S+)\s*=\s*(\S+)$")
_TRUE = {"yes", "y", "true", "1"}
_FALSE = {"no", "n", "false", "0"}


class ImportFileError(Exception):
    """The file cannot be read at all (not UTF-8, no header)."""


@dataclass(frozen=True)
class RowError:
    row: int  # spreadsheet row: the header is row 1
    column: str  # "" for the row as a whole
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}, {self.column}" if self.column else f"row {self.row}"
        return f"{where}: {self.message}"


@dataclass
class ImportReport:
    rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    committed: bool = False
    patients: int = 0
    pumps: int = 0
    refills: int = 0

    @property
    def clean(self) -> bool:
        return not self.errors

    @property
    def rows_with_errors(self) -> int:
        return len({e.row for e in self.errors})


# ------------------------------------------------------------------------ parsing


class _Row:
    """One data row: raw cells by column, typed values, and its errors."""

    def __init__(self, number: int, cells: dict[str, str], clinic: Clinic):
        self.number = number
        self.cells = cells
        self.clinic = clinic
        self.errors: list[RowError] = []

    def error(self, column: str, message: str) -> None:
        self.errors.append(RowError(self.number, column, message))

    def raw(self, column: str) -> str:
        return self.cells.get(column, "")

    def has_any(self, columns: Iterable[str]) -> bool:
        return any(self.raw(c) for c in columns)

    def errors_in(self, columns: Iterable[str]) -> bool:
        wanted = set(columns)
        return any(e.column in wanted for e in self.errors)

    def typed(self, column: str, parse: Callable[[str], Any], required: bool) -> Any:
        value = self.raw(column)
        if not value:
            if required:
                self.error(column, MSG_REQUIRED)
            return None
        try:
            return parse(value)
        except ValueError as exc:
            self.error(column, str(exc))
            return None

    def text(self, column: str, required: bool = False) -> str:
        value = self.raw(column)
        if not value and required:
            self.error(column, MSG_REQUIRED)
        limit = MAX_LENGTH.get(column)
        if limit is not None and len(value) > limit:
            self.error(column, f"Ensure this field has no more than {limit} characters.")
        return value

    def decimal(self, column: str, required: bool = False) -> Decimal | None:
        def parse(value: str) -> Decimal:
            if not _NUMBER.match(value):
                raise ValueError(MSG_NUMBER)
            number = Decimal(value)
            digits = WHOLE_DIGITS[column]
            if abs(number) >= Decimal(10) ** digits:
                raise ValueError(f"Ensure that there are no more than {digits} digits before the decimal point.")
            return number

        return self.typed(column, parse, required)

    def integer(self, column: str) -> int | None:
        def parse(value: str) -> int:
            if not _INTEGER.match(value):
                raise ValueError(MSG_INTEGER)
            number = int(value)
            if number > 32767:
                raise ValueError("Ensure this value is less than or equal to 32767.")
            return number

        return self.typed(column, parse, False)

    def date(self, column: str, required: bool = False) -> date | None:
        def parse(value: str) -> date:
            if not _DATE.match(value):
                raise ValueError(MSG_DATE)
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise ValueError(MSG_DATE) from None

        return self.typed(column, parse, required)

    def boolean(self, column: str, required: bool = False) -> bool | None:
        def parse(value: str) -> bool:
            lowered = value.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(MSG_BOOLEAN)

        return self.typed(column, parse, required)

    def instant(self, column: str, required: bool = False) -> datetime | None:
        return self.typed(column, lambda value: parse_instant(value, self.clinic.tz, self.clinic.timezone), required)


def parse_instant(value: str, tz: tzinfo, zone_name: str) -> datetime:
    """ISO 8601 with an offset (``2026-02-02T09:00:00-06:00``, ``Z`` allowed), or a
    local wall-clock time ``YYYY-MM-DD HH:MM`` in the clinic's zone. A local time that
    the clocks skipped, or that happened twice, is refused: give the offset."""
    hint = (
        f"Enter a date and time as 2026-02-02T09:00:00-06:00 (with its offset) or 2026-02-02 09:00 "
        f"(local time in {zone_name})."
    )
    try:
        moment = parse_datetime(value)
    except ValueError:
        moment = None
    if moment is None:
        raise ValueError(hint)
    if timezone.is_aware(moment):
        return moment
    if not _LOCAL_DATETIME.match(value):
        raise ValueError(hint)
    earlier, later = moment.replace(tzinfo=tz, fold=0), moment.replace(tzinfo=tz, fold=1)
    if earlier.utcoffset() != later.utcoffset():
        wall = moment.strftime("%Y-%m-%d %H:%M")
        if earlier.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != moment:
            raise ValueError(f"{wall} does not exist in {zone_name} (the clocks went forward): check the time.")
        iso = moment.strftime("%Y-%m-%dT%H:%M:%S")
        raise ValueError(
            f"{wall} happened twice in {zone_name} (the clocks went back): give the offset, "
            f"{iso}{_offset(earlier)} or {iso}{_offset(later)}."
        )
    return earlier


def _offset(moment: datetime) -> str:
    text = moment.strftime("%z")
    return f"{text[:3]}:{text[3:]}"


def parse_flex_steps(value: str) -> list[dict[str, str]]:
    """``07:00=20; 19:30=15.5`` → ``[{"start": "07:00", "dose_mcg_per_hour": "20"}, ...]``;
    the services check the times, their order and the doses."""
    steps = []
    for part in value.split(";"):
        if not part.strip():
            continue
        match = _STEP.match(part.strip())
        if not match or not _NUMBER.match(match.group(2)):
            raise ValueError(MSG_STEPS)
        steps.append({"start": match.group(1), "dose_mcg_per_hour": match.group(2)})
    if not steps:
        raise ValueError(MSG_STEPS)
    return steps


@dataclass
class _Parsed:
    patient: dict[str, Any]
    pump: dict[str, Any] | None
    refill: dict[str, Any] | None
    program: services.ProgramInput | None
    verified_by: str


def _parse(row: _Row, models: dict[str, PumpModel], products: dict[str, DrugProduct]) -> _Parsed:
    patient = {
        "mrn": row.text("mrn", required=True),
        "family_name": row.text("family_name", required=True),
        "given_name": row.text("given_name", required=True),
        "birth_date": row.date("birth_date", required=True),
        "spasticity_origin": row.text("spasticity_origin", required=True).lower(),
        "withdrawal_high_risk": row.boolean("withdrawal_high_risk", required=True),
        "high_risk_reason": row.text("high_risk_reason"),
        "phone": row.text("phone"),
        "caregiver_phone": row.text("caregiver_phone"),
    }
    wants_refill = row.has_any(REFILL_COLUMNS + PROGRAM_COLUMNS)
    pump = None
    if row.has_any(PUMP_COLUMNS) or wants_refill:
        model = None
        code = row.text("pump_model", required=True)
        if code:
            model = models.get(code)
            if model is None:
                row.error("pump_model", f'Unknown pump model code "{code}".')
        pump = {
            "model": model,
            "serial_number": row.text("serial_number", required=True),
            "udi": row.text("udi"),
            "implanted_on": row.date("implanted_on", required=True),
            "low_reservoir_alarm_ml": row.decimal("low_reservoir_alarm_ml"),
        }
    refill = program = None
    if wants_refill:
        product = None
        code = row.text("drug_product")
        if code:
            product = products.get(code)
            if product is None:
                row.error("drug_product", f'Unknown drug product code "{code}".')
        concentration = row.decimal("concentration_mcg_per_ml", required=True)
        refill = {
            "performed_at": row.instant("last_refill_at", required=True),
            "added_volume_ml": row.decimal("added_volume_ml", required=True),
            "concentration_mcg_per_ml": concentration,
            "drug_product": product,
            "lot_number": row.text("lot_number"),
            "lot_expiry": row.date("lot_expiry"),
            "performed_by": row.text("performed_by") or None,
        }
        steps = row.typed("flex_steps", parse_flex_steps, False)
        program = services.ProgramInput(
            concentration_mcg_per_ml=concentration,
            mode=Program.Mode.FLEX if row.raw("flex_steps") else Program.Mode.CONTINUOUS,
            daily_dose_mcg=row.decimal("daily_dose_mcg"),
            steps=steps,
            ptm_bolus_mcg=row.decimal("ptm_bolus_mcg"),
            ptm_max_per_day=row.integer("ptm_max_per_day"),
            entered_by=row.text("entered_by") or None,
        )
    return _Parsed(patient, pump, refill, program, row.text("verified_by"))


# ---------------------------------------------------------------------- reading


def read_rows(content: bytes | str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (normalized names) and the non-blank data rows with their spreadsheet
    row numbers. Comma, semicolon or tab separated; UTF-8 with or without a BOM."""
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ImportFileError('The file is not UTF-8 text: save the spreadsheet as "CSV UTF-8".') from None
    content = content.lstrip("\ufeff")
    first_line = content.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first_line.count)
    records = list(csv.reader(io.StringIO(content, newline=""), delimiter=delimiter))
    if not records or not any(cell.strip() for cell in records[0]):
        raise ImportFileError("The file is empty: the first row must name the columns (see docs/import-template.csv).")
    header = [cell.strip().lower() for cell in records[0]]
    rows = [(index + 2, record) for index, record in enumerate(records[1:]) if any(cell.strip() for cell in record)]
    return header, rows


def _header_errors(header: list[str], rows: list[tuple[int, list[str]]]) -> list[RowError]:
    """Unknown, repeated or missing required columns. A column without a name is fine
    while it is empty (spreadsheets often export a few); one holding values is not."""
    errors = []
    seen = set()
    for index, name in enumerate(header):
        if not name:
            if any(index < len(record) and record[index].strip() for _, record in rows):
                errors.append(
                    RowError(1, "", f"Column {index + 1} has no name but holds values: name it or remove it.")
                )
        elif name not in COLUMNS:
            errors.append(RowError(1, name, f"Unknown column. Known columns: {', '.join(COLUMNS)}."))
        elif name in seen:
            errors.append(RowError(1, name, "This column appears twice."))
        seen.add(name)
    for name in REQUIRED_HEADER:
        if name not in header:
            errors.append(RowError(1, name, "This column is required."))
    return errors


# ------------------------------------------------------------------------- import


class _RowFailed(Exception):
    pass


def _service_errors(row: _Row, exc: services.ServiceValidationError) -> None:
    for key, messages in exc.message_dict.items():
        if isinstance(messages, dict):  # a nested object: its fields are dotted
            _service_errors(row, services.ServiceValidationError({f"{key}.{k}": v for k, v in messages.items()}))
            continue
        column = SERVICE_FIELD_COLUMN.get(key, key.removeprefix("program."))
        for message in messages:
            row.error(column, str(message))


def import_clinic_csv(
    *,
    clinic: Clinic,
    content: bytes | str,
    commit: bool = False,
    source: str = "spreadsheet",
    now: datetime | None = None,
) -> ImportReport:
    """Validate (and with ``commit``, save) every row of the file; see the module doc."""
    now = now or timezone.now()
    header, rows = read_rows(content)
    report = ImportReport(rows=len(rows))
    report.errors = _header_errors(header, rows)
    if not rows:
        report.errors.append(RowError(1, "", "The file has no data rows."))
    if report.errors:
        return report

    models = {m.code: m for m in PumpModel.objects.all()}
    products = {p.code: p for p in DrugProduct.objects.select_related("drug")}
    actor = services.Actor.system(f"import_clinic_csv {source}")
    first_row_of_mrn: dict[str, int] = {}

    with transaction.atomic():
        for number, record in rows:
            cells = {name: (record[i].strip() if i < len(record) else "") for i, name in enumerate(header) if name}
            row = _Row(number, cells, clinic)
            if len(record) > len(header) and any(cell.strip() for cell in record[len(header) :]):
                row.error("", f"This row has {len(record)} cells; the header names {len(header)} columns.")
            parsed = _parse(row, models, products)
            mrn = parsed.patient["mrn"]
            if mrn:
                if mrn in first_row_of_mrn:
                    row.error("mrn", f"This MRN is already on row {first_row_of_mrn[mrn]} of this file.")
                else:
                    first_row_of_mrn[mrn] = number
            if not row.errors_in(["mrn"]):
                counts = _import_row(row, parsed, clinic, actor, now, source)
                if counts is not None:
                    report.patients += counts[0]
                    report.pumps += counts[1]
                    report.refills += counts[2]
            report.errors.extend(row.errors)
        report.committed = commit and not report.errors
        if not report.committed:
            transaction.set_rollback(True)
    return report


def _import_row(
    row: _Row, parsed: _Parsed, clinic: Clinic, actor: services.Actor, now: datetime, source: str
) -> tuple[int, int, int] | None:
    """Run the row through the services in a savepoint of its own, rolled back when the
    row has any error. Returns (patients, pumps, refills) saved, or None."""
    counts = [0, 0, 0]
    try:
        with transaction.atomic():
            _run_services(row, parsed, clinic, actor, now, source, counts)
            if row.errors:
                raise _RowFailed
    except _RowFailed:
        return None
    return counts[0], counts[1], counts[2]


def _run_services(
    row: _Row, parsed: _Parsed, clinic: Clinic, actor: services.Actor, now: datetime, source: str, counts: list[int]
) -> None:
    """Each part runs when its own columns parsed and the parts before it were saved."""
    if row.errors_in(PATIENT_COLUMNS):
        return
    patient = _call(row, services.create_patient, clinic=clinic, actor=actor, now=now, **parsed.patient)
    counts[0] = 1
    if parsed.pump is None or row.errors_in(PUMP_COLUMNS):
        return
    pump = _call(row, services.implant_pump, patient=patient, actor=actor, now=now, **parsed.pump)
    counts[1] = 1
    if parsed.refill is None or row.errors_in(REFILL_COLUMNS + PROGRAM_COLUMNS):
        return
    refill = _call(
        row,
        services.record_refill,
        pump=pump,
        actor=actor,
        now=now,
        program=parsed.program,
        notes=f"Imported from {source}, row {row.number}.",
        **parsed.refill,
    )
    counts[2] = 1
    if parsed.verified_by:
        _call(
            row, services.verify_program, program=refill.program, verified_by=parsed.verified_by, actor=actor, now=now
        )


def _call(row: _Row, service, **kwargs):
    try:
        return service(**kwargs)
    except services.ServiceValidationError as exc:
        _service_errors(row, exc)
        raise _RowFailed from None
