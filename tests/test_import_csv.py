"""``manage.py import_clinic_csv``: a clinic's spreadsheet of patients, pumps, last refills
and programs, checked through the services, imported all or nothing."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from clinic.models import Clinic
from pumps.importer import COLUMNS, ImportFileError, RowError, import_clinic_csv
from pumps.models import Alert, Notification, Patient, Program, Pump, Refill
from tests.api_support import AFTER_REFILL, CHICAGO, travel
from tests.factories import make_patient, make_user

TEMPLATE = Path(__file__).resolve().parent.parent / "docs" / "import-template.csv"

#: The worked example (docs/clinical-rules.md §12) as a spreadsheet row.
WORKED = {
    "mrn": "E-48",
    "family_name": "Example",
    "given_name": "Worked",
    "birth_date": "1970-01-01",
    "spasticity_origin": "spinal",
    "withdrawal_high_risk": "no",
    "pump_model": "8637-40",
    "serial_number": "NGP123456",
    "implanted_on": "2026-01-15",
    "last_refill_at": "2026-02-02T09:00:00-06:00",
    "added_volume_ml": "36",
    "concentration_mcg_per_ml": "1000",
    "drug_product": "gablofen-1000",
    "lot_number": "L123",
    "performed_by": "Nurse R. Lopez",
    "daily_dose_mcg": "450",
    "entered_by": "Dr. A. Smith",
}


def row(**overrides) -> dict:
    return {**WORKED, **overrides}


def csv_text(*rows: dict, columns=COLUMNS, delimiter=",") -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r.get(c, "") for c in columns})
    return out.getvalue()


def write(tmp_path, *rows: dict, name="clinic.csv") -> str:
    path = tmp_path / name
    path.write_text(csv_text(*rows), encoding="utf-8")
    return str(path)


def run(*args) -> str:
    out = io.StringIO()
    call_command("import_clinic_csv", *args, stdout=out)
    return out.getvalue()


def nothing_saved() -> bool:
    return not (
        Patient.objects.exists()
        or Pump.objects.exists()
        or Refill.objects.exists()
        or Program.objects.exists()
        or Alert.objects.exists()
        or Notification.objects.exists()
    )


def local(*args) -> datetime:
    return datetime(*args, tzinfo=CHICAGO)


# ------------------------------------------------------------------ clean files


def test_commit_imports_a_clean_file_through_the_services_with_the_exact_projection(clinic, tmp_path):
    path = write(tmp_path, row())
    with travel(AFTER_REFILL):
        output = run("--clinic", "north", path, "--commit")
    assert output == "Imported 1 rows into north: 1 patients, 1 pumps, 1 refills with their programs.\n"

    patient = Patient.objects.get()
    assert (
        patient.clinic,
        patient.mrn,
        patient.family_name,
        patient.given_name,
        patient.birth_date,
        patient.spasticity_origin,
        patient.withdrawal_high_risk,
    ) == (clinic, "E-48", "Example", "Worked", date(1970, 1, 1), "spinal", False)
    pump = Pump.objects.get()
    assert (pump.patient, pump.model.code, pump.serial_number, pump.implanted_on, pump.low_reservoir_alarm_ml) == (
        patient,
        "8637-40",
        "NGP123456",
        date(2026, 1, 15),
        Decimal("2.000"),
    )
    # The worked example (docs/clinical-rules.md §12): LRA 2026-04-18 23:20 CDT, empty 2026-04-23 10:00, due Friday 2026-04-10
    assert pump.status == "ok"
    assert pump.low_reservoir_alarm_at == local(2026, 4, 18, 23, 20)
    assert pump.empty_at == local(2026, 4, 23, 10, 0)
    assert pump.expected_low_reservoir_alarm_at == local(2026, 4, 18, 23, 20)
    assert pump.expected_empty_at == local(2026, 4, 23, 10, 0)
    assert pump.drug_expires_at == local(2026, 8, 1, 10, 0)
    assert pump.refill_due_on == date(2026, 4, 10)
    assert pump.anchor_at == local(2026, 2, 2, 9, 0)

    refill = Refill.objects.get()
    assert (
        refill.performed_at,
        refill.extracted_volume_ml,
        refill.added_volume_ml,
        refill.concentration_mcg_per_ml,
        refill.drug_product.code,
        refill.lot_number,
        refill.performed_by_external,
        refill.notes,
    ) == (
        local(2026, 2, 2, 9),
        None,
        Decimal("36.000"),
        Decimal("1000.000"),
        "gablofen-1000",
        "L123",
        "Nurse R. Lopez",
        "Imported from clinic.csv, row 2.",
    )
    program = Program.objects.get()
    assert (
        program.refill,
        program.effective_at,
        program.mode,
        program.daily_dose_mcg,
        program.concentration_mcg_per_ml,
        program.entered_by_external,
        program.verified_at,
    ) == (refill, local(2026, 2, 2, 9), "continuous", Decimal("450.000"), Decimal("1000.000"), "Dr. A. Smith", None)
    # the audit trail says where the record came from
    assert patient.history.get().history_change_reason == "import_clinic_csv clinic.csv"


def test_dry_run_checks_a_clean_file_and_saves_nothing(clinic, tmp_path):
    overdue = row(mrn="OLD-1", serial_number="S-2", last_refill_at="2026-02-02T09:00:00-06:00")
    path = write(tmp_path, row(), overdue | {"implanted_on": "2026-01-20"})
    with travel(local(2026, 6, 1, 12)):  # both pumps long overdue: a commit would raise alerts
        output = run("--clinic", "north", path)
    assert output == (
        "Dry run: all 2 rows are clean (2 patients, 2 pumps, 2 refills with their programs). Nothing was saved: "
        "run again with --commit to import them.\n"
    )
    assert nothing_saved()


def test_flex_program_with_on_demand_bolus_and_a_verifying_second_clinician(clinic, prescriber, nurse):
    second = make_user("dr_kim", clinic, "prescriber")
    content = csv_text(
        row(
            daily_dose_mcg="",
            flex_steps="07:00=20; 19:30=15.5",
            ptm_bolus_mcg="50",
            ptm_max_per_day="4",
            entered_by="dr_pat",
            verified_by="dr_kim",
        )
    )
    report = import_clinic_csv(clinic=clinic, content=content, commit=True, now=AFTER_REFILL)
    assert report.clean and report.committed
    program = Program.objects.get()
    assert program.mode == "flex"
    assert program.steps == [
        {"start": "07:00", "dose_mcg_per_hour": "20.000"},
        {"start": "19:30", "dose_mcg_per_hour": "15.500"},
    ]
    assert program.daily_dose_mcg == Decimal("428.250")
    assert (program.ptm_bolus_mcg, program.ptm_max_per_day) == (Decimal("50.000"), 4)
    assert (program.entered_by, program.verified_by, program.verified_at) == (prescriber, second, AFTER_REFILL)


def test_a_program_entered_or_verified_by_a_non_prescriber_is_a_row_error_and_nothing_is_saved(clinic, prescriber, nurse):
    entered_by_nurse = import_clinic_csv(
        clinic=clinic, content=csv_text(row(entered_by="nina", verified_by="dr_pat")), commit=True, now=AFTER_REFILL
    )
    assert [(e.row, e.column, e.message) for e in entered_by_nurse.errors] == [
        (2, "entered_by", "nina is a nurse in this clinic: entered_by must be a prescriber (physician)."),
    ]
    verified_by_nurse = import_clinic_csv(
        clinic=clinic, content=csv_text(row(entered_by="dr_pat", verified_by="nina")), commit=True, now=AFTER_REFILL
    )
    assert [(e.row, e.column, e.message) for e in verified_by_nurse.errors] == [
        (2, "verified_by", "nina is a nurse in this clinic: verified_by must be a prescriber (physician)."),
    ]
    same_person = import_clinic_csv(
        clinic=clinic, content=csv_text(row(entered_by="dr_pat", verified_by="dr_pat")), commit=True, now=AFTER_REFILL
    )
    assert [(e.row, e.column, e.message) for e in same_person.errors] == [
        (2, "verified_by", "A second clinician must verify: not the one who entered the program."),
    ]
    assert nothing_saved()


def test_identifiers_with_control_characters_are_row_errors(clinic):
    report = import_clinic_csv(
        clinic=clinic, content=csv_text(row(mrn="MRN\r\n77", serial_number="SN\t1")), commit=True, now=AFTER_REFILL
    )
    assert [(e.row, e.column, e.message) for e in report.errors] == [
        (2, "mrn", "Remove line breaks, tabs and other control characters from this field."),
    ]
    assert nothing_saved()


def test_patient_only_and_pump_without_refill_rows_are_allowed(clinic):
    patient_only = {
        k: WORKED[k]
        for k in ("mrn", "family_name", "given_name", "birth_date", "spasticity_origin", "withdrawal_high_risk")
    }
    pump_only = {
        **patient_only,
        "mrn": "P-2",
        "pump_model": "91-4200",
        "serial_number": "MS-1",
        "implanted_on": "2026-01-20",
        "low_reservoir_alarm_ml": "4",
    }
    report = import_clinic_csv(clinic=clinic, content=csv_text(patient_only, pump_only), commit=True, now=AFTER_REFILL)
    assert report.errors == []
    assert (report.patients, report.pumps, report.refills) == (2, 1, 0)
    pump = Pump.objects.get()
    assert (pump.patient.mrn, pump.low_reservoir_alarm_ml, pump.status) == ("P-2", Decimal("4.000"), "incomplete")


def test_the_documented_template_is_clean(clinic):
    report = import_clinic_csv(
        clinic=clinic, content=TEMPLATE.read_bytes(), commit=False, now=datetime(2025, 7, 1, 12, tzinfo=UTC)
    )
    assert report.errors == []
    assert (report.rows, report.patients, report.pumps, report.refills) == (3, 3, 2, 2)
    assert nothing_saved()


def test_excel_style_semicolon_file_with_a_byte_order_mark(clinic):
    content = "\ufeff" + csv_text(row(), delimiter=";")
    report = import_clinic_csv(clinic=clinic, content=content.encode("utf-8"), commit=True, now=AFTER_REFILL)
    assert report.clean and report.committed
    assert Patient.objects.get().mrn == "E-48"


# ------------------------------------------------------------------------ errors


def test_each_rows_errors_use_the_services_messages_and_nothing_is_saved(clinic):
    content = csv_text(
        row(),  # row 2: clean
        row(mrn="R3", birth_date="2031-01-01", spasticity_origin="spine"),
        row(mrn="R4", last_refill_at="2026-01-10T09:00:00-06:00"),
        row(mrn="R5", added_volume_ml="45", concentration_mcg_per_ml="500", daily_dose_mcg=""),
        row(mrn="R6", implanted_on="2026-03-01", low_reservoir_alarm_ml="40"),
        row(mrn="R7", last_refill_at="2026-02-02T11:00:00-06:00"),
    )
    report = import_clinic_csv(clinic=clinic, content=content, commit=False, now=AFTER_REFILL)
    assert report.errors == [
        RowError(3, "birth_date", "The birth date is in the future."),
        RowError(3, "spasticity_origin", "Must be one of: spinal, cerebral, mixed, unknown."),
        RowError(4, "last_refill_at", "This time is before the pump's implant date (2026-01-15)."),
        RowError(5, "added_volume_ml", "The volume after the refill (45 mL) exceeds the reservoir capacity of 40 mL."),
        RowError(5, "concentration_mcg_per_ml", "Gablofen 1000 mcg/mL is 1000 mcg/mL, not 500."),
        RowError(5, "daily_dose_mcg", "This field is required for a continuous program."),
        RowError(6, "implanted_on", "The implant date is in the future."),
        RowError(6, "low_reservoir_alarm_ml", "Must be below the reservoir capacity of 40 mL."),
        RowError(
            7, "last_refill_at", "This time is in the future; record what has happened (at most 5 minutes ahead)."
        ),
    ]
    assert report.rows_with_errors == 5 and report.rows == 6
    assert not report.committed
    assert nothing_saved()


def test_commit_refuses_when_any_row_has_errors_and_saves_no_row(clinic, tmp_path):
    path = write(tmp_path, row(), row(mrn="R3", serial_number="S-3", pump_model="8637-60"))
    with travel(AFTER_REFILL), pytest.raises(CommandError) as excinfo:
        run("--clinic", "north", path, "--commit")
    assert str(excinfo.value) == "1 errors in 1 of 2 rows: nothing was imported. Correct the file and run again."
    assert nothing_saved()  # not even the clean row 2


def test_command_prints_every_error_as_row_column_message(clinic, tmp_path):
    path = write(tmp_path, row(withdrawal_high_risk="maybe"), row(mrn="R3", drug_product="gablofen-3000"))
    out = io.StringIO()
    with travel(AFTER_REFILL), pytest.raises(CommandError, match="2 errors in 2 of 2 rows"):
        call_command("import_clinic_csv", "--clinic", "north", path, stdout=out)
    assert out.getvalue() == (
        "row 2, withdrawal_high_risk: Must be yes or no.\n"
        'row 3, drug_product: Unknown drug product code "gablofen-3000".\n'
    )


def test_duplicate_mrn_within_the_file_and_in_the_clinic(clinic):
    make_patient(clinic, mrn="EXISTING")
    content = csv_text(row(), row(serial_number="S-3"), row(mrn="EXISTING", serial_number="S-4"))
    report = import_clinic_csv(clinic=clinic, content=content, commit=True, now=AFTER_REFILL)
    assert report.errors == [
        RowError(3, "mrn", "This MRN is already on row 2 of this file."),
        RowError(4, "mrn", "A patient with this MRN already exists in this clinic."),
    ]
    assert list(Patient.objects.values_list("mrn", flat=True)) == ["EXISTING"]
    assert not Pump.objects.exists()


def test_unknown_pump_model_code(clinic):
    report = import_clinic_csv(clinic=clinic, content=csv_text(row(pump_model="8637-60")), now=AFTER_REFILL)
    assert report.errors == [RowError(2, "pump_model", 'Unknown pump model code "8637-60".')]


def test_format_errors_of_every_column_are_reported_at_once(clinic):
    content = csv_text(
        row(
            birth_date="17/05/1980",
            withdrawal_high_risk="",
            added_volume_ml="36 mL",
            flex_steps="07:00 20",
            ptm_max_per_day="four",
            ptm_bolus_mcg="10",
            lot_expiry="2027-02-30",
            concentration_mcg_per_ml="1234567890",
            family_name="x" * 101,
        )
    )
    report = import_clinic_csv(clinic=clinic, content=content, now=AFTER_REFILL)
    assert report.errors == [
        RowError(2, "family_name", "Ensure this field has no more than 100 characters."),
        RowError(2, "birth_date", "Enter a date as YYYY-MM-DD."),
        RowError(2, "withdrawal_high_risk", "This field is required."),
        RowError(
            2, "concentration_mcg_per_ml", "Ensure that there are no more than 9 digits before the decimal point."
        ),
        RowError(2, "added_volume_ml", "A valid number is required."),
        RowError(2, "lot_expiry", "Enter a date as YYYY-MM-DD."),
        RowError(
            2, "flex_steps", "Write the steps as HH:MM=mcg/h separated by semicolons, for example 07:00=20; 19:30=15.5."
        ),
        RowError(2, "ptm_max_per_day", "A valid integer is required."),
    ]


def test_flex_steps_are_checked_by_the_services(clinic):
    content = csv_text(
        row(daily_dose_mcg="", flex_steps="19:00=10; 07:00=20"),
        row(mrn="R3", serial_number="S-3", daily_dose_mcg="500", flex_steps="07:00=20; 19:00=15"),
    )
    report = import_clinic_csv(clinic=clinic, content=content, now=AFTER_REFILL)
    assert report.errors == [
        RowError(2, "flex_steps", "steps must be sorted by start time"),
        RowError(3, "daily_dose_mcg", "daily_dose_mcg 500 disagrees with the steps, which deliver 420 mcg/day"),
    ]


def test_refill_columns_need_the_pump_columns(clinic):
    content = csv_text(row(pump_model="", serial_number="", implanted_on=""))
    report = import_clinic_csv(clinic=clinic, content=content, now=AFTER_REFILL)
    assert report.errors == [
        RowError(2, "pump_model", "This field is required."),
        RowError(2, "serial_number", "This field is required."),
        RowError(2, "implanted_on", "This field is required."),
    ]


def test_header_must_name_known_columns_and_the_required_ones(clinic):
    content = "mrn,familyname,given_name,birth_date,spasticity_origin,given_name\nM1,X,Y,1970-01-01,spinal,Y\n"
    report = import_clinic_csv(clinic=clinic, content=content, now=AFTER_REFILL)
    assert report.errors == [
        RowError(1, "familyname", f"Unknown column. Known columns: {', '.join(COLUMNS)}."),
        RowError(1, "given_name", "This column appears twice."),
        RowError(1, "family_name", "This column is required."),
        RowError(1, "withdrawal_high_risk", "This column is required."),
    ]
    assert nothing_saved()


def test_a_file_that_is_not_utf8_or_has_no_rows(clinic, tmp_path):
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(csv_text(row(family_name="Muñoz")).encode("latin-1"))
    with pytest.raises(
        CommandError, match=r'latin1.csv: The file is not UTF-8 text: save the spreadsheet as "CSV UTF-8".'
    ):
        run("--clinic", "north", str(latin))
    with pytest.raises(ImportFileError):
        import_clinic_csv(clinic=clinic, content=b"")
    report = import_clinic_csv(clinic=clinic, content=csv_text())
    assert report.errors == [RowError(1, "", "The file has no data rows.")]


def test_unknown_clinic(db, tmp_path):
    Clinic.objects.create(code="lake", name="Lake", timezone="UTC")
    with pytest.raises(CommandError, match=r"No clinic with code 'north' \(known clinics: lake\)."):
        run("--clinic", "north", write(tmp_path, row()))


# --------------------------------------------------------------------- datetimes


def test_local_times_are_in_the_clinics_zone_and_offsets_are_kept(clinic):
    content = csv_text(
        row(mrn="LOCAL", serial_number="S-1", last_refill_at="2026-02-02 09:00"),
        row(mrn="OFFSET", serial_number="S-2", last_refill_at="2026-02-02T09:00:00+01:00"),
        row(mrn="ZULU", serial_number="S-3", last_refill_at="2026-02-02T14:30:00Z"),
        row(mrn="T-LOCAL", serial_number="S-4", last_refill_at="2026-02-02T08:15"),
    )
    report = import_clinic_csv(clinic=clinic, content=content, commit=True, now=AFTER_REFILL)
    assert report.errors == []
    performed = dict(Refill.objects.values_list("pump__patient__mrn", "performed_at"))
    assert performed == {
        "LOCAL": datetime(2026, 2, 2, 15, 0, tzinfo=UTC),  # 09:00 CST = 15:00 UTC
        "OFFSET": datetime(2026, 2, 2, 8, 0, tzinfo=UTC),
        "ZULU": datetime(2026, 2, 2, 14, 30, tzinfo=UTC),
        "T-LOCAL": datetime(2026, 2, 2, 14, 15, tzinfo=UTC),
    }


def test_local_times_the_clocks_skipped_or_repeated_are_refused(clinic):
    content = csv_text(
        row(mrn="GAP", serial_number="S-1", last_refill_at="2026-03-08 02:30"),
        row(mrn="TWICE", serial_number="S-2", last_refill_at="2026-11-01 01:30"),
        row(mrn="SUMMER", serial_number="S-3", last_refill_at="2026-07-01 09:00", added_volume_ml="20"),
        row(mrn="BAD", serial_number="S-4", last_refill_at="02/02/2026 09:00"),
    )
    report = import_clinic_csv(clinic=clinic, content=content, now=local(2026, 11, 2, 12))
    assert report.errors == [
        RowError(
            2,
            "last_refill_at",
            "2026-03-08 02:30 does not exist in America/Chicago (the clocks went forward): check the time.",
        ),
        RowError(
            3,
            "last_refill_at",
            "2026-11-01 01:30 happened twice in America/Chicago (the clocks went back): "
            "give the offset, 2026-11-01T01:30:00-05:00 or 2026-11-01T01:30:00-06:00.",
        ),
        RowError(
            5,
            "last_refill_at",
            "Enter a date and time as 2026-02-02T09:00:00-06:00 (with its offset) or "
            "2026-02-02 09:00 (local time in America/Chicago).",
        ),
    ]


def test_empty_unnamed_columns_are_ignored_but_unnamed_values_are_refused(clinic):
    text = csv_text(row())
    header, data = text.splitlines()
    report = import_clinic_csv(clinic=clinic, content=f"{header},,\n{data},,\n", now=AFTER_REFILL)
    assert report.errors == []
    report = import_clinic_csv(clinic=clinic, content=f"{header},\n{data},oops\n", now=AFTER_REFILL)
    n = len(COLUMNS) + 1
    assert report.errors == [RowError(1, "", f"Column {n} has no name but holds values: name it or remove it.")]
