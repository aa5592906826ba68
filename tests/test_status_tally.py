"""The status tally: the worklist's counts per status come from rows that database
triggers keep in step with the pumps, whatever writes them, and that the sweep folds."""

from collections import Counter
from datetime import date, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from pumps import services as s
from pumps import tallies
from pumps.alerting.sweep import idle_tick, sweep
from pumps.models import Pump, Refill, StatusTally
from tests.factories import make_clinic, make_patient, make_pump, stored_status
from tests.pages_support import DUE_SOON_AT, OK_AT, signed_in, text_of, travel, worked_example
from tests.test_pages_worklist import board  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


def pumps_by_status(clinic) -> Counter:
    return Counter(Pump.objects.filter(clinic=clinic, explanted_on__isnull=True).values_list("status", flat=True))


def tally(clinic) -> Counter:
    return tallies.counts([clinic.pk])


def test_every_write_keeps_the_tally_equal_to_the_pumps(board, clinic, other_clinic, nurse):  # noqa: F811
    assert tally(clinic) == pumps_by_status(clinic) == Counter(
        {"ok": 5, "incomplete": 1})  # stored as of their last write
    assert tally(other_clinic) == Counter({"ok": 1})

    sweep(DUE_SOON_AT)  # the sweep moves stored statuses on
    assert tally(clinic) == pumps_by_status(clinic) == Counter(
        {s: 1 for s in ("empty", "alarm", "overdue", "due_soon", "ok", "incomplete")})

    s.explant_pump(withdrawal_plan="taper_completed", pump=board["ok"], explanted_on=DUE_SOON_AT.date(), actor=s.Actor(nurse), now=DUE_SOON_AT)
    assert tally(clinic) == pumps_by_status(clinic)
    assert tally(clinic)["ok"] == 0

    s.void_record(record=Refill.objects.get(pump=board["alarm"]), reason="entered on the wrong pump",
                  actor=s.Actor(nurse), now=DUE_SOON_AT)  # no fill left: incomplete
    assert tally(clinic) == pumps_by_status(clinic) == Counter(
        {"empty": 1, "overdue": 1, "due_soon": 1, "incomplete": 2})

    Pump.objects.filter(pk=board["incomplete"].pk).update(clinic=other_clinic)  # a bulk update, another clinic
    assert tally(clinic) == pumps_by_status(clinic)
    assert tally(other_clinic) == pumps_by_status(other_clinic) == Counter({"ok": 1, "incomplete": 1})

    Pump.objects.filter(pk=board["incomplete"].pk).delete()
    assert tally(other_clinic) == pumps_by_status(other_clinic) == Counter({"ok": 1})


def test_a_write_that_changes_no_count_adds_no_row(board, clinic):  # noqa: F811
    tallies.fold()
    rows = StatusTally.objects.count()
    pump = board["ok"]
    pump.udi = "(01)00643169001763"
    pump.save()
    Pump.objects.filter(clinic=clinic).update(serial_number="X")
    assert StatusTally.objects.count() == rows


def test_a_failed_write_leaves_the_tally_as_it_was(board, clinic):  # noqa: F811
    from django.db import transaction

    before = tally(clinic)
    with pytest.raises(RuntimeError), transaction.atomic():
        Pump.objects.filter(clinic=clinic).update(**stored_status("ok"))
        assert tally(clinic) == Counter({"ok": 6})
        raise RuntimeError("rolled back")
    assert tally(clinic) == before


def test_fold_keeps_every_sum_and_leaves_one_row_per_clinic_and_status(board, clinic, other_clinic):  # noqa: F811
    sweep(DUE_SOON_AT)  # folds
    for status in ("alarm", "empty", "ok"):  # and back: rows that sum to nothing
        Pump.objects.filter(pk=board["ok"].pk).update(**stored_status(status))
    assert StatusTally.objects.count() == 7 + 6
    before = {c.pk: tally(c) for c in (clinic, other_clinic)}
    unfolded = StatusTally.objects.count()
    assert tallies.fold() == unfolded
    assert {c.pk: tally(c) for c in (clinic, other_clinic)} == before
    rows = list(StatusTally.objects.order_by("clinic_id", "status").values_list("clinic_id", "status", "delta"))
    assert rows == [
        (clinic.pk, "alarm", 1), (clinic.pk, "due_soon", 1), (clinic.pk, "empty", 1),
        (clinic.pk, "incomplete", 1), (clinic.pk, "ok", 1), (clinic.pk, "overdue", 1),
        (other_clinic.pk, "ok", 1),
    ]
    Pump.objects.filter(clinic=other_clinic).update(explanted_on=DUE_SOON_AT.date())
    tallies.fold()
    assert not StatusTally.objects.filter(clinic=other_clinic).exists()  # a zero sum leaves no row


