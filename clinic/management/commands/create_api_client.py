"""``manage.py create_api_client --clinic C --name N [--write]``

Creates an API client for a hospital system and prints its bearer token alone on the last
line of output, so that a script can take it with ``tail -n 1``. Only a hash of the token
is stored: it cannot be shown again (revoke the client and create another if it is lost).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from clinic.models import ApiClient, Clinic
from clinic.terminal import safe


class Command(BaseCommand):
    help = "Create an API client bound to one clinic and print its token (shown once) on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--clinic", required=True, help="Code of the clinic the client may access.")
        parser.add_argument("--name", required=True, help="Name of the hospital system, e.g. 'EHR interface'.")
        parser.add_argument(
            "--write", action="store_true", help="Allow writes (default: read-only)."
        )

    def handle(self, *args, clinic, name, write, **options):
        name = name.strip()
        if not name:
            raise CommandError("--name must not be blank.")
        found = Clinic.objects.filter(code=clinic.strip()).first()
        if found is None:
            known = ", ".join(Clinic.objects.values_list("code", flat=True)) or "none yet"
            raise CommandError(f"No clinic with code '{safe(clinic)}' (known clinics: {safe(known)}).")
        client, token = ApiClient.create_with_token(clinic=found, name=name, can_write=write)
        access = "read-write" if client.can_write else "read-only"
        self.stdout.write(f"Created API client '{safe(client.name)}' (id {client.pk}) for clinic {safe(found.code)}.")
        self.stdout.write(
            f"Its {access} token follows on the last line. It is shown once and stored only as a hash: "
            "copy it now. Send it as 'Authorization: Bearer <token>'."
        )
        self.stdout.write(token)
