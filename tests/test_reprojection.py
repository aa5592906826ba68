"""A clinic's policy or closures changed: its pumps are re-projected in the background
(pumps/reprojection.py), set-based in chunks (pumps/bulk_refresh.py), with the progress
in ``ClinicReprojection`` rows. The set-based job leaves exactly what the pump-by-pump
path leaves (the one SQLite takes); a second change while a job runs is never lost; a
broken pump does not stop the others and stays due for the sweep; a job whose task was
lost is queued again by beat."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta

import pytest
import time_machine
from django.db import connections, transaction

from clinic.models import Clinic
from pumps import bulk_refresh, reprojection, tasks
from pumps import history as pump_history
from pumps import services as s
from pumps.models import ClinicReprojection, Pump
from tests.conftest import CHICAGO
from tests.factories import make_patient, make_user
from tests.pages_support import worked_example
from tests.test_bulk_refresh import build_network, snapshot

NOW = datetime(2026, 3, 28, 9, 0, tzinfo=CHICAGO)


def _save_policy(clinic: Clinic, user=None, **policy) -> ClinicReprojection:
    """What the settings page and the admin do: the change and its job in one transaction."""
    with transaction.atomic():
        Clinic.objects.filter(pk=clinic.pk).update(**policy)
        clinic.refresh_from_db()
        return s.request_clinic_reprojection(clinic, user=user)


def _north_of_three(clinic, nurse):
    return [worked_example(make_patient(clinic, mrn=f"MRN{n}"), s.Actor(nurse), serial=f"SN-{n}") for n in range(3)]


def _due_dates(pumps):
    return [Pump.objects.get(pk=p.pk).refill_due_on for p in pumps]


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_set_based_job_leaves_exactly_what_the_pump_by_pump_path_leaves(monkeypatch):
    """Every state of build_network, one clinic's lead days and withdrawal window
    changed: the pumps, alerts (and their audit rows) and notifications come out the
    same from the set-based chunks as from one pump at a time, and the change did raise
    and resolve alerts."""
    north, west, actors, pumps = build_network()
    with time_machine.travel(NOW, tick=False):
        for pump in Pump.objects.all():  # every pump up to date before the change
            with transaction.atomic():
                s.refresh_pump(s.lock_pump(pump.pk), now=NOW)
        before = snapshot()
        start = transaction.savepoint()
        monkeypatch.setattr(bulk_refresh, "supported", lambda: False)
        job = _save_policy(north, lead_days=30, withdrawal_window_hours=240)
        assert reprojection.run(job.pk, chunk=4) is False
        one_by_one = snapshot()
        one_by_one_job = ClinicReprojection.objects.values_list("total", "done", "failed").get(pk=job.pk)
        transaction.savepoint_rollback(start)
        monkeypatch.undo()
        job = _save_policy(north, lead_days=30, withdrawal_window_hours=240)
        assert reprojection.run(job.pk, chunk=4) is False
        set_based = snapshot()
        set_based_job = ClinicReprojection.objects.values_list("total", "done", "failed").get(pk=job.pk)
    implanted = Pump.objects.filter(clinic=north, explanted_on__isnull=True).count()
    assert one_by_one_job == set_based_job == (implanted, implanted, 0)
    for key in before:
        assert set_based[key] == one_by_one[key], key
    assert set_based["alerts"] != before["alerts"] and set_based["notifications"] != before["notifications"]
    assert set_based["pumps"] != before["pumps"]


@pytest.mark.django_db
def test_a_second_save_while_a_job_runs_supersedes_it_and_the_newest_policy_wins(clinic, nurse):
    """Chunks of one pump: the first job re-projects one pump under ten lead days, then a
    second save (three lead days) supersedes it; the second job re-projects all three."""
    pumps = _north_of_three(clinic, nurse)
    with time_machine.travel(NOW, tick=False):
        first = _save_policy(clinic, lead_days=10)
        assert reprojection.step(first.pk, chunk=1) is True
        # alarm 2026-04-18 - 10 days = Wed 04-08; the others not yet re-projected (7 days: Fri 04-10)
        assert _due_dates(pumps) == [date(2026, 4, 8), date(2026, 4, 10), date(2026, 4, 10)]
        second = _save_policy(clinic, lead_days=3)
        assert reprojection.run(first.pk, chunk=1) is False  # it sees the newer job and stops
        assert reprojection.run(second.pk, chunk=1) is False
    assert _due_dates(pumps) == [date(2026, 4, 15)] * 3  # 04-18 - 3 days, a Wednesday
    rows = list(ClinicReprojection.objects.order_by("id").values_list("done", "total", "superseded", "finished_at"))
    assert rows == [(1, 3, True, NOW), (3, 3, False, NOW)]
    assert reprojection.latest(clinic).pk == second.pk


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_second_save_during_a_running_chunk_is_not_lost(clinic, nurse, monkeypatch):
    """Two workers (threads, each queued task on its own connection): the first job's
    chunk waits on a pump a clinical write holds, having read the clinic before the
    second save; the second save commits and its job starts on the other worker. Every
    pump ends with the newest policy: the second job's locks wait behind the first's,
    never skip its pumps."""
    pumps = _north_of_three(clinic, nurse)
    held, release, errors, workers = threading.Event(), threading.Event(), [], []

    def clinical_write():
        try:
            with transaction.atomic():
                s.lock_pump(pumps[1].pk)
                held.set()
                release.wait(30)
        finally:
            connections.close_all()

    def worker(job_id):
        try:
            reprojection.run(job_id)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    def queue(job_id):  # the broker: a worker of its own takes each task
        workers.append(threading.Thread(target=worker, args=(job_id,)))
        workers[-1].start()

    monkeypatch.setattr(tasks.reproject_clinic, "delay", queue)
    writer = threading.Thread(target=clinical_write)
    writer.start()
    try:
        assert held.wait(10)
        first = _save_policy(clinic, lead_days=10)
        workers[0].join(1)
        assert workers[0].is_alive(), errors  # waiting for the pump the write holds
        second = _save_policy(clinic, lead_days=3)
        workers[1].join(1)
    finally:
        release.set()
        for thread in (writer, *workers):
            thread.join(30)
    assert errors == []
    assert _due_dates(pumps) == [date(2026, 4, 15)] * 3
    newest = ClinicReprojection.objects.get(pk=second.pk)
    assert (newest.done, newest.total, newest.superseded) == (3, 3, False) and newest.finished_at is not None
    assert ClinicReprojection.objects.get(pk=first.pk).finished_at is not None


@pytest.mark.django_db
@pytest.mark.parametrize("set_based", [pytest.param(True, marks=pytest.mark.postgres), False],
                         ids=["set-based", "pump-by-pump"])
def test_a_broken_pump_does_not_stop_the_others_and_stays_due(clinic, nurse, monkeypatch, set_based):
    pumps = _north_of_three(clinic, nurse)
    broken_id = pumps[1].pk
    real = pump_history.projection_values

    def projection_values(pump, **kwargs):
        if pump.pk == broken_id:
            raise RuntimeError("boom")
        return real(pump, **kwargs)

    monkeypatch.setattr(pump_history, "projection_values", projection_values)
    if not set_based:
        monkeypatch.setattr(bulk_refresh, "supported", lambda: False)
    with time_machine.travel(NOW, tick=False):
        job = _save_policy(clinic, lead_days=10)
        assert reprojection.run(job.pk) is False
    assert _due_dates(pumps) == [date(2026, 4, 8), date(2026, 4, 10), date(2026, 4, 8)]
    job.refresh_from_db()
    assert (job.total, job.done, job.failed) == (3, 2, 1)
    assert job.error == ("1 pump could not be re-projected; they stay due and the alert sweep retries them "
                         "(see the worker's log)")
    assert list(Pump.objects.filter(next_change_at__lte=NOW).values_list("pk", flat=True)) == [broken_id]


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_chunk_that_fails_as_a_whole_is_done_again_pump_by_pump(clinic, nurse, monkeypatch):
    pumps = _north_of_three(clinic, nurse)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(bulk_refresh, "_write_projections", broken)
    with time_machine.travel(NOW, tick=False):
        job = _save_policy(clinic, lead_days=10)
        assert reprojection.run(job.pk) is False
    assert _due_dates(pumps) == [date(2026, 4, 8)] * 3
    job.refresh_from_db()
    assert (job.total, job.done, job.failed, job.error) == (3, 3, 0, "")


@pytest.mark.django_db
def test_a_task_stops_at_its_budget_and_queues_the_rest(clinic, nurse, monkeypatch, settings):
    """With no time budget each task does one chunk and queues its successor (eager here)."""
    pumps = _north_of_three(clinic, nurse)
    monkeypatch.setattr(reprojection, "BUDGET_SECONDS", 0)
    monkeypatch.setattr(reprojection, "CHUNK", 1)
    runs = []
    real = reprojection.run
    monkeypatch.setattr(reprojection, "run", lambda job_id: runs.append(job_id) or real(job_id))
    with time_machine.travel(NOW, tick=False):
        job = _save_policy(clinic, lead_days=10)
        tasks.reproject_clinic.delay(job.pk)
    # three chunks of one, and a fourth that finds none left
    assert runs == [job.pk] * 4
    assert _due_dates(pumps) == [date(2026, 4, 8)] * 3
    job.refresh_from_db()
    assert (job.done, job.total, job.finished_at) == (3, 3, NOW)


@pytest.mark.django_db
def test_beat_queues_again_a_job_whose_task_was_lost(clinic, nurse):
    """The save committed but its task never ran (broker down): five minutes without
    progress, beat's ``resume_reprojections`` queues it again."""
    pumps = _north_of_three(clinic, nurse)
    with time_machine.travel(NOW, tick=False):
        job = _save_policy(clinic, lead_days=10)  # on_commit never runs here: the task is lost
    with time_machine.travel(NOW + timedelta(minutes=4), tick=False):
        assert tasks.resume_reprojections.delay().get() == 0
    assert _due_dates(pumps) == [date(2026, 4, 10)] * 3
    with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
        assert tasks.resume_reprojections.delay().get() == 1
    assert _due_dates(pumps) == [date(2026, 4, 8)] * 3
    job.refresh_from_db()
    assert (job.done, job.finished_at) == (3, NOW + timedelta(minutes=5))
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        assert tasks.resume_reprojections.delay().get() == 0


