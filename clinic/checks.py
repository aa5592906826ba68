"""Fail fast under production settings (``DJANGO_DEBUG=false``).

Three mistakes otherwise show up only later, and badly: static files never collected (the
manifest storage then fails every page that names a static file with a 500), no
``DJANGO_SECRET_KEY`` (a key generated into ``var/`` differs per container, so sessions
and reset links break between processes), and no ``DJANGO_ALLOWED_HOSTS`` (every request
answers 400). These are errors of Django's system checks, so ``manage.py check``,
``migrate`` and ``runserver`` refuse to go on; gunicorn runs the same checks before
starting its workers (``gunicorn.conf.py``), as ``refuse_to_start_unless_ready`` does.
They run with every check, not only ``check --deploy``; ``collectstatic`` (which runs only
the static-files checks) is never blocked by them.
"""

from __future__ import annotations

import os
import sys

from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin
from django.core.checks import Error, register

TAG = "production"


@register(TAG)
def production_ready(app_configs=None, **kwargs) -> list[Error]:
    if settings.DEBUG:
        return []
    errors = []
    if not os.environ.get("DJANGO_SECRET_KEY", "").strip():
        errors.append(Error(
            "DJANGO_SECRET_KEY is not set.",
            hint="Set it to a long random string, the same for every process, e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(64))'.",
            id="clinic.E001",
        ))
    if not settings.ALLOWED_HOSTS:
        errors.append(Error(
            "DJANGO_ALLOWED_HOSTS is empty: every request would be refused.",
            hint="Set DJANGO_ALLOWED_HOSTS to the site's host names, comma-separated, e.g. pumps.example.org.",
            id="clinic.E002",
        ))
    from django.core.files.storage import storages

    storage = storages["staticfiles"]
    if isinstance(storage, ManifestFilesMixin):
        try:
            present = storage.exists(storage.manifest_name)
        except Exception:  # noqa: BLE001 - an unreadable STATIC_ROOT is as bad as an absent one
            present = False
        if not present:
            errors.append(Error(
                f"Static files are not collected: {storage.path(storage.manifest_name)} is missing.",
                hint="Run python manage.py collectstatic --no-input (the Dockerfile does it when the image is "
                "built; STATIC_ROOT is var/staticfiles under PUMPCLINIC_VAR_DIR).",
                id="clinic.E003",
            ))
    return errors


def refuse_to_start_unless_ready() -> None:
    """Run every system check (as ``manage.py check`` does); on an error, print the
    messages to stderr and exit with status 1. For servers that do not run the checks
    themselves (gunicorn, any WSGI server importing ``clinic.wsgi``)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinic.settings")
    import django
    from django.core.checks import ERROR, run_checks

    django.setup()
    failed = [message for message in run_checks(include_deployment_checks=False) if message.level >= ERROR]
    if failed:
        lines = ["The app cannot start under these settings:"]
        for message in failed:
            lines.append(f"  {message.id}: {message.msg}")
            if message.hint:
                lines.append(f"    hint: {message.hint}")
        print("\n".join(lines), file=sys.stderr, flush=True)
        sys.exit(1)
