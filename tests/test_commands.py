"""The management commands of the contract (README, Two commands and Configuration): create_clinic, create_api_client,
create_staff, and the arguments of seed_demo (its data: test_seed_demo.py)."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.test import RequestFactory
from rest_framework.exceptions import AuthenticationFailed

from clinic.auth import BearerTokenAuthentication
from clinic.models import AlertRecipient, ApiClient, Clinic, Membership, hash_token
from pumps.models import Pump
from tests.test_seed_demo import demo_digest

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


# ------------------------------------------------------------------ create_clinic


def test_create_clinic_applies_policy_defaults():
    output = run("create_clinic", "--code", "lake", "--name", "Lake Clinic", "--timezone", "America/Chicago")

    clinic = Clinic.objects.get(code="lake")
    assert clinic.name == "Lake Clinic"
    assert clinic.timezone == "America/Chicago"
    # the policy defaults (docs/clinical-rules.md §10)
    assert (clinic.lead_days, clinic.high_risk_extra_days, clinic.due_soon_days) == (7, 7, 14)
    assert clinic.open_weekdays == [0, 1, 2, 3, 4]
    assert clinic.discrepancy_threshold_small_ml == Decimal("1.000")
    assert clinic.discrepancy_threshold_large_ml == Decimal("2.000")
    assert clinic.titration_limit_spinal_pct == Decimal("30.0")
    assert clinic.titration_limit_other_pct == Decimal("15.0")
    assert clinic.withdrawal_window_hours == 72
    assert "Created clinic lake" in output
    assert not clinic.alert_recipients.exists()


def test_create_clinic_alert_emails_are_repeatable_and_deduplicated():
    run(
        "create_clinic", "--code", "lake", "--name", "Lake Clinic", "--timezone", "Europe/London",
        "--alert-email", "pumps@lake.example.org", "--alert-email", "oncall@lake.example.org",
        "--alert-email", "PUMPS@lake.example.org",
    )

    clinic = Clinic.objects.get(code="lake")
    emails = sorted(AlertRecipient.objects.filter(clinic=clinic).values_list("email", flat=True))
    assert emails == ["oncall@lake.example.org", "pumps@lake.example.org"]
    assert not AlertRecipient.objects.filter(clinic=clinic, escalation=True).exists()


def test_create_clinic_rejects_an_unknown_time_zone_and_saves_nothing():
    with pytest.raises(CommandError, match=r"'America/Chicgo' is not an IANA time zone"):
        run("create_clinic", "--code", "lake", "--name", "Lake", "--timezone", "America/Chicgo")
    assert not Clinic.objects.exists()


def test_create_clinic_rejects_a_duplicate_code():
    run("create_clinic", "--code", "lake", "--name", "Lake", "--timezone", "UTC")
    with pytest.raises(CommandError, match="A clinic with code 'lake' already exists"):
        run("create_clinic", "--code", "lake", "--name", "Other", "--timezone", "UTC")
    assert Clinic.objects.get(code="lake").name == "Lake"


def test_create_clinic_rejects_a_bad_alert_email_and_code():
    with pytest.raises(CommandError) as excinfo:
        run("create_clinic", "--code", "lake clinic", "--name", "Lake", "--timezone", "UTC",
            "--alert-email", "not-an-address")
    message = str(excinfo.value)
    assert "--code 'lake clinic'" in message
    assert "'not-an-address' is not a valid e-mail address" in message
    assert not Clinic.objects.exists()
    assert not AlertRecipient.objects.exists()


# -------------------------------------------------------------- create_api_client


@pytest.fixture
def lake(db):
    return Clinic.objects.create(code="lake", name="Lake", timezone="America/Chicago")


def authenticate(token: str):
    request = RequestFactory().get("/api/v1/patients/", HTTP_AUTHORIZATION=f"Bearer {token}")
    return BearerTokenAuthentication().authenticate(request)


def test_create_api_client_prints_the_token_alone_on_the_last_line(lake):
    output = run("create_api_client", "--clinic", "lake", "--name", "EHR interface")

    lines = output.rstrip("\n").split("\n")
    token = lines[-1]
    assert token.startswith(ApiClient.TOKEN_PREFIX) and " " not in token
    assert len(token) > 40
    client = ApiClient.objects.get(name="EHR interface")
    assert client.clinic == lake
    assert client.can_write is False
    # Only the hash is stored, and it is the hash of the printed token.
    assert client.token_hash == hash_token(token)
    assert token not in (client.token_hash, client.token_hint)
    assert client.token_hint == token[:10]
    assert "shown once" in lines[-2] and "read-only" in lines[-2]


def test_the_printed_token_authenticates_as_its_client(lake):
    token = run("create_api_client", "--clinic", "lake", "--name", "Scheduling").rstrip("\n").split("\n")[-1]

    principal, client = authenticate(token)
    assert client.name == "Scheduling"
    assert client.clinic_id == lake.pk
    assert principal.is_authenticated

    client.revoke()
    with pytest.raises(AuthenticationFailed):
        authenticate(token)


def test_create_api_client_write_flag_gives_a_read_write_token(lake):
    output = run("create_api_client", "--clinic", "lake", "--name", "Pharmacy", "--write")

    client = ApiClient.objects.get(name="Pharmacy")
    assert client.can_write is True
    assert "read-write" in output
    assert client.token_hash == hash_token(output.rstrip("\n").split("\n")[-1])


def test_each_api_client_gets_its_own_token(lake):
    first = run("create_api_client", "--clinic", "lake", "--name", "A").rstrip("\n").split("\n")[-1]
    second = run("create_api_client", "--clinic", "lake", "--name", "A").rstrip("\n").split("\n")[-1]
    assert first != second
    assert ApiClient.objects.filter(name="A").count() == 2


def test_create_api_client_for_an_unknown_clinic_fails_clearly(lake):
    with pytest.raises(CommandError, match=r"No clinic with code 'nowhere' \(known clinics: lake\)"):
        run("create_api_client", "--clinic", "nowhere", "--name", "EHR")
    assert not ApiClient.objects.exists()


# ------------------------------------------------------------------- create_staff


def test_create_staff_creates_a_user_with_a_role_and_password(lake):
    run("create_staff", "--clinic", "lake", "--username", "rn.ada", "--role", "nurse",
        "--password", "pump-refill-2026", "--email", "ada@lake.example.org")

    user = get_user_model().objects.get(username="rn.ada")
    assert user.check_password("pump-refill-2026")
    assert user.email == "ada@lake.example.org"
    assert not user.is_superuser
    membership = Membership.objects.get(user=user)
    assert (membership.clinic, membership.role) == (lake, "nurse")


def test_create_staff_adds_a_second_clinic_to_an_existing_user(lake):
    other = Clinic.objects.create(code="river", name="River", timezone="Europe/London")
    run("create_staff", "--clinic", "lake", "--username", "dr.bo", "--role", "prescriber")
    output = run("create_staff", "--clinic", "river", "--username", "dr.bo", "--role", "viewer")

    user = get_user_model().objects.get(username="dr.bo")
    assert not user.has_usable_password()
    roles = dict(Membership.objects.filter(user=user).values_list("clinic__code", "role"))
    assert roles == {"lake": "prescriber", "river": "viewer"}
    assert "Updated user dr.bo" in output
    assert other.memberships.count() == 1


def test_create_staff_rejects_a_weak_password_and_an_unknown_role(lake):
    with pytest.raises(CommandError, match="--password"):
        run("create_staff", "--clinic", "lake", "--username", "x", "--role", "nurse", "--password", "12345678")
    with pytest.raises(CommandError, match="invalid choice"):
        run("create_staff", "--clinic", "lake", "--username", "x", "--role", "surgeon")
    assert not get_user_model().objects.filter(username="x").exists()


# ------------------------------------------------------------- seed_demo arguments


def test_if_empty_does_nothing_when_a_clinic_exists():
    Clinic.objects.create(code="own", name="Our clinic", timezone="Europe/Paris")
    output = run("seed_demo", "--if-empty")
    assert "not created" in output
    assert list(Clinic.objects.values_list("code", flat=True)) == ["own"]
    assert not Pump.objects.exists()


def test_if_empty_seeds_an_empty_database():
    run("seed_demo", "--if-empty", "--pumps", "10", "--seed", "5")
    assert Pump.objects.count() == 10
    with pytest.raises(CommandError, match="Demo clinics already exist"):
        run("seed_demo", "--pumps", "10")


def test_bad_arguments_are_refused():
    with pytest.raises(CommandError, match="at least 10"):
        run("seed_demo", "--pumps", "3")
    with pytest.raises(CommandError, match="with an offset"):
        run("seed_demo", "--now", "2026-04-15T15:30:00")
    assert not Clinic.objects.exists()


def test_another_seed_gives_other_data():
    digests = []
    for value in ("11", "12"):
        with transaction.atomic():
            run("seed_demo", "--pumps", "10", "--seed", value, "--now", "2026-04-15T15:30:00Z")
            digests.append(demo_digest())
            transaction.set_rollback(True)
    assert digests[0] != digests[1]
