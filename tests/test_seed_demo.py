"""``manage.py seed_demo``: realistic, deterministic, written through the services, and
showing every status as of the real current time."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from clinic.models import Clinic, Membership
from pumps import projection as pj
from pumps.models import Event, Patient, Program, Pump, Reading, Refill
from pumps.services import project_pump

ROOT = Path(__file__).resolve().parent.parent
PUMPS = 14

# Every test here uses the database (the module fixture too: the marker is what makes
# pytest-django set up the test database before it).
pytestmark = pytest.mark.django_db


def demo_digest() -> str:
    """A digest of the demo's clinical data by natural keys (no ids, no wall-clock
    timestamps), so that two databases can be compared."""
    rows = []
    for c in Clinic.objects.order_by("code"):
        rows.append(["clinic", c.code, c.name, c.timezone, sorted(c.closure_dates())])
    for p in Patient.objects.select_related("clinic").order_by("clinic__code", "mrn"):
        rows.append(["patient", p.clinic.code, p.mrn, p.family_name, p.given_name, p.birth_date, p.spasticity_origin,
                     p.withdrawal_high_risk, p.high_risk_reason, p.phone, p.status])
    for p in Pump.objects.select_related("patient", "model").order_by("serial_number"):
        rows.append(["pump", p.patient.mrn, p.model.code, p.serial_number, p.implanted_on, p.explanted_on,
                     p.low_reservoir_alarm_ml, p.expected_end_of_service, p.status, p.refill_due_on,
                     p.low_reservoir_alarm_at, p.empty_at, p.drug_expires_at])
    for r in Refill.objects.select_related("pump", "drug_product").order_by("pump__serial_number", "performed_at"):
        rows.append(["refill", r.pump.serial_number, r.performed_at, r.extracted_volume_ml, r.added_volume_ml,
                     r.residual_left_ml, r.bridge_bolus_ml, r.concentration_mcg_per_ml, r.drug_product.code,
                     r.lot_number, r.lot_expiry, r.expected_residual_ml, r.discrepancy_ml, r.discrepancy_flagged])
    for p in Program.objects.select_related("pump").order_by("pump__serial_number", "effective_at"):
        rows.append(["program", p.pump.serial_number, p.effective_at, p.mode, p.daily_dose_mcg,
                     p.concentration_mcg_per_ml, p.steps, p.ptm_bolus_mcg, p.ptm_max_per_day, p.override_reason,
                     p.verified_at])
    for r in Reading.objects.select_related("pump").order_by("pump__serial_number", "read_at"):
        rows.append(["reading", r.pump.serial_number, r.read_at, r.reservoir_volume_ml, r.eri])
    for e in Event.objects.select_related("pump").order_by("pump__serial_number", "occurred_at"):
        rows.append(["event", e.pump.serial_number, e.kind, e.occurred_at, e.notes])
    return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()


def seed(*args) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


@pytest.fixture(scope="module")
def demo(django_db_setup, django_db_blocker):
    """One demo (as of the real current time) for the tests of this module, rolled back
    at the end of the module."""
    with django_db_blocker.unblock(), transaction.atomic():
        output = seed("--pumps", str(PUMPS), "--seed", "3")
        yield output
        transaction.set_rollback(True)


# --------------------------------------------------------------------- determinism


def _seed_fresh_database(tmp_path: Path, name: str, seed_value: int) -> str:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / name}.sqlite3",
        "PUMPCLINIC_VAR_DIR": str(tmp_path / f"var-{name}"),
        "LOG_LEVEL": "ERROR",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    for command in (
        ["migrate", "--no-input", "-v", "0"],
        ["seed_demo", "--pumps", "12", "--seed", str(seed_value), "--now", "2026-04-15T15:30:00Z"],
    ):
        subprocess.run(manage + command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    done = subprocess.run(
        manage + ["shell", "-c", "from tests.test_seed_demo import demo_digest; print('DIGEST', demo_digest())"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120,
    )
    return next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("DIGEST "))


def test_same_seed_in_two_fresh_databases_gives_the_same_data(tmp_path):
    first = _seed_fresh_database(tmp_path, "one", 11)
    second = _seed_fresh_database(tmp_path, "two", 11)
    assert first == second


PLAN_CHECK = """
import json
from django.utils.dateparse import parse_datetime
from clinic.models import Clinic
from pumps import planning
at = parse_datetime("2026-04-15T15:30:00Z")
out = {}
for clinic in Clinic.objects.order_by("code"):
    plan = planning.clinic_plan(clinic, at=at).plan
    full = [d for d in plan.days if d.capacity and d.load >= d.capacity]
    clinic.refill_slots_per_day = 1
    clinic.refill_slots_by_weekday = [None if v is None else min(v, 1) for v in clinic.refill_slots_by_weekday]
    lowered = planning.clinic_plan(clinic, at=at).plan
    out[clinic.code] = {
        "full": len(full), "over": sum(d.over for d in plan.days),
        "capacity_shortfalls": sum(s.reason == "capacity" for s in plan.shortfalls),
        "lowered_capacity_shortfalls": sum(s.reason == "capacity" for s in lowered.shortfalls),
    }
