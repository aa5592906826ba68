"""Helpers for the staff page tests: the worked example (docs/clinical-rules.md §12), the clock, and HTML checks."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import time_machine
from django.test import Client

from clinic.permissions import Action, user_may
from pumps import services as s
from pumps.models import Program, SweepRun
from tests.factories import make_patient, make_pump

CHICAGO = ZoneInfo("America/Chicago")
T0 = datetime(2026, 2, 2, 9, 0, tzinfo=CHICAGO)  # the worked example's first fill
DUE_SOON_AT = datetime(2026, 3, 28, 12, 0, tzinfo=CHICAGO)  # 13 days before the 2026-04-10 due date
OK_AT = datetime(2026, 3, 20, 12, 0, tzinfo=CHICAGO)


def travel(moment: datetime):
    return time_machine.travel(moment, tick=False)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def worked_example(patient, actor, *, serial="SN-0001", at=T0, added="36", dose="450", now=None, model="8637-40",
                   implanted_on=date(2026, 1, 15)):
    """The worked example (docs/clinical-rules.md §12): an 8637-40 filled with 36 mL of 1000 mcg/mL at 450 mcg/day (0.45 mL/day).

    The program rides on the refill when ``actor`` may enter programs; otherwise (a nurse)
    the nurse records the fill and the program of the same instant is entered apart, by
    the system (only a prescriber enters a program)."""
    pump = make_pump(patient, model_code=model, implanted_on=implanted_on, serial=serial)
    program = s.ProgramInput(concentration_mcg_per_ml=D("1000"), daily_dose_mcg=D(dose))
    may_program = actor.user is None or user_may(actor.user, pump.clinic_id, Action.PROGRAM)
    s.record_refill(
        pump=pump, performed_at=at, added_volume_ml=D(added), concentration_mcg_per_ml=D("1000"), actor=actor,
        program=program if may_program else None, now=now or at,
    )
    if not may_program:
        s.record_program(pump=pump, effective_at=at, data=program, actor=s.Actor(None, "prescriber of record"),
                         now=now or at)
    pump.refresh_from_db()
    return pump


def verify_all(pump, prescriber, now):
    for program in Program.objects.filter(pump=pump, verified_at__isnull=True):
        s.verify_program(program=program, actor=s.Actor(prescriber), now=now)


def heartbeat(at: datetime) -> SweepRun:
    return SweepRun.objects.create(started_at=at, finished_at=at)


def new_patient(clinic, mrn, family, given, **kw):
    return make_patient(clinic, mrn=mrn, family_name=family, given_name=given, **kw)


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.I)


def assert_no_inline_script(html: str) -> None:
    assert INLINE_SCRIPT.findall(html) == []
    assert INLINE_HANDLER.findall(html) == []


def text_of(html: str) -> str:
    """The page's text with tags removed and whitespace collapsed, for exact phrases."""
    without = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S | re.I)
    without = re.sub(r"<[^>]+>", " ", without)
    import html as _html

    return re.sub(r"\s+", " ", _html.unescape(without)).strip()
