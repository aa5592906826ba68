"""``manage.py create_staff --clinic C --username U --role R [--password P] [--email E]``

Creates a staff user (or reuses an existing one) and gives them a role in a clinic. Without
``--password`` the account gets no usable password (set one later with ``changepassword``
or let the person reset it).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email
from django.db import transaction

from clinic.models import Clinic, Membership, Role
from clinic.terminal import safe


class Command(BaseCommand):
    help = "Create a staff user with a role in a clinic (or give an existing user a role there)."

    def add_arguments(self, parser):
        parser.add_argument("--clinic", required=True, help="Clinic code.")
        parser.add_argument("--username", required=True)
        parser.add_argument("--role", required=True, choices=Role.values, help="Role in the clinic.")
        parser.add_argument("--password", help="Password (checked against the password rules).")
        parser.add_argument("--email", default="", help="E-mail address.")
        parser.add_argument(
            "--receives-alerts", action="store_true", help="E-mail this person the clinic's alerts."
        )

    def handle(self, *args, clinic, username, role, password, email, receives_alerts, **options):
        User = get_user_model()
        username = username.strip()
        if not username:
            raise CommandError("--username must not be blank.")
        found = Clinic.objects.filter(code=clinic.strip()).first()
        if found is None:
            known = ", ".join(Clinic.objects.values_list("code", flat=True)) or "none yet"
            raise CommandError(f"No clinic with code '{safe(clinic)}' (known clinics: {safe(known)}).")
        if email:
            try:
                validate_email(email)
            except ValidationError:
                raise CommandError(f"--email '{safe(email)}' is not a valid e-mail address.") from None

        with transaction.atomic():
            user = User.objects.filter(username=username).first()
            created = user is None
            if created:
                user = User(username=username, email=email)
            elif email:
                user.email = email
            if password is not None:
                try:
                    validate_password(password, user)
                except ValidationError as exc:
                    raise CommandError("--password: " + safe(" ".join(exc.messages))) from None
                user.set_password(password)
            elif created:
                user.set_unusable_password()
            user.save()
            membership, new_membership = Membership.objects.update_or_create(
                user=user, clinic=found, defaults={"role": role, "receives_alerts": receives_alerts}
            )

        verb = "Created" if created else "Updated"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} user {safe(user.username)}: {membership.get_role_display()} at {safe(found.code)}"
                + ("" if new_membership else " (membership updated)")
                + "."
            )
        )
        if created and password is None:
            self.stdout.write("No password set: use 'manage.py changepassword " + safe(user.username) + "'.")
