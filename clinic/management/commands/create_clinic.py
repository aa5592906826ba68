"""``manage.py create_clinic --code C --name N --timezone Z [--alert-email ADDR ...]``

Creates a clinic with the policy defaults of docs/clinical-rules.md §10 (change them later in the admin) and
its shared alert mailboxes.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email, validate_slug
from django.db import transaction

from clinic.models import AlertRecipient, Clinic, validate_timezone
from clinic.terminal import safe


class Command(BaseCommand):
    help = "Create a clinic (policy defaults apply) with optional alert e-mail recipients."

    def add_arguments(self, parser):
        parser.add_argument("--code", required=True, help="Short unique code (letters, digits, - and _).")
        parser.add_argument("--name", required=True, help="Display name of the clinic.")
        parser.add_argument(
            "--timezone", required=True, help="IANA time zone of the clinic, for example America/Chicago."
        )
        parser.add_argument(
            "--alert-email",
            action="append",
            default=[],
            dest="alert_emails",
            metavar="ADDR",
            help="A shared mailbox that receives the clinic's alerts (repeat for several).",
        )

    def handle(self, *args, code, name, timezone, alert_emails, **options):
        code, name, timezone = code.strip(), name.strip(), timezone.strip()
        problems = []
        try:
            validate_slug(code)
        except ValidationError:
            problems.append(f"--code '{safe(code)}' must contain only letters, digits, hyphens and underscores.")
        if not name:
            problems.append("--name must not be blank.")
        try:
            validate_timezone(timezone)
        except ValidationError:
            problems.append(
                f"--timezone '{safe(timezone)}' is not an IANA time zone name (for example America/Chicago or "
                "Europe/London)."
            )
        emails = []
        for address in alert_emails:
            address = address.strip()
            try:
                validate_email(address)
            except ValidationError:
                problems.append(f"--alert-email '{safe(address)}' is not a valid e-mail address.")
                continue
            if address.lower() not in {e.lower() for e in emails}:
                emails.append(address)
        if code and Clinic.objects.filter(code=code).exists():
            problems.append(f"A clinic with code '{safe(code)}' already exists.")
        if problems:
            raise CommandError(" ".join(problems))

        with transaction.atomic():
            clinic = Clinic(code=code, name=name, timezone=timezone)
            try:
                clinic.full_clean()
            except ValidationError as exc:
                raise CommandError(
                    " ".join(f"--{field}: {safe(' '.join(msgs))}" for field, msgs in exc.message_dict.items())
                ) from None
            clinic.save()
            for address in emails:
                AlertRecipient.objects.create(clinic=clinic, email=address)

        self.stdout.write(
            self.style.SUCCESS(
                f"Created clinic {safe(clinic.code)} ({safe(clinic.name)}), time zone {safe(clinic.timezone)}."
            )
        )
        self.stdout.write(
            f"Policy: refill lead {clinic.lead_days} days (+{clinic.high_risk_extra_days} for high-risk "
            f"patients), due soon within {clinic.due_soon_days} days, open Monday to Friday."
        )
        if emails:
            self.stdout.write("Alert recipients: " + safe(", ".join(emails)))
        else:
            self.stdout.write("No alert recipients yet: add them with --alert-email or in the admin.")
