"""``seed_demo`` at scale (the bulk path, PostgreSQL): templates written through the
services, every other pump a copy of a template's history for a new patient."""

from __future__ import annotations

from io import StringIO
from unittest.mock import patch

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from clinic.models import Clinic
from pumps import projection as pj
from pumps.alerting.sweep import sweep
from pumps.models import Alert, Patient, Program, Pump, Reading, Refill
from pumps.services import project_pump

PUMPS = 130  # the specials, the long history, 60 templates and about 60 copies


@pytest.fixture(scope="module")
def bulk_demo(django_db_setup, django_db_blocker):
    """One bulk demo for the module (about 30 s: the templates), rolled back at the end."""
    if connection.vendor != "postgresql":
        yield None  # the postgres marker skips (or, in CI, fails) the tests that use it
        return
    with django_db_blocker.unblock(), transaction.atomic():
        out = StringIO()
        call_command("seed_demo", "--bulk", "--pumps", str(PUMPS), "--seed", "5", stdout=out)
        yield out.getvalue()
        transaction.set_rollback(True)


def _copies():
    """Pumps without audit history are the copies (templates are written by the services)."""
    recorded = set(Pump.history.values_list("id", flat=True))
    return Pump.objects.exclude(pk__in=recorded)


@pytest.mark.postgres
@pytest.mark.django_db
def test_bulk_demo_has_the_requested_pumps_in_four_zones_and_every_status(bulk_demo):
    assert Pump.objects.count() == PUMPS
    assert sorted(Clinic.objects.values_list("timezone", flat=True)) == [
        "America/Chicago", "America/Denver", "Australia/Sydney", "Europe/London",
    ]
    assert set(Pump.objects.values_list("status", flat=True)) == set(pj.STATUSES)
    assert f"{PUMPS} pumps" in bulk_demo
    # each patient has one pump, except the patient whose pump was replaced
    assert Patient.objects.count() == PUMPS - 1


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_copy_has_its_templates_records_and_the_same_projection(bulk_demo):
    copies = list(_copies().select_related("clinic", "patient", "model"))
    assert len(copies) >= 40
    now = timezone.now()
    for copy in copies:
        template = (
            Pump.objects.filter(pk__in=Pump.history.values("id"), model=copy.model, clinic=copy.clinic,
                                implanted_on=copy.implanted_on, anchor_at=copy.anchor_at, status=copy.status)
            .select_related("clinic", "patient", "model").first()
        )
        assert template is not None, copy
        assert copy.serial_number != template.serial_number and copy.patient_id != template.patient_id
        for model, key in ((Refill, "performed_at"), (Program, "effective_at"), (Reading, "read_at")):
            mine = list(model.objects.filter(pump=copy).order_by(key).values_list(key, flat=True))
            theirs = list(model.objects.filter(pump=template).order_by(key).values_list(key, flat=True))
            assert mine == theirs
        # a program saved with a refill points at the copy's refill, not the template's
        assert not Program.objects.filter(pump=copy, refill__isnull=False).exclude(refill__pump=copy).exists()
        # the stored projection is what the engine computes from the copied records
        fresh = project_pump(copy, now)
        assert (copy.low_reservoir_alarm_at, copy.empty_at, copy.refill_due_on) == (
            fresh.low_reservoir_alarm_at, fresh.empty_at, fresh.refill_due_on)


@pytest.mark.postgres
@pytest.mark.django_db
def test_mrns_and_serials_are_unique_and_one_pump_has_ten_years_of_history(bulk_demo):
    assert Patient.objects.values("clinic", "mrn").annotate(n=Count("id")).filter(n__gt=1).count() == 0
    assert Pump.objects.values("serial_number").annotate(n=Count("id")).filter(n__gt=1).count() == 0
    longest = Pump.objects.annotate(n=Count("refills")).order_by("-n").first()
    first = longest.refills.order_by("performed_at").first().performed_at
    assert (timezone.now() - first).days > 3650


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_first_sweep_raises_the_alerts_of_the_copies(bulk_demo):
    waiting = [p.pk for p in _copies().filter(next_change_at__lte=timezone.now())]
    assert waiting, "some copies are due soon, overdue or in alarm"
    assert not Alert.objects.filter(pump__in=waiting).exists()
    sweep(timezone.now())
    assert set(Alert.objects.filter(pump__in=waiting).values_list("pump", flat=True)) == set(waiting)
    assert not Pump.objects.filter(next_change_at__lte=timezone.now()).exists()


@pytest.mark.django_db
def test_bulk_path_elsewhere_than_postgresql_is_refused_with_a_clear_message():
    before = Clinic.objects.count()
    with patch.object(connection, "vendor", "sqlite"), pytest.raises(
        CommandError, match=r"^The bulk path \(--pumps 1000 or more, or --bulk\) needs PostgreSQL"
    ):
        call_command("seed_demo", "--pumps", "1000")
    assert Clinic.objects.count() == before
