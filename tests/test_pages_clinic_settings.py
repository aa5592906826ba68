"""Clinic settings for clinic administrators: policy (recomputes due dates in the
background, with its progress on the page), alert addresses, closures (due dates move to
the open day before).

A save commits the change and a re-projection job; the job's task is queued when the
save commits (``django_capture_on_commit_callbacks``: ``execute=True`` commits it, and
the task runs in-process, eager; without it the job waits, as it would for a worker)."""

from datetime import date, timedelta

import pytest

from clinic.models import AlertRecipient, ClinicClosure
from pumps import services as s
from pumps.models import Alert, ClinicReprojection, Notification
from tests.factories import make_patient, make_user
from tests.pages_support import (
    DUE_SOON_AT,
    T0,
    assert_no_inline_script,
    signed_in,
    text_of,
    travel,
    verify_all,
    worked_example,
)


@pytest.fixture
def admin(clinic):
    return make_user("ada", clinic, "admin")


@pytest.fixture
def filled(patient, nurse):
    return worked_example(patient, s.Actor(nurse))


def policy(**overrides):
    data = {
        "action": "policy", "name": "North Spasticity Clinic", "lead_days": "7", "high_risk_extra_days": "7",
        "due_soon_days": "14", "open_weekdays": ["0", "1", "2", "3", "4"], "discrepancy_threshold_small_ml": "1",
        "discrepancy_threshold_large_ml": "2", "titration_limit_spinal_pct": "30", "titration_limit_other_pct": "15",
        "withdrawal_window_hours": "72", "digest_hour": "7",
    }
    data.update(overrides)
    return data


def test_lead_days_change_recomputes_the_due_date(filled, admin, django_capture_on_commit_callbacks):
    with travel(DUE_SOON_AT):
        client = signed_in(admin)
        assert client.get("/clinics/north/settings/").status_code == 200
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post("/clinics/north/settings/", policy(lead_days="10"))
        page = text_of(client.get(response.url).content.decode())
    assert response.status_code == 302
    filled.refresh_from_db()
    # alarm 2026-04-18 - 10 days = Wednesday 04-08
    assert filled.refill_due_on == date(2026, 4, 8)
    assert filled.clinic.lead_days == 10
    assert filled.clinic.history.order_by("-history_id").first().history_user == admin
    assert ("Policy saved; due dates and statuses are being re-projected in the background (progress below)."
            in page)
    assert "Re-projected 1 pump at 12:00 CDT." in page
    job = ClinicReprojection.objects.get()
    assert (job.requested_by, job.requested_at, job.total, job.done, job.failed, job.finished_at, job.error) == (
        admin, DUE_SOON_AT, 1, 1, 0, DUE_SOON_AT, "")


def test_the_page_shows_the_progress_until_the_job_has_run(filled, admin, django_capture_on_commit_callbacks):
    """The save answers before any pump is re-projected: the page shows a progress bar
    that polls (htmx, no inline script) until the job is done, then the line that says so."""
    other = worked_example(make_patient(filled.clinic, mrn="MRN002"), s.Actor(admin), serial="SN-0002")
    with travel(DUE_SOON_AT):
        client = signed_in(admin)
        with django_capture_on_commit_callbacks(execute=False) as queued:
            client.post("/clinics/north/settings/", policy(lead_days="10"))
        filled.refresh_from_db()
        assert filled.refill_due_on == date(2026, 4, 10)  # not yet: the job waits for a worker
        html = client.get("/clinics/north/settings/").content.decode()
        assert_no_inline_script(html)
        assert ("Re-projecting due dates and statuses after the change saved at 12:00 CDT: 0 of 2 pumps done."
                in text_of(html))
        assert '<progress value="0" max="2" aria-label="Pumps re-projected">0 of 2</progress>' in html
        assert 'data-poll hx-get="/clinics/north/settings/" hx-trigger="every 2s"' in html
        poll = client.get("/clinics/north/settings/", headers={"HX-Request": "true"}).content.decode()
        assert poll.startswith('<div id="reprojection"') and "<html" not in poll
        assert "0 of 2 pumps done." in poll

        assert len(queued) == 1
        queued[0]()  # the save committed: its task runs (eager)
        poll = client.get("/clinics/north/settings/", headers={"HX-Request": "true"}).content.decode()
    assert text_of(poll) == "Re-projected 2 pumps at 12:00 CDT."
    assert "hx-trigger" not in poll and "<progress" not in poll  # done: the polling stops
    filled.refresh_from_db()
    other.refresh_from_db()
    assert (filled.refill_due_on, other.refill_due_on) == (date(2026, 4, 8), date(2026, 4, 8))


