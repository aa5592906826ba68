"""Writes for one pump are serialized: two refills recorded at once on PostgreSQL with two
real connections give one refill and one conflict, never two refills or a lost update."""

import threading
import time
from datetime import datetime
from decimal import Decimal as D

import pytest
from django.db import connection

from pumps import services as s
from pumps.models import Pump, Refill
from tests.conftest import CHICAGO

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

NOW = datetime(2026, 3, 28, 12, tzinfo=CHICAGO)


def _race(monkeypatch, calls):
    """Run ``calls`` in threads (one DB connection each), all released at once; the history
    read inside the service is slowed so that, without a lock, both would read before
    either commits."""
    real_load = s.load_history

    def slow_load(pump):
        history = real_load(pump)
        time.sleep(0.4)
        return history

    monkeypatch.setattr(s, "load_history", slow_load)
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(i, call):
        try:
            barrier.wait()
            results[i] = ("ok", call())
        except Exception as exc:  # noqa: BLE001 - we record every outcome
            results[i] = ("error", exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_two_simultaneous_refills_one_succeeds_one_conflicts(pump, nurse, prescriber, monkeypatch):
    actor = s.Actor(nurse)
    s.record_refill(  # the first fill carries the program: a prescriber's
        pump=pump, performed_at=datetime(2026, 2, 2, 9, tzinfo=CHICAGO), added_volume_ml=D(36),
        concentration_mcg_per_ml=D(1000), actor=s.Actor(prescriber), now=NOW,
        program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)),
    )

    def refill(minute):
        return lambda: s.record_refill(
            pump=Pump.objects.get(pk=pump.pk), performed_at=datetime(2026, 3, 28, 9, minute, tzinfo=CHICAGO),
            extracted_volume_ml=D("11.7"), added_volume_ml=D(20), concentration_mcg_per_ml=D(1000), actor=actor,
            now=NOW,
        )

    results = _race(monkeypatch, [refill(0), refill(5)])
    outcomes = sorted(kind for kind, _ in results)
    assert outcomes == ["error", "ok"], results
    error = next(value for kind, value in results if kind == "error")
    assert isinstance(error, s.Conflict) and error.code == "probable_duplicate"
    assert Refill.objects.filter(performed_at__date="2026-03-28").count() == 1
    assert Pump.objects.get(pk=pump.pk).version == 3


def test_two_writers_with_the_same_if_match_one_gets_412(pump, nurse, monkeypatch):
    actor = s.Actor(nurse)
    version = Pump.objects.get(pk=pump.pk).version

    def reading(hour):
        return lambda: s.record_reading(
            pump=Pump.objects.get(pk=pump.pk), read_at=datetime(2026, 3, 1, hour, tzinfo=CHICAGO),
            reservoir_volume_ml=D(20), actor=actor, now=NOW, if_match=version,
        )

    results = _race(monkeypatch, [reading(9), reading(10)])
    kinds = sorted(kind for kind, _ in results)
    assert kinds == ["error", "ok"], results
    assert isinstance(next(v for k, v in results if k == "error"), s.PreconditionFailed)
    assert Pump.objects.get(pk=pump.pk).version == version + 1


def test_a_refill_and_a_patient_edit_at_once_both_succeed_without_deadlock(pump, prescriber, monkeypatch):
    """The patient row is locked FOR NO KEY UPDATE: the refill's foreign-key check (KEY
    SHARE on the patient) does not wait for it, so the two cannot deadlock."""
    actor = s.Actor(prescriber)  # the first fill carries the program

    def refill():
        return s.record_refill(
            pump=Pump.objects.get(pk=pump.pk), performed_at=datetime(2026, 2, 2, 9, tzinfo=CHICAGO),
            added_volume_ml=D(36), concentration_mcg_per_ml=D(1000), actor=actor, now=NOW,
            program=s.ProgramInput(concentration_mcg_per_ml=D(1000), daily_dose_mcg=D(450)),
        )

    def edit_patient():
        from pumps.models import Patient

        return s.update_patient(patient=Patient.objects.get(pk=pump.patient_id), actor=actor, phone="555-0199", now=NOW)

    results = _race(monkeypatch, [refill, edit_patient])
    assert [kind for kind, _ in results] == ["ok", "ok"], results
