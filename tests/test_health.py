"""/health/ reads and reports: no alert raised and no e-mail sent from a request (that is
the beat watchdog's job); "unknown" for the sweep when the database cannot be read; 503
whenever something is unhealthy."""

from __future__ import annotations

from datetime import timedelta

from django.core import mail
from django.db.utils import OperationalError
from django.utils import timezone

from pumps import tasks
from pumps.alerting import heartbeat
from pumps.alerting.sweep import sweep
from pumps.models import Alert, Notification, SweepRun
from tests.factories import make_user


def test_a_stalled_sweep_is_reported_not_acted_on(client, clinic):
    make_user("ada", clinic, "admin", email="ada@clinic.example")
    response = client.get("/health/")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "alert_sweep": "never ran"}
    assert response.json()["last_sweep_at"] is None
    assert not Alert.objects.exists() and not Notification.objects.exists() and mail.outbox == []
    now = timezone.now()
    SweepRun.objects.create(started_at=now - timedelta(minutes=16), finished_at=now - timedelta(minutes=15, seconds=1))
    response = client.get("/health/")
    assert (response.status_code, response.json()["checks"]["alert_sweep"]) == (503, "stale")
    assert not Alert.objects.exists() and mail.outbox == []


def test_the_watchdog_raises_and_emails_the_stall(clinic):
    make_user("ada", clinic, "admin", email="ada@clinic.example")
    assert tasks.watchdog() == 1
    stalled = Alert.objects.get(kind="alerting_stalled")
    assert [m.to for m in mail.outbox] == [["ada@clinic.example"]]
    assert Notification.objects.get(alert=stalled).status == "sent"
    assert tasks.watchdog() == 0  # once per stall
    sweep()
    stalled.refresh_from_db()
    assert stalled.resolution == "the sweep ran again"


def test_healthy_when_the_sweep_is_recent(client, db):
    now = timezone.now()
    SweepRun.objects.create(started_at=now - timedelta(minutes=15), finished_at=now - timedelta(minutes=14))
    response = client.get("/health/")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "alert_sweep": "ok"}


def test_an_unreadable_database_makes_the_sweep_unknown(client, db, monkeypatch):
    def broken(self, *args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("django.db.backends.utils.CursorWrapper.execute", broken)
    response = client.get("/health/")
    monkeypatch.undo()  # before the test database is torn down
    assert response.status_code == 503
    assert response.json()["checks"] == {
        "database": "error: OperationalError", "broker": "ok", "alert_sweep": "unknown"}
    assert response.json()["status"] == "error"


def test_a_heartbeat_that_cannot_be_read_is_unknown(client, db, monkeypatch):
    monkeypatch.setattr(heartbeat, "last_sweep", lambda: (_ for _ in ()).throw(OperationalError("relation missing")))
    response = client.get("/health/")
    assert response.status_code == 503
    assert response.json()["checks"]["alert_sweep"] == "unknown"
