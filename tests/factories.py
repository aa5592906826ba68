"""Small builders for test data (plain functions over the services and models)."""

from __future__ import annotations

from datetime import date

from django.contrib.auth import get_user_model
from django.db import connection

from clinic.models import Clinic, Membership
from pumps import projection as pj
from pumps.models import Patient, Pump, PumpModel
from pumps.services import Actor, implant_pump


def ensure_catalogs() -> None:
    """Transactional tests flush the database, migration-seeded catalogs included."""
    if not PumpModel.objects.exists():
        import importlib

        from django.apps import apps

        importlib.import_module("pumps.migrations.0002_seed_catalogs").seed(apps, None)


def make_clinic(code="north", name="North Clinic", timezone="America/Chicago", **policy) -> Clinic:
    ensure_catalogs()
    return Clinic.objects.create(code=code, name=name, timezone=timezone, **policy)


def make_user(username: str, clinic: Clinic | None = None, role: str = "nurse", **extra):
    user = get_user_model().objects.create_user(username=username, password="correct horse battery", **extra)
    if clinic is not None:
        Membership.objects.create(user=user, clinic=clinic, role=role)
    return user


def make_patient(clinic, mrn="MRN001", family_name="Garcia", given_name="Ana", origin="spinal",
                 high_risk=False, birth_date=date(1980, 5, 17), status="active") -> Patient:
    return Patient.objects.create(
        clinic=clinic, mrn=mrn, family_name=family_name, given_name=given_name, birth_date=birth_date,
        spasticity_origin=origin, withdrawal_high_risk=high_risk, status=status,
    )


def make_pump(patient, model_code="8637-40", implanted_on=date(2026, 1, 15), serial="SN-0001", **kwargs) -> Pump:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    now = datetime(2026, 1, 16, 12, tzinfo=ZoneInfo("UTC"))
    if implanted_on > now.date():
        now = datetime.combine(implanted_on, datetime.min.time(), tzinfo=ZoneInfo("UTC")).replace(hour=23)
    return implant_pump(
        patient=patient, model=PumpModel.objects.get(code=model_code), serial_number=serial,
        implanted_on=implanted_on, actor=Actor.system("test"), now=now, **kwargs,
    )


def stored_status(status: str) -> dict:
    """The columns of a stored status for ``Pump.objects.update``: the status and its rank
    (the constraint ``pump_urgency_is_status_rank`` keeps them together)."""
    return {"status": status, "urgency": pj.STATUSES.index(status)}


def query_plan(sql: str, params=None) -> str:
    """PostgreSQL's plan of ``sql`` with sequential scans and sorts priced out: what it
    shows is an index that can serve the query's filter and order, if there is one (a
    few test rows would otherwise be read whole)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())
