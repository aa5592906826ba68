"""The set-based refresh (pumps/bulk_refresh.py) leaves exactly what the per-pump path
(``sweep_pumps_one_by_one``) leaves: the same pump rows, alerts (and their audit rows) and
notifications, on a varied set of pumps, over a sequence of sweeps with clinical writes
between them. PostgreSQL only (``FOR UPDATE SKIP LOCKED``, ``UPDATE … FROM (VALUES …)``)."""

from __future__ import annotations

import re
import threading
import time
from datetime import date, datetime, timedelta
from decimal import Decimal as D

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from clinic.models import AlertRecipient, ApiClient, ClinicClosure, Membership
from pumps import bulk_refresh
from pumps import services as s
from pumps.alerting import sweep as alert_sweep
from pumps.alerting.recipients import recipients_for
from pumps.alerting.rules import RULES
from pumps.alerting.sweep import due_pumps
from pumps.models import Alert, Event, Notification, Program, Pump, Refill
from tests.conftest import CHICAGO
from tests.factories import make_clinic, make_patient, make_pump, make_user

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 2, 2, 9, 0, tzinfo=CHICAGO)
WRITE_NOW = datetime(2026, 2, 2, 12, 0, tzinfo=CHICAGO)


def _fill(pump, actor, at=T0, volume=D(36), dose=D(450), mode="continuous", steps=None, verify=None,
          extracted=None):
    program = s.ProgramInput(concentration_mcg_per_ml=D(1000), mode=mode, steps=steps,
                             daily_dose_mcg=None if mode == "flex" else dose)
    s.record_refill(pump=pump, performed_at=at, added_volume_ml=volume, concentration_mcg_per_ml=D(1000),
                    extracted_volume_ml=extracted, actor=actor, program=program, now=at + timedelta(hours=3))
    if verify is not None:
        for p in Program.objects.filter(pump=pump, verified_at__isnull=True):
            s.verify_program(program=p, actor=verify, now=at + timedelta(hours=3))


def build_network():
    """Pumps in every state the rules tell apart, in two clinics (recipients, an
    escalation address, a webhook, a closure)."""
    north = make_clinic(code="north", timezone="America/Chicago")
    west = make_clinic(code="west", name="West", timezone="Europe/London")
    AlertRecipient.objects.create(clinic=north, email="ward@north.example")
    AlertRecipient.objects.create(clinic=north, email="oncall@north.example", escalation=True)
    AlertRecipient.objects.create(clinic=west, email="ward@west.example")
    ClinicClosure.objects.create(clinic=west, date=date(2026, 4, 3))
    hook, _ = ApiClient.create_with_token(clinic=north, name="EHR", can_write=False)
    ApiClient.objects.filter(pk=hook.pk).update(webhook_url="https://ehr.example/hook")
    actors = {}
    for clinic in (north, west):
        dr = make_user(f"dr-{clinic.code}", clinic, "prescriber", email=f"dr@{clinic.code}.example")
        dr2 = make_user(f"dr2-{clinic.code}", clinic, "prescriber")
        nurse = make_user(f"rn-{clinic.code}", clinic, "nurse", email=f"rn@{clinic.code}.example")
        Membership.objects.filter(user=nurse).update(receives_alerts=True)
        actors[clinic.code] = (s.Actor(dr), s.Actor(dr2), s.Actor(nurse))

    pumps = {}
    serial = iter(range(1, 100))

    def new(clinic, model="8637-40", high_risk=False, **kw):
        n = next(serial)
        patient = make_patient(clinic, mrn=f"MRN{n:03d}", high_risk=high_risk)
        return make_pump(patient, model_code=model, serial=f"SN-{n:04d}", **kw)

    for clinic in (north, west):
        dr, dr2, nurse = actors[clinic.code]
        c = clinic.code
        pumps[f"{c}-worked"] = p = new(clinic)
        _fill(p, dr, verify=dr2)
        pumps[f"{c}-flex-high-risk"] = p = new(clinic, high_risk=True)
        _fill(p, dr, mode="flex", verify=dr2, steps=[
            {"start": "06:00", "dose_mcg_per_hour": "22"}, {"start": "22:00", "dose_mcg_per_hour": "14"}])
        pumps[f"{c}-reading-mri"] = p = new(clinic)
        _fill(p, dr, verify=dr2)
        s.record_reading(pump=p, read_at=T0 + timedelta(days=20), reservoir_volume_ml=D(27), actor=nurse,
                         now=T0 + timedelta(days=20, hours=1))
        s.record_event(pump=p, kind="mri", occurred_at=T0 + timedelta(days=25), actor=nurse,
                       now=T0 + timedelta(days=25, hours=1))
        pumps[f"{c}-prometra-mri"] = p = new(clinic, model="13827")
        _fill(p, dr, volume=D(18), dose=D(300), verify=dr2)
        s.record_event(pump=p, kind="mri", occurred_at=T0 + timedelta(days=5), actor=nurse,
                       now=T0 + timedelta(days=5, hours=1))
        pumps[f"{c}-unverified"] = p = new(clinic, model="91-4201")
        _fill(p, dr, dose=D(300))
        pumps[f"{c}-booked"] = p = new(clinic)
        _fill(p, dr, verify=dr2)
        s.schedule_appointment(pump=p, scheduled_for=datetime(2026, 4, 1, 10, tzinfo=CHICAGO), actor=nurse,
                               now=WRITE_NOW)
        pumps[f"{c}-small-fill"] = p = new(clinic, model="8637-20")
        _fill(p, dr, volume=D(8), dose=D(400), verify=dr2)
        pumps[f"{c}-incomplete"] = new(clinic)
        pumps[f"{c}-battery"] = p = new(clinic)
        Pump.objects.filter(pk=p.pk).update(expected_end_of_service=date(2026, 8, 1))
        p.refresh_from_db()
        _fill(p, dr, dose=D(200), verify=dr2)
        pumps[f"{c}-discrepancy"] = p = new(clinic)
        _fill(p, dr, verify=dr2)
        _fill(p, dr, at=T0 + timedelta(days=30), extracted=D(5), verify=dr2)
        pumps[f"{c}-explanted"] = p = new(clinic)
        _fill(p, dr, volume=D(10), verify=dr2)
        pumps[f"{c}-deceased"] = p = new(clinic)
        _fill(p, dr, volume=D(10), verify=dr2)
    return north, west, actors, pumps


