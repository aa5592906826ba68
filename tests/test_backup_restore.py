"""Backups (README "Backups"): a ``pg_dump --format=custom`` of the database restored
with ``pg_restore --clean --if-exists --no-owner`` into a fresh database holds every
record, and each pump's stored projection, exactly as they were."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from datetime import datetime
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from django.db import connection

from clinic.models import Clinic
from pumps import services as s
from pumps.alerting.evaluate import evaluate_pump
from pumps.models import Alert, Patient, Program, Pump, Reading, Refill
from tests.conftest import require_service
from tests.factories import make_clinic, make_patient, make_pump, make_user

CHICAGO = ZoneInfo("America/Chicago")
FILLED_AT = datetime(2026, 2, 2, 9, 0, tzinfo=CHICAGO)
READ_AT = datetime(2026, 3, 1, 9, 0, tzinfo=CHICAGO)
SWEEP_AT = datetime(2026, 3, 28, 12, 0, tzinfo=CHICAGO)  # 13 days before the refill is due
MODELS = (Clinic, Patient, Pump, Refill, Program, Reading, Alert, Refill.history.model, Program.history.model)


def tools() -> dict[str, str]:
    found = {}
    for name in ("pg_dump", "pg_restore", "createdb", "dropdb"):
        path = shutil.which(name)
        if path is None:
            require_service(name, "install the PostgreSQL client programs to test backup and restore")
        found[name] = path
    return found


def libpq_env() -> dict[str, str]:
    """The test database's server and role, for the PostgreSQL client programs."""
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(PGHOST=db["HOST"] or "localhost", PGPORT=str(db["PORT"] or 5432), PGUSER=db["USER"] or "postgres")
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = db["PASSWORD"]
    return env


def run(*args: str) -> None:
    result = subprocess.run(args, env=libpq_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stdout}{result.stderr}"


def snapshot_here() -> dict:
    """What the restored database must hold: the ids of every record of each table."""
    ids = {model._meta.db_table: sorted(model.objects.values_list("pk", flat=True)) for model in MODELS}
    return {"ids": ids, "pumps": sorted(Pump.objects.values_list("id", "refill_due_on", "status", "version"))}


def snapshot_of(dbname: str) -> dict:
    import psycopg

    db = connection.settings_dict
    with psycopg.connect(
        dbname=dbname, host=db["HOST"] or "localhost", port=db["PORT"] or 5432, user=db["USER"] or "postgres",
        password=db.get("PASSWORD") or None,
    ) as conn, conn.cursor() as cur:
        ids = {}
        for model in MODELS:
            table, pk = model._meta.db_table, model._meta.pk.column
            cur.execute(f'SELECT "{pk}" FROM "{table}" ORDER BY "{pk}"')  # noqa: S608 - names from the models
            ids[table] = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT id, refill_due_on, status, version FROM pumps_pump ORDER BY id")
        pumps = [tuple(row) for row in cur.fetchall()]
    return {"ids": ids, "pumps": pumps}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_dump_and_restore_into_a_fresh_database_keeps_every_record(tmp_path):
    programs = tools()
    clinic = make_clinic(code="north", name="North Clinic", timezone="America/Chicago")
    nurse = make_user("nina", clinic, "nurse")
    doctor = make_user("dr_pat", clinic, "prescriber")
    patient = make_patient(clinic, mrn="MRN-BACKUP", family_name="Garcia", given_name="Ana")
    pump = make_pump(patient, serial="SN-BACKUP")
    refill = s.record_refill(
        pump=pump, performed_at=FILLED_AT, added_volume_ml=D("36"), concentration_mcg_per_ml=D("1000"),
        actor=s.Actor(doctor), now=FILLED_AT,
        program=s.ProgramInput(concentration_mcg_per_ml=D("1000"), daily_dose_mcg=D("450")),
    )
    s.record_reading(pump=pump, read_at=READ_AT, reservoir_volume_ml=D("23.85"), actor=s.Actor(nurse), now=READ_AT)
    pump.refresh_from_db()
    evaluate_pump(pump, SWEEP_AT)

    before = snapshot_here()
    assert Program.objects.get().refill_id == refill.pk
    assert Reading.objects.count() == 1
    assert Alert.objects.filter(pump=pump, kind="refill_due_soon").count() == 1
    assert pump.refill_due_on is not None
    assert before["pumps"] == [(pump.pk, pump.refill_due_on, pump.status, pump.version)]
    for table, ids in before["ids"].items():
        assert ids, f"no row in {table}"

    source = connection.settings_dict["NAME"]
    dump = tmp_path / "pumpclinic.dump"
    fresh = f"{source}_restore_{uuid.uuid4().hex[:8]}"
    run(programs["pg_dump"], "--format=custom", f"--file={dump}", source)
    assert dump.read_bytes()[:5] == b"PGDMP"  # the custom format
    run(programs["createdb"], fresh)
    try:
        run(programs["pg_restore"], "--clean", "--if-exists", "--no-owner", f"--dbname={fresh}", str(dump))
        after = snapshot_of(fresh)
    finally:
        run(programs["dropdb"], "--if-exists", fresh)

    assert after == before  # every record of every table, and each pump's stored projection
    single = ("clinic_clinic", "pumps_patient", "pumps_pump", "pumps_refill", "pumps_program", "pumps_reading")
    assert {table: len(after["ids"][table]) for table in single} == dict.fromkeys(single, 1)
    assert len(after["ids"]["pumps_alert"]) == Alert.objects.count() >= 1
    assert after["pumps"][0][1] == pump.refill_due_on