print("PLAN", json.dumps(out))
"""


def test_the_demo_plan_fills_some_days_and_falls_short_with_less_capacity(tmp_path):
    """The demo's capacities (Lakeshore: Tuesdays and Thursdays, 3 refills; Thames: 2 a
    day) and its bookings, which respect them, give a plan with days at capacity, no day
    booked over capacity and every pump placed; with one refill a refill day some pumps
    cannot be booked in time for lack of capacity."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'plan'}.sqlite3",
        "PUMPCLINIC_VAR_DIR": str(tmp_path / "var-plan"),
        "LOG_LEVEL": "ERROR",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    for command in (
        ["migrate", "--no-input", "-v", "0"],
        ["seed_demo", "--pumps", "40", "--seed", "1", "--now", "2026-04-15T15:30:00Z"],
    ):
        subprocess.run(manage + command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    done = subprocess.run(manage + ["shell", "-c", PLAN_CHECK], cwd=ROOT, env=env, check=True, capture_output=True,
                          text=True, timeout=120)
    plans = json.loads(next(line[5:] for line in done.stdout.splitlines() if line.startswith("PLAN ")))
    assert set(plans) == {"lakeshore", "thames"}
    assert sum(p["full"] for p in plans.values()) >= 1, plans
    assert all(p["over"] == 0 and p["capacity_shortfalls"] == 0 for p in plans.values()), plans
    assert sum(p["lowered_capacity_shortfalls"] for p in plans.values()) >= 1, plans


def test_demo_clinics_have_their_refill_capacity(demo):
    capacities = {c.code: (c.refill_slots_per_day, c.refill_slots_by_weekday) for c in Clinic.objects.all()}
    assert capacities == {"lakeshore": (3, [0, None, 0, None, 0, None, None]), "thames": (2, [None] * 7)}


# ------------------------------------------------------------ every status, today


def test_every_status_is_present_as_of_now(demo):
    stored = set(Pump.objects.values_list("status", flat=True))
    assert stored == set(pj.STATUSES)
    # The stored status is the live projection of the real current time.
    now = timezone.now()
    for pump in Pump.objects.select_related("clinic", "patient", "model"):
        assert project_pump(pump, now).status == pump.status, pump.serial_number


def test_demo_creates_the_requested_number_of_pumps_in_two_time_zones(demo):
    assert Pump.objects.count() == PUMPS
    zones = dict(Clinic.objects.values_list("code", "timezone"))
    assert zones == {"lakeshore": "America/Chicago", "thames": "Europe/London"}
    assert set(Pump.objects.values_list("clinic__code", flat=True)) == {"lakeshore", "thames"}
    assert "Sign in as 'demo' with password 'demo-pump-clinic'" in demo


def test_demo_histories_cover_the_clinical_cases(demo):
    assert Program.objects.filter(mode="flex").exclude(steps=[]).exists()
    assert Program.objects.filter(ptm_bolus_mcg__gt=0, ptm_max_per_day__gt=0).exists()
    assert Patient.objects.filter(withdrawal_high_risk=True).exclude(high_risk_reason="").exists()
    assert Pump.objects.filter(explanted_on__isnull=False).exists()
    # a replacement: a patient with an explanted and an implanted pump
    replaced = Patient.objects.filter(pumps__explanted_on__isnull=False).filter(pumps__explanted_on__isnull=True)
    assert replaced.exists()
    # a concentration change: a refill with a bridge bolus carrying a new program
    bridged = Refill.objects.filter(bridge_bolus_ml__gt=0).first()
    assert bridged is not None and Program.objects.filter(refill=bridged).exists()
    assert Refill.objects.filter(discrepancy_flagged=True).exists()
    assert Reading.objects.exists()
    assert Event.objects.filter(kind=Event.Kind.MRI).exists()
    # every pump model family of the catalog in use
    manufacturers = set(Pump.objects.values_list("model__manufacturer", flat=True))
    assert manufacturers == {"Medtronic", "Flowonix", "Codman"}


def test_demo_refills_carry_the_checks_computed_by_the_services(demo):
    for refill in Refill.objects.select_related("pump"):
        earlier = Refill.objects.filter(pump=refill.pump, performed_at__lt=refill.performed_at).exists()
        if not earlier:
            assert refill.extracted_volume_ml is None and refill.discrepancy_ml is None
        elif Program.objects.filter(pump=refill.pump, effective_at__lte=refill.performed_at).exists():
            assert refill.expected_residual_ml is not None
            assert refill.discrepancy_ml == refill.extracted_volume_ml + refill.residual_left_ml - refill.expected_residual_ml


def test_demo_records_are_written_through_the_services_with_an_audit_trail(demo):
    refill = Refill.objects.order_by("pk").first()
    history = refill.history.order_by("history_date").first()
    assert history.history_type == "+"
    assert "demo" in (history.history_change_reason or "")
    assert Pump.history.filter(history_type="+").count() == PUMPS
    # Each program was recorded as of its own instant (``now=``), not as of today, and
    # verified by a second clinician; one program is left for verification.
    assert all(p.entered_at == p.effective_at for p in Program.objects.all())
    verified = Program.objects.filter(verified_at__isnull=False)
    assert all(p.verified_by_id != p.entered_by_id for p in verified)
    assert Program.objects.filter(verified_at__isnull=True).count() >= 1


def test_demo_user_signs_in_and_belongs_to_every_demo_clinic(demo, client):
    user = get_user_model().objects.get(username="demo")
    assert user.check_password("demo-pump-clinic")
    assert user.is_superuser and user.is_staff
    assert set(Membership.objects.filter(user=user).values_list("clinic__code", flat=True)) == {"lakeshore", "thames"}
    assert client.login(username="demo", password="demo-pump-clinic")


# ------------------------------------------------- the planner's values are the models'


def test_the_planners_plain_values_are_the_models_choices():
    """``pumps.demo`` plans without Django: its roles, origins, event kinds and catalog
    codes must stay the models' values."""
    from clinic.models import Role
    from pumps.demo import specs
    from pumps.models import PumpModel

    assert (specs.NURSE, specs.PRESCRIBER, specs.PHARMACIST) == (Role.NURSE, Role.PRESCRIBER, Role.PHARMACIST)
    assert {o for o, _ in specs.ORIGIN_WEIGHTS} == set(Patient.Origin.values)
    assert {specs.EVENT_MRI, specs.EVENT_ALARM_REPORTED, specs.EVENT_WITHDRAWAL} <= set(Event.Kind.values)
    assert {code for code, _ in specs.MODEL_WEIGHTS} <= set(PumpModel.objects.values_list("code", flat=True))


def test_demo_tells_the_dose_and_response_story(demo):
    """A dose titrated up at every refill while the highest Ashworth grade falls; an overdose
    screen the morning after a large increase (its alert names the increase, acknowledged
    and settled by the next negative screen); a patient on an opioid; the explant's plan."""
    from pumps import charts
    from pumps.models import Alert, AlertKind, Assessment, CoMedication, WithdrawalPlan

    titrated = Pump.objects.get(assessments__goal_note__startswith="Stand for transfers")
    rows = list(Assessment.objects.filter(pump=titrated).order_by("assessed_at"))
    assert [charts.highest_ashworth(a) for a in rows] == ["3", "3", "2", "2", "1+"]
    assert all(a.refill_id is not None and a.assessed_by is not None for a in rows)  # with each refill, by a nurse
    doses = [a.refill.program.daily_dose_mcg for a in rows[1:]]
    assert doses == sorted(doses) and len(set(doses)) == len(doses)
    chart = charts.response_chart(programs=list(titrated.programs.all()), assessments=rows, now=timezone.now(),
                                  tz=titrated.clinic.tz)
    assert chart is not None and "3 on" in str(chart.svg)

    alert = Alert.objects.get(kind=AlertKind.OVERDOSE_SYMPTOMS)
    assert alert.message.startswith("Overdose signs recorded at ")
    assert ": drowsiness, somnolence. The daily dose was increased from " in alert.message
    assert alert.acknowledgement_reason.startswith("Seen in clinic: drowsy but rousable")
    assert alert.resolved_at is not None  # the next refill's negative screen settled it
    assert not Alert.objects.filter(kind=AlertKind.WITHDRAWAL_SYMPTOMS).exists()

    opioid = CoMedication.objects.get(category="opioid")
    assert opioid.stopped_on is None and opioid.is_active_on(timezone.localdate())
    assert CoMedication.objects.get(category="benzodiazepine").stopped_on is not None
    assert Assessment.objects.filter(pump__patient=opioid.patient).count() == 6

    plan = WithdrawalPlan.objects.get(stop="explant")
    assert (plan.plan, plan.oral_bridge_dose) == ("oral_bridge", "20 mg four times a day")