def _steps(north, west, actors, pumps):
    """(instant, write before the sweep): a sequence that opens, repeats, resolves,
    supersedes and re-opens alerts."""
    dr, dr2, nurse = actors["north"]
    wdr, _, wnurse = actors["west"]

    def explant():
        for c, actor in (("north", dr), ("west", wdr)):
            s.explant_pump(withdrawal_plan="taper_completed", pump=pumps[f"{c}-explanted"], explanted_on=date(2026, 2, 20), actor=actor,
                           reason="infection", now=datetime(2026, 2, 20, 12, tzinfo=CHICAGO))

    def deceased():
        for c, actor in (("north", nurse), ("west", wnurse)):
            s.update_patient(patient=pumps[f"{c}-deceased"].patient, actor=actor, status="deceased",
                             now=datetime(2026, 3, 1, 12, tzinfo=CHICAGO))

    def reading_clears_alarm():
        at = datetime(2026, 4, 19, 8, tzinfo=CHICAGO)
        s.record_reading(pump=pumps["north-worked"], read_at=at, reservoir_volume_ml=D(6), actor=nurse,
                         now=at + timedelta(minutes=5))

    def refill_resolves():
        _fill(pumps["west-worked"], wdr, at=datetime(2026, 4, 20, 9, tzinfo=CHICAGO), extracted=D(2),
              verify=actors["west"][1])

    return [
        (datetime(2026, 2, 15, 9, tzinfo=CHICAGO), None),
        (datetime(2026, 2, 21, 9, tzinfo=CHICAGO), explant),
        (datetime(2026, 3, 2, 9, tzinfo=CHICAGO), deceased),
        (datetime(2026, 3, 28, 9, tzinfo=CHICAGO), None),
        (datetime(2026, 4, 19, 1, tzinfo=CHICAGO), None),
        (datetime(2026, 4, 19, 9, tzinfo=CHICAGO), reading_clears_alarm),
        (datetime(2026, 4, 21, 9, tzinfo=CHICAGO), refill_resolves),
        (datetime(2026, 4, 24, 9, tzinfo=CHICAGO), None),
        (datetime(2026, 5, 10, 9, tzinfo=CHICAGO), None),
        (datetime(2026, 8, 20, 9, tzinfo=CHICAGO), None),
    ]


PUMP_FIELDS = [f.attname for f in Pump._meta.concrete_fields if f.attname not in ("updated_at",)]
ALERT_FIELDS = [f.attname for f in Alert._meta.concrete_fields if f.attname != "id"]
NOTE_FIELDS = [f.attname for f in Notification._meta.concrete_fields if f.attname not in ("id", "alert_id")]


