"""Prepare a seeded database for the load test: 50 staff users (nurses of every clinic),
10 API clients with write tokens, and for each virtual user its own pumps to refill (so
that no two users write to one pump). Writes a JSON file the locustfile reads.

    python loadtest/prepare.py OUT.json [--staff 50] [--api-clients 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "load-test-password-1234"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--staff", type=int, default=50)
    parser.add_argument("--api-clients", type=int, default=10)
    parser.add_argument("--pumps-per-user", type=int, default=40)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinic.settings")
    import django

    django.setup()
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.db.models import Count
    from django.utils import timezone

    from clinic.models import ApiClient, Clinic, Membership
    from pumps import projection as pj
    from pumps.models import Program, Pump

    now = timezone.now()
    clinics = list(Clinic.objects.annotate(n=Count("pumps")).order_by("-n"))
    users = []
    for number in range(args.staff):
        name = f"load.rn.{number:02d}"
        user, _ = get_user_model().objects.get_or_create(username=name, defaults={"email": f"{name}@load.example"})
        user.set_password(PASSWORD)
        user.save()
        for clinic in clinics:
            Membership.objects.get_or_create(user=user, clinic=clinic, defaults={"role": "nurse"})
        users.append(name)
    tokens = []
    for number in range(args.api_clients):
        clinic = clinics[number % len(clinics)]
        _, token = ApiClient.create_with_token(clinic=clinic, name=f"load-{number:02d}", can_write=True)
        tokens.append({"token": token, "clinic": clinic.code})

    # pumps to refill: fine (ok), implanted, no refill in the last week, a program in force
    need = (args.staff + args.api_clients) * args.pumps_per_user
    candidates = (
        Pump.objects.filter(status=pj.STATUS_OK, explanted_on__isnull=True)
        .exclude(refills__performed_at__gte=now - timedelta(days=7))
        .select_related("model", "clinic").order_by("id")[: need * 2]
    )
    writable = []
    for pump in candidates:
        program = Program.objects.live().filter(pump=pump, effective_at__lte=now).order_by("-effective_at").first()
        if program is None:
            continue
        writable.append({"id": pump.pk, "clinic": pump.clinic.code, "reservoir": str(pump.model.reservoir_ml),
                         "concentration": str(program.concentration_mcg_per_ml)})
        if len(writable) >= need:
            break
    read_pumps = list(Pump.objects.filter(explanted_on__isnull=True).order_by("?").values_list("id", flat=True)[:2000])
    by_clinic = {c.code: list(Pump.objects.filter(clinic=c, explanted_on__isnull=True).order_by("?")
                              .values_list("id", flat=True)[:500]) for c in clinics}
    staff_slices = [writable[i::args.staff + args.api_clients] for i in range(args.staff)]
    api_pool = writable[args.staff::1]
    taken = {p["id"] for s in staff_slices for p in s}
    api_slices = [[p for p in api_pool if p["id"] not in taken and p["clinic"] == t["clinic"]][i::args.api_clients]
                  for i, t in enumerate(tokens)]
    data = {
        "password": PASSWORD, "users": users, "api": tokens, "clinics": [c.code for c in clinics],
        "read_pumps": read_pumps, "read_pumps_by_clinic": by_clinic, "staff_write_pumps": staff_slices,
        "api_write_pumps": api_slices,
    }
    Path(args.out).write_text(json.dumps(data))
    print(f"prepared {len(users)} staff users, {len(tokens)} API clients, {len(writable)} pumps to refill, "
          f"{len(read_pumps)} pumps to read")


if __name__ == "__main__":
    main(sys.argv[1:])
