"""The steady state of the sweep on PostgreSQL: when nothing is due, one statement checks
that and records the heartbeat; anything due sends the sweep down its full path."""

from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clinic.models import AlertRecipient
from pumps.alerting.evaluate import create_alert
from pumps.alerting.rules import Wanted
from pumps.alerting.sweep import SweepResult, idle_tick, sweep
from pumps.models import Alert, Notification, Pump, SweepRun
from tests.conftest import CHICAGO
from tests.test_alerts import filled, recipients  # noqa: F401 - fixtures

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

QUIET = datetime(2026, 3, 20, 12, tzinfo=CHICAGO)  # after the digest hour, before the due-soon window


def settle(now):
    sweep(now)
    assert not Pump.objects.filter(next_change_at__lte=now).exists()


def test_a_quiet_tick_is_one_statement_and_records_the_heartbeat(filled):  # noqa: F811
    settle(QUIET)
    before = SweepRun.objects.count()
    with CaptureQueriesContext(connection) as queries:
        result = sweep(QUIET + timedelta(minutes=5))
    assert len(queries) == 1
    assert result == SweepResult()
    assert SweepRun.objects.count() == before + 1


def test_a_pump_whose_state_changed_is_not_quiet(filled):  # noqa: F811
    at = Pump.objects.get().next_change_at
    settle(at - timedelta(minutes=1))
    assert idle_tick(at - timedelta(minutes=1), at)
    assert not idle_tick(at, at)
    assert sweep(at).pumps_checked == 1


def test_an_alert_to_repeat_is_not_quiet(filled):  # noqa: F811
    lra = Pump.objects.get().low_reservoir_alarm_at
    settle(lra)
    alert = Alert.objects.get(kind="low_reservoir")
    assert idle_tick(alert.next_repeat_at - timedelta(seconds=1), lra)
    assert not idle_tick(alert.next_repeat_at, lra)


def test_an_open_stalled_alert_is_not_quiet_until_the_sweep_resolves_it(filled, clinic):  # noqa: F811
    settle(QUIET)
    create_alert(clinic, None, Wanted("alerting_stalled", "since:test", None, "stalled"), QUIET)
    assert Alert.objects.filter(kind="alerting_stalled", resolved_at__isnull=True).exists()
    assert not idle_tick(QUIET + timedelta(hours=1), QUIET)
    sweep(QUIET + timedelta(hours=1))
    assert not Alert.objects.filter(kind="alerting_stalled", resolved_at__isnull=True).exists()
    assert idle_tick(QUIET + timedelta(hours=1, minutes=5), QUIET)


def test_a_recipient_without_todays_digest_is_not_quiet(filled, clinic):  # noqa: F811
    settle(QUIET)
    assert Notification.objects.filter(kind="digest", digest_on=QUIET.date()).count() == 2
    assert idle_tick(QUIET, QUIET)
    AlertRecipient.objects.create(clinic=clinic, email="Late.Comer@clinic.example")
    assert not idle_tick(QUIET, QUIET)
    sweep(QUIET)
    assert Notification.objects.filter(kind="digest", recipient="late.comer@clinic.example").count() == 1
    assert idle_tick(QUIET, QUIET)
    # before the digest hour of the next local day nothing is owed; from it, the digests are
    morning = datetime(2026, 3, 21, 6, 59, tzinfo=CHICAGO)
    assert idle_tick(morning, morning)
    assert not idle_tick(morning + timedelta(minutes=1), morning)


def test_a_new_digest_hour_or_a_recipients_new_address_unsettles_the_digests(filled, clinic, nurse):  # noqa: F811
    settle(QUIET)
    assert idle_tick(QUIET, QUIET)
    clinic.refresh_from_db()
    clinic.digest_hour = 8
    clinic.save()
    assert not idle_tick(QUIET, QUIET)
    sweep(QUIET)
    assert idle_tick(QUIET, QUIET)
    nurse.email = "nina.new@clinic.example"
    nurse.save()
    assert not idle_tick(QUIET, QUIET)
    sweep(QUIET)
    assert Notification.objects.filter(kind="digest", recipient="nina.new@clinic.example").count() == 1


def test_the_heartbeat_table_is_unlogged():
    with connection.cursor() as cursor:
        cursor.execute("SELECT relpersistence FROM pg_class WHERE relname = %s", [SweepRun._meta.db_table])
        assert cursor.fetchone() == ("u",)