def _episode_namer():
    """Episodes name records by id, and records written between sweeps get other ids on
    the second run: name them by pump and instant instead."""
    names = {
        "fill": {r.pk: (r.pump_id, r.performed_at) for r in Refill.objects.all()},
        "mri": {e.pk: (e.pump_id, e.occurred_at) for e in Event.objects.all()},
        "program": {p.pk: (p.pump_id, p.effective_at) for p in Program.objects.all()},
    }
    names["drug"] = names["refill"] = names["fill"]

    def name(episode: str) -> str:
        return re.sub(r"^(fill|drug|refill|mri|program):(\d+)",
                      lambda m: f"{m.group(1)}:{names[m.group(1)].get(int(m.group(2)))}", episode)

    return name


def snapshot() -> dict:
    name = _episode_namer()
    episode = ALERT_FIELDS.index("episode")
    alert_key = {a.pk: (a.pump_id, a.kind, name(a.episode)) for a in Alert.objects.all()}
    history = Alert.history.model.objects.all()
    return {
        "pumps": sorted(Pump.objects.values_list(*PUMP_FIELDS)),
        "alerts": sorted(((*row[:episode], name(row[episode]), *row[episode + 1:])
                          for row in Alert.objects.values_list(*ALERT_FIELDS)), key=repr),
        "notifications": sorted(
            ((alert_key.get(row[0]), *row[1:]) for row in Notification.objects.values_list("alert_id", *NOTE_FIELDS)),
            key=repr),
        "alert_history": sorted(
            ((alert_key.get(h.id), h.history_type, h.history_user_id, h.history_change_reason, h.severity,
              h.resolved_at, h.created_at) for h in history), key=repr),
    }


def _run(path, steps) -> list[dict]:
    out = []
    for now, write in steps:
        if write is not None:
            write()
        # every pump due, so that every state goes through the path under test
        Pump.objects.update(next_change_at=now - timedelta(minutes=1))
        ids = list(due_pumps(now).values_list("id", flat=True))
        result = path(ids, now)
        out.append({"result": (result.pumps_checked, result.alerts_created, result.notifications_created,
                               result.pumps_failed), **snapshot()})
    return out


@pytest.mark.django_db
def test_bulk_path_leaves_exactly_what_the_per_pump_path_leaves():
    north, west, actors, pumps = build_network()
    steps = _steps(north, west, actors, pumps)
    start = transaction.savepoint()
    per_pump = _run(alert_sweep.sweep_pumps_one_by_one, steps)
    transaction.savepoint_rollback(start)
    bulk = _run(bulk_refresh.refresh_pumps, steps)
    assert len(bulk) == len(per_pump)
    for number, (want, got) in enumerate(zip(per_pump, bulk, strict=True)):
        for key in want:
            assert got[key] == want[key], (number, key)
    # the sequence did exercise the rules: kinds raised, resolutions, repeats of reopened ones
    final = per_pump[-1]
    kinds = {row[ALERT_FIELDS.index("kind")] for row in final["alerts"]}
    assert kinds >= {"refill_due_soon", "refill_overdue", "low_reservoir", "withdrawal_risk", "post_mri_check",
                     "unverified_program", "battery_replacement", "drug_expired"}, kinds
    resolutions = {row[ALERT_FIELDS.index("resolution")] for row in final["alerts"]}
    assert {"pump explanted", "patient not active", "condition cleared", "a new refill was recorded"} <= resolutions
    assert any(step["result"][2] for step in per_pump)  # notifications were queued


def _shape(sql: str) -> str:
    if sql.startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):
        return sql.rsplit(" ", 1)[0]
    verb = sql.lstrip("(").split(" ", 1)[0]
    match = re.search(r'(?:FROM|INTO|UPDATE) "(\w+)"', sql)
    return f"{verb} {match.group(1) if match else '?'}"


@pytest.mark.django_db
def test_a_chunk_is_one_update_of_the_pumps_and_one_insert_of_alerts():
    north, west, actors, pumps = build_network()
    now = datetime(2026, 4, 24, 9, tzinfo=CHICAGO)
    Pump.objects.update(next_change_at=now - timedelta(minutes=1))
    ids = list(due_pumps(now).values_list("id", flat=True))
    with CaptureQueriesContext(connection) as queries:
        result = bulk_refresh.refresh_pumps(ids, now)
    shapes = [_shape(q["sql"]) for q in queries.captured_queries]
    assert result.pumps_checked == len(ids) and result.alerts_created > 0
    assert shapes.count("UPDATE pumps_pump") == 1
    assert shapes.count("INSERT pumps_alert") == 1
    assert shapes.count("INSERT pumps_historicalalert") == 1
    assert shapes.count("INSERT pumps_notification") == 1
    for table in ("pumps_refill", "pumps_reading", "pumps_program", "pumps_alert", "clinic_clinicclosure"):
        assert shapes.count(f"SELECT {table}") == 1, (table, shapes)
    # what is left per pump is what wanted_alerts still reads itself (MRI events,
    # booked appointments), until it accepts them preloaded
    per_pump = [x for x in shapes if x in ("SELECT pumps_event", "SELECT pumps_appointment")]
    assert len(per_pump) <= len(ids)