def test_a_policy_change_raises_its_alerts_exactly_once(filled, admin, prescriber,
                                                       django_capture_on_commit_callbacks):
    """Thirty lead days put the due date (2026-03-19) behind "today" (03-28): the pump's
    refill is overdue, one alert and one e-mail to the clinic's address; saving again
    (the job running twice) raises nothing more."""
    verify_all(filled, prescriber, T0 + timedelta(hours=2))
    AlertRecipient.objects.create(clinic=filled.clinic, email="ward@north.example.org")
    before = set(Alert.objects.values_list("pk", flat=True))
    with travel(DUE_SOON_AT):
        client = signed_in(admin)
        for _ in range(2):
            with django_capture_on_commit_callbacks(execute=True):
                client.post("/clinics/north/settings/", policy(lead_days="30"))
    filled.refresh_from_db()
    assert filled.refill_due_on == date(2026, 3, 19)
    raised = Alert.objects.exclude(pk__in=before)
    refill = filled.refills.get()
    assert [(a.kind, a.episode, a.message) for a in raised] == [
        ("refill_overdue", f"fill:{refill.pk}", "refill was due on 2026-03-19")]
    assert list(Notification.objects.filter(alert__in=raised).values_list("channel", "recipient", "repeat_number")) == [
        ("email", "ward@north.example.org", 0)]
    assert list(ClinicReprojection.objects.order_by("id").values_list("done", "superseded")) == [
        (1, False), (1, False)]


def test_saturday_opening_and_invalid_policy(filled, admin, django_capture_on_commit_callbacks):
    with travel(DUE_SOON_AT):
        client = signed_in(admin)
        with django_capture_on_commit_callbacks(execute=True):
            client.post("/clinics/north/settings/", policy(open_weekdays=["0", "1", "2", "3", "4", "5"]))
        with django_capture_on_commit_callbacks(execute=True) as queued:
            bad = client.post("/clinics/north/settings/", policy(digest_hour="24", open_weekdays=[]))
    assert queued == [] and ClinicReprojection.objects.count() == 1  # nothing saved, nothing queued
    filled.refresh_from_db()
    assert filled.refill_due_on == date(2026, 4, 11)  # the Saturday itself
    assert bad.status_code == 400
    html = bad.content.decode()
    assert "Ensure this value is less than or equal to 23." in html
    assert '<ul class="errorlist" id="id_open_weekdays_error"><li>This field is required.</li></ul>' in html


def test_closure_moves_the_due_date_and_can_be_removed(filled, admin, django_capture_on_commit_callbacks):
    with travel(DUE_SOON_AT):
        client = signed_in(admin)
        with django_capture_on_commit_callbacks(execute=True):
            client.post("/clinics/north/settings/", {"action": "add_closure", "date": "2026-04-10",
                                                     "reason": "Good Friday"})
        filled.refresh_from_db()
        assert filled.refill_due_on == date(2026, 4, 9)
        duplicate = client.post("/clinics/north/settings/", {"action": "add_closure", "date": "2026-04-10"})
        assert "This day is already marked closed." in duplicate.content.decode()
        page = text_of(client.get("/clinics/north/settings/").content.decode())
        assert "2026-04-10 (Fri) Good Friday" in page
        with django_capture_on_commit_callbacks(execute=True):
            removed = client.post("/clinics/north/settings/", {"action": "remove_closure",
                                                               "id": ClinicClosure.objects.get().pk}, follow=True)
    filled.refresh_from_db()
    assert filled.refill_due_on == date(2026, 4, 10)
    assert ("Closure on 2026-04-10 removed; due dates and statuses are being re-projected in the background "
            "(progress below).") in text_of(removed.content.decode())
    assert [(j.requested_by, j.done) for j in ClinicReprojection.objects.order_by("id")] == [(admin, 1), (admin, 1)]


def test_alert_addresses(admin, clinic):
    with travel(DUE_SOON_AT):
        client = signed_in(admin)
        client.post("/clinics/north/settings/", {"action": "add_recipient", "email": "Pumps@North.example.org"})
        again = client.post("/clinics/north/settings/", {"action": "add_recipient", "email": "pumps@north.example.org"})
        assert "This address is already on the list." in again.content.decode()
        client.post("/clinics/north/settings/", {"action": "add_recipient", "email": "oncall@north.example.org",
                                                 "escalation": "on"})
        assert sorted(AlertRecipient.objects.values_list("email", "escalation")) == [
            ("oncall@north.example.org", True), ("pumps@north.example.org", False)]
        target = AlertRecipient.objects.get(escalation=True)
        client.post("/clinics/north/settings/", {"action": "remove_recipient", "id": target.pk})
    assert list(AlertRecipient.objects.values_list("email", flat=True)) == ["pumps@north.example.org"]


def test_only_clinic_admins(filled, nurse, clinic):
    with travel(DUE_SOON_AT):
        client = signed_in(nurse)
        assert client.get("/clinics/north/settings/").status_code == 403
        denied = client.post("/clinics/north/settings/", policy(lead_days="1"))
        assert "Settings: north" not in client.get("/").content.decode()
    assert denied.status_code == 403
    assert "Only a clinic administrator changes the clinic&#x27;s settings." in denied.content.decode()
    clinic.refresh_from_db()
    assert clinic.lead_days == 7