def test_fold_without_delete_returning_gives_the_same_rows(board, clinic, monkeypatch):  # noqa: F811
    monkeypatch.setattr(tallies, "_delete_returning", lambda: False)  # as on SQLite before 3.35
    tallies.fold()
    folded = StatusTally.objects.count()
    assert folded == 3  # north: ok 5, incomplete 1; south: ok 1
    for status in ("alarm", "ok"):  # two rows each
        Pump.objects.filter(pk=board["ok"].pk).update(**stored_status(status))
    assert tallies.fold() == folded + 4
    assert tally(clinic) == pumps_by_status(clinic) == Counter({"ok": 5, "incomplete": 1})
    assert StatusTally.objects.count() == folded


def test_worklist_counts_are_the_live_statuses_before_and_after_the_sweep(board, nurse):  # noqa: F811
    expected = "Empty 1 Low-reservoir alarm 1 Refill overdue 1 Refill due soon 1 OK 1 Incomplete data 1"
    client = signed_in(nurse)
    with travel(DUE_SOON_AT):
        stale = text_of(client.get("/").content.decode())  # stored statuses are from before
        sweep(DUE_SOON_AT)
        swept = text_of(client.get("/").content.decode())
    for page in (stale, swept):
        assert expected in page
        assert "6 pumps shown of 6." in page


def test_worklist_counts_of_a_search_are_the_pumps_found(board, nurse):  # noqa: F811
    with travel(DUE_SOON_AT):
        page = text_of(signed_in(nurse).get("/", {"q": "Garcia"}).content.decode())
    assert "Empty 0 Low-reservoir alarm 0 Refill overdue 0 Refill due soon 1 OK 0 Incomplete data 0" in page


@pytest.mark.postgres
def test_the_quiet_tick_folds_once_enough_rows_accumulated(board, clinic, monkeypatch):  # noqa: F811
    sweep(OK_AT)
    assert idle_tick(OK_AT, OK_AT)
    monkeypatch.setattr(tallies, "FOLD_AFTER", StatusTally.objects.count() + 1)
    pump = make_pump(make_patient(clinic, mrn="MRN-T"), serial="T1")  # +1 incomplete
    Pump.objects.filter(pk=pump.pk).update(**stored_status("inactive"))  # -1 incomplete, +1 inactive
    assert not idle_tick(OK_AT, OK_AT)  # rows to fold
    counts = tally(clinic)
    sweep(OK_AT)
    assert StatusTally.objects.count() <= 7
    assert tally(clinic) == counts == pumps_by_status(clinic)
    assert idle_tick(OK_AT + timedelta(minutes=5), OK_AT)


@pytest.mark.django_db(transaction=True)
def test_the_migration_starts_the_tally_from_the_pumps_there_are():
    clinic = make_clinic(code="mig")
    for number in range(3):
        make_pump(make_patient(clinic, mrn=f"MRN-{number}"), serial=f"M{number}")
    worked_example(make_patient(clinic, mrn="MRN-W"), s.Actor(None, "test"), serial="W1")
    explanted = make_pump(make_patient(clinic, mrn="MRN-X"), serial="X1", implanted_on=date(2025, 1, 1))
    Pump.objects.filter(pk=explanted.pk).update(explanted_on=date(2025, 6, 1))
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes("pumps")[0]
    executor = MigrationExecutor(connection)
    executor.migrate([("pumps", "0008_sweeprun_unlogged")])
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([latest])
    assert tally(clinic) == Counter({"incomplete": 3, "ok": 1})
    make_pump(make_patient(clinic, mrn="MRN-Y"), serial="Y1")  # and the triggers are back
    assert tally(clinic) == Counter({"incomplete": 4, "ok": 1})


def test_after_migrate_sqlite_gets_back_triggers_a_table_rebuild_lost(board, clinic):  # noqa: F811
    from django.core.management.sql import emit_post_migrate_signal

    if connection.vendor != "sqlite":
        assert tallies.ensure_sqlite_triggers() is False  # PostgreSQL keeps triggers through ALTER TABLE
        return
    assert tallies.ensure_sqlite_triggers() is False  # all there
    with connection.cursor() as cursor:  # what rebuilding pumps_pump in a migration does
        cursor.execute("DROP TRIGGER pumps_status_tally_update")
    Pump.objects.filter(pk=board["ok"].pk).update(**stored_status("alarm"))
    assert tally(clinic) != pumps_by_status(clinic)
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
    assert tally(clinic) == pumps_by_status(clinic)
    Pump.objects.filter(pk=board["ok"].pk).update(**stored_status("ok"))
    assert tally(clinic) == pumps_by_status(clinic)
    assert tallies.ensure_sqlite_triggers() is False