@pytest.mark.django_db(transaction=True)
def test_a_second_worker_skips_the_pumps_the_first_has_locked_without_waiting():
    north, west, actors, pumps = build_network()
    now = datetime(2026, 4, 24, 9, tzinfo=CHICAGO)
    Pump.objects.update(next_change_at=now - timedelta(minutes=1))
    held = [pumps["north-worked"].pk, pumps["west-worked"].pk]
    locked, release = threading.Event(), threading.Event()

    def other_worker():
        try:
            with transaction.atomic():
                list(Pump.objects.select_for_update().filter(pk__in=held))
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        result = bulk_refresh.drain(now, chunk=5)
        took = time.monotonic() - started
    finally:
        release.set()
        thread.join(30)
    total = Pump.objects.count()
    assert result.pumps_checked == total - len(held)
    assert took < 10
    assert set(Pump.objects.filter(next_change_at__lte=now).values_list("pk", flat=True)) == set(held)
    again = bulk_refresh.drain(now)  # released: the next run takes them
    assert again.pumps_checked == len(held)
    assert not Pump.objects.filter(next_change_at__lte=now).exists()


@pytest.mark.django_db
def test_a_failing_chunk_is_done_again_pump_by_pump(monkeypatch):
    north, west, actors, pumps = build_network()
    now = datetime(2026, 4, 24, 9, tzinfo=CHICAGO)
    Pump.objects.update(next_change_at=now - timedelta(minutes=1))
    ids = list(due_pumps(now).values_list("id", flat=True))

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    # the chunk's one UPDATE of the stored projections (the pump-by-pump path has its own)
    monkeypatch.setattr(bulk_refresh, "_write_projections", broken)
    result = bulk_refresh.refresh_pumps(ids, now)
    assert result.pumps_checked == len(ids) and result.alerts_created > 0
    assert not Pump.objects.filter(next_change_at__lte=now).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("second", ["set-based", "pump-by-pump"])
def test_two_sweeps_at_once_raise_each_alert_and_its_notifications_exactly_once(second):
    """Two sweeps of the same due set at once (two workers given the same chunk): the
    set-based one and another set-based one (they share the pumps through SKIP LOCKED),
    or a pump-by-pump one (it waits for the pumps' locks, then finds them refreshed).
    Every pump is refreshed once, every alert raised once with one notification per
    recipient, and the two results add up to what is in the database."""
    north, west, actors, pumps = build_network()
    now = datetime(2026, 4, 24, 9, tzinfo=CHICAGO)
    Pump.objects.update(next_change_at=now - timedelta(minutes=1))
    ids = list(due_pumps(now).values_list("id", flat=True))
    alerts_before, notes_before = Alert.objects.count(), Notification.objects.count()
    paths = [alert_sweep.sweep_pumps,
             alert_sweep.sweep_pumps if second == "set-based" else alert_sweep.sweep_pumps_one_by_one]
    start, results, errors = threading.Barrier(2), [], []

    def worker(path):
        try:
            start.wait(10)
            results.append(path(ids, now))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sum(r.pumps_checked for r in results) == len(ids)
    assert sum(r.pumps_failed for r in results) == 0
    assert not Pump.objects.filter(next_change_at__lte=now).exists()
    created = Alert.objects.count() - alerts_before
    assert created > 0 and sum(r.alerts_created for r in results) == created
    queued = Notification.objects.count() - notes_before
    assert queued > 0 and sum(r.notifications_created for r in results) == queued
    # every new e-mailed alert has one notification per recipient of its clinic
    new = Alert.objects.filter(created_at=now).select_related("clinic")
    for alert in new:
        if not RULES[alert.kind].emailed:
            continue
        expected = recipients_for(alert.clinic, escalation=alert.escalated_at is not None)
        emails = sorted(alert.notifications.filter(channel=Notification.EMAIL).values_list("recipient", flat=True))
        assert emails == sorted(expected), alert