@pytest.mark.django_db
def test_a_broker_outage_does_not_fail_the_saved_change(clinic, nurse, monkeypatch,
                                                        django_capture_on_commit_callbacks):
    _north_of_three(clinic, nurse)

    def down(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.reproject_clinic, "delay", down)
    with django_capture_on_commit_callbacks(execute=True):
        job = _save_policy(clinic, lead_days=10)
    clinic.refresh_from_db()
    job.refresh_from_db()
    assert clinic.lead_days == 10
    assert (job.done, job.finished_at) == (0, None)  # beat queues it again


@pytest.mark.django_db
def test_the_job_names_who_asked_and_counts_only_implanted_pumps(clinic, nurse, prescriber):
    pumps = _north_of_three(clinic, nurse)
    s.explant_pump(pump=pumps[2], explanted_on=date(2026, 3, 1), actor=s.Actor(prescriber), reason="infection",
                   withdrawal_plan="taper_completed",
                   now=datetime(2026, 3, 1, 12, tzinfo=CHICAGO))
    admin = make_user("ada", clinic, "admin")
    with time_machine.travel(NOW, tick=False):
        job = _save_policy(clinic, user=admin, lead_days=10)
        reprojection.run(job.pk)
    job.refresh_from_db()
    assert (job.requested_by, job.requested_at, job.total, job.done) == (admin, NOW, 2, 2)
    assert _due_dates(pumps) == [date(2026, 4, 8), date(2026, 4, 8), None]
