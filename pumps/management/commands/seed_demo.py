"""``manage.py seed_demo [--pumps N] [--seed S] [--now ISO-DATETIME] [--if-empty]``

Synthetic clinics for demonstrations and benchmarks: two clinics in different time zones
(America/Chicago and Europe/London), staff, patients, implanted pumps of the catalog
models, refill histories, titrations and program changes (flex programs with steps,
on-demand boluses, a concentration change with a bridge bolus), readings, MRI and other
events, appointments, a replaced and an explanted pump.

Each clinic has a refill capacity of its own (docs/clinical-rules.md §14): Lakeshore runs
its refill clinic on Tuesdays and Thursdays, three visits each; Thames books two refills
on every open day. Booked refills go on the latest refill day with a free slot on or
before the due date, so the refill plan of a demo shows days at capacity; with one slot
a refill day it has pumps that cannot be booked in time.

Every clinical record is written through ``pumps.services`` (validation, audit history,
stored projection), as a clinic would record it. The histories are built backwards from
the status each pump should have *today*: the last refill is placed so that, as of the
reference day, the clinic sees every status (ok, due_soon, overdue, alarm, empty,
incomplete, inactive). Each planned history is checked with the pure projection engine
before it is written, over the whole reference day in both clinics' zones.

Deterministic: the data is a function of ``--seed``, ``--pumps`` and the UTC date of
``--now`` (default: the current time). Two runs on the same day with the same arguments
into empty databases write the same records.

No real person is described: names are common first and family names combined at
random, phone numbers are in the ranges reserved for fiction (US 555-01xx, UK Ofcom
020 7946 0xxx), e-mail addresses are under example.org.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from clinic.models import MAX_REFILL_SLOTS, AlertRecipient, Clinic, ClinicClosure, Membership, Role
from pumps import projection as pj
from pumps import services
from pumps.models import (
    Alert,
    Appointment,
    DrugProduct,
    Event,
    Patient,
    Program,
    Pump,
    PumpModel,
    Reading,
    Refill,
)
from pumps.services import Actor, ProgramInput

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-pump-clinic"
MIN_PUMPS = 10
ACTOR = Actor.system("demo")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
ONE_DAY = timedelta(days=1)

#: The status each ordinary (non-special) pump is aimed at, with weights.
RANDOM_TARGETS = (
    (pj.STATUS_OK, 55),
    (pj.STATUS_DUE_SOON, 22),
    (pj.STATUS_OVERDUE, 8),
    (pj.STATUS_ALARM, 3),
    (pj.STATUS_EMPTY, 2),
    (pj.STATUS_INCOMPLETE, 4),
    ("explanted", 3),
)
#: Pump models in use, with weights (SynchroMed II is by far the most common).
MODEL_WEIGHTS = (("8637-40", 40), ("8637-20", 18), ("16827", 12), ("13827", 8), ("91-4201", 12), ("91-4200", 10))
#: Flex patterns: (local start, factor of the mean hourly dose); night-time spasms need more.
FLEX_PATTERNS = (
    (("00:00", Decimal("1.2")), ("07:00", Decimal("0.85")), ("20:00", Decimal("1.1"))),
    (("06:00", Decimal("0.9")), ("22:00", Decimal("1.3"))),
    (("05:30", Decimal("0.8")), ("12:00", Decimal("1.0")), ("19:30", Decimal("1.25"))),
)
HIGH_RISK_REASONS = (
    "spinal cord injury at T4 (T-6 or above): autonomic dysreflexia",
    "communication difficulties (aphasia): may not report early withdrawal",
    "previous withdrawal episode after a missed refill",
)


@dataclass(frozen=True)
class ClinicSpec:
    code: str
    name: str
    timezone: str
    alert_emails: tuple[str, ...]
    mrn_prefix: str
    phone_format: str  # formatted with a number 0-99
    products: dict  # concentration (int) -> product code
    given_names: tuple[str, ...]
    family_names: tuple[str, ...]
    staff: tuple[tuple[str, str, str, str], ...]  # username, first, last, role
    refill_slots_per_day: int = 2
    refill_slots_by_weekday: tuple[int | None, ...] = (None,) * 7  # Monday first


CLINICS = (
    ClinicSpec(
        code="lakeshore",
        name="Lakeshore Spasticity & Pump Clinic",
        timezone="America/Chicago",
        alert_emails=("pump-alerts@lakeshore.example.org",),
        mrn_prefix="LS",
        phone_format="+1 312-555-01{:02d}",
        products={500: "gablofen-500", 1000: "gablofen-1000", 2000: "gablofen-2000"},
        given_names=(
            "James", "Maria", "Robert", "Linda", "Michael", "Patricia", "David", "Jennifer", "Carlos", "Aisha",
            "Tyrone", "Mei", "Daniel", "Sofia", "Kevin", "Grace", "Luis", "Emily", "Omar", "Hannah",
        ),
        family_names=(
            "Johnson", "Nguyen", "Rodriguez", "Kowalski", "Brown", "Patel", "Williams", "Garcia", "Kim", "Okafor",
            "Miller", "Davis", "Lopez", "Wilson", "Anderson", "Thomas", "Jackson", "Martin", "Lee", "Perez",
        ),
        staff=(
            ("lakeshore.rn.hayes", "Dana", "Hayes", Role.NURSE),
            ("lakeshore.rn.ortiz", "Luz", "Ortiz", Role.NURSE),
            ("lakeshore.dr.chen", "Wei", "Chen", Role.PRESCRIBER),
            ("lakeshore.dr.adeyemi", "Tolu", "Adeyemi", Role.PRESCRIBER),
            ("lakeshore.pharm.novak", "Eva", "Novak", Role.PHARMACIST),
        ),
        # the refill clinic: Tuesdays and Thursdays, three visits each
        refill_slots_per_day=3,
        refill_slots_by_weekday=(0, None, 0, None, 0, None, None),
    ),
    ClinicSpec(
        code="thames",
        name="Thames Neurorehabilitation Pump Service",
        timezone="Europe/London",
        alert_emails=("itb-pump-team@thames.example.org",),
        mrn_prefix="TN",
        phone_format="+44 20 7946 00{:02d}",
        # Lioresal has no 1000 mcg/mL presentation: the pharmacy compounds it.
        products={500: "lioresal-500", 1000: "baclofen-compounded", 2000: "lioresal-2000"},
        given_names=(
            "Oliver", "Amelia", "Harry", "Isla", "George", "Ava", "Noah", "Mia", "Jack", "Ivy",
            "Leo", "Freya", "Arthur", "Poppy", "Muhammad", "Florence", "Oscar", "Evie", "Charlie", "Priya",
        ),
        family_names=(
            "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Wright",
            "Robinson", "Thompson", "Evans", "Walker", "Khan", "Hughes", "Edwards", "Green", "Hall", "Wood",
        ),
        staff=(
            ("thames.rn.okoro", "Ngozi", "Okoro", Role.NURSE),
            ("thames.rn.fletcher", "Sam", "Fletcher", Role.NURSE),
            ("thames.dr.maitland", "Iain", "Maitland", Role.PRESCRIBER),
            ("thames.dr.rahman", "Farah", "Rahman", Role.PRESCRIBER),
            ("thames.pharm.doyle", "Ciara", "Doyle", Role.PHARMACIST),
        ),
    ),
)


#: At scale (``--bulk``) two more clinics join, so that the network spans a southern-
#: hemisphere zone (daylight saving in the other half of the year) and a mountain zone.
EXTRA_CLINICS = (
    ClinicSpec(
        code="harbour",
        name="Harbour Intrathecal Therapy Clinic",
        timezone="Australia/Sydney",
        alert_emails=("itb-alerts@harbour.example.org",),
        mrn_prefix="HB",
        phone_format="+61 2 5550 01{:02d}",  # ACMA's range for drama
        products={500: "lioresal-500", 1000: "baclofen-compounded", 2000: "lioresal-2000"},
        given_names=(
            "Jack", "Charlotte", "William", "Olivia", "Thomas", "Isla", "Lachlan", "Chloe", "Ethan", "Zoe",
            "Cooper", "Ruby", "Mason", "Matilda", "Aarav", "Ella", "Hamish", "Grace", "Kai", "Lily",
        ),
        family_names=(
            "Smith", "Jones", "Williams", "Brown", "Wilson", "Taylor", "Nguyen", "Johnson", "Martin", "White",
            "Anderson", "Walker", "Thompson", "Harris", "Ryan", "Tran", "Kelly", "King", "Singh", "Lee",
        ),
        staff=(
            ("harbour.rn.mcgrath", "Tess", "McGrath", Role.NURSE),
            ("harbour.rn.ivanov", "Nadia", "Ivanov", Role.NURSE),
            ("harbour.dr.wong", "Felix", "Wong", Role.PRESCRIBER),
            ("harbour.dr.osei", "Ama", "Osei", Role.PRESCRIBER),
            ("harbour.pharm.ross", "Ian", "Ross", Role.PHARMACIST),
        ),
    ),
    ClinicSpec(
        code="rockies",
        name="Front Range Spasticity Center",
        timezone="America/Denver",
        alert_emails=("pump-alerts@rockies.example.org",),
        mrn_prefix="FR",
        phone_format="+1 303-555-01{:02d}",
        products={500: "gablofen-500", 1000: "gablofen-1000", 2000: "gablofen-2000"},
        given_names=(
            "Ethan", "Ava", "Logan", "Abigail", "Wyatt", "Madison", "Diego", "Chloe", "Caleb", "Natalie",
            "Jose", "Sarah", "Austin", "Leah", "Ryan", "Hailey", "Isaac", "Savannah", "Eli", "Brooke",
        ),
        family_names=(
            "Martinez", "Sanchez", "Romero", "Baker", "Young", "Allen", "Hernandez", "Scott", "Torres", "Hill",
            "Ramirez", "Flores", "Green", "Adams", "Nelson", "Carter", "Mitchell", "Roberts", "Turner", "Chavez",
        ),
        staff=(
            ("rockies.rn.bauer", "Kim", "Bauer", Role.NURSE),
            ("rockies.rn.salazar", "Rosa", "Salazar", Role.NURSE),
            ("rockies.dr.hart", "Megan", "Hart", Role.PRESCRIBER),
            ("rockies.dr.begay", "Nathan", "Begay", Role.PRESCRIBER),
            ("rockies.pharm.kline", "Owen", "Kline", Role.PHARMACIST),
        ),
    ),
)


def _round_to(value: Decimal, step: int) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_HALF_UP) * step


def _floor_to(value: Decimal, step: int) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def _days(value: Fraction | float) -> timedelta:
    return timedelta(seconds=round(float(value) * 86400))


# ------------------------------------------------------------------ program specs


@dataclass(frozen=True)
class ProgramSpec:
    """What the pump delivers in one period (between two refills)."""

    conc: Decimal
    daily: Decimal  # basal mcg/day; for flex the 24-hour total of the steps
    mode: str = pj.MODE_CONTINUOUS
    steps: tuple[tuple[str, Decimal], ...] = ()
    bolus: Decimal | None = None
    bolus_max: int | None = None
    override: str = ""

    def delivery(self) -> tuple:
        return (self.conc, self.daily, self.mode, self.steps, self.bolus, self.bolus_max)

    def projection(self, at: datetime) -> pj.Program:
        return pj.Program(
            effective_at=at,
            concentration_mcg_per_ml=self.conc,
            mode=self.mode,
            daily_dose_mcg=self.daily if self.mode == pj.MODE_CONTINUOUS else None,
            steps=tuple(pj.FlexStep(time.fromisoformat(s), d) for s, d in self.steps),
            bolus_mcg=self.bolus,
            bolus_max_per_day=self.bolus_max,
        )

    def worst_ml_per_day(self) -> Fraction:
        return self.projection(EPOCH).worst_case_daily_volume_ml()

    def as_input(self, entered_by: str) -> ProgramInput:
        flex = self.mode == pj.MODE_FLEX
        return ProgramInput(
            concentration_mcg_per_ml=self.conc,
            mode=self.mode,
            daily_dose_mcg=None if flex else self.daily,
            steps=[{"start": s, "dose_mcg_per_hour": str(d)} for s, d in self.steps] if flex else None,
            ptm_bolus_mcg=self.bolus,
            ptm_max_per_day=self.bolus_max,
            override_reason=self.override,
            entered_by=entered_by,
        )

    def with_daily(self, daily: Decimal, override: str = "") -> ProgramSpec:
        return ProgramSpec(self.conc, daily, pj.MODE_CONTINUOUS, (), self.bolus, self.bolus_max, override)

    def to_flex(self, pattern) -> ProgramSpec:
        mean = self.daily / 24
        steps = tuple((start, (mean * factor).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)) for start, factor in pattern)
        total = pj.to_decimal_ml(pj.flex_daily_dose([pj.FlexStep(time.fromisoformat(s), d) for s, d in steps]))
        return ProgramSpec(self.conc, total, pj.MODE_FLEX, steps, self.bolus, self.bolus_max, "")


# --------------------------------------------------------------------- pump plans


@dataclass
class RefillPlan:
    at: datetime
    spec: ProgramSpec  # the program in force after this refill
    fill_ml: Decimal  # volume in the reservoir after the refill
    new_program: bool  # the refill carries a new program (first fill, change)
    bridge_ml: Decimal | None = None
    discrepancy: int = 0  # -1: less than expected remained, +1: more, 0: as expected


@dataclass
class PumpPlan:
    model: PumpModel
    serial: str
    alarm_ml: Decimal | None  # None: the model's default
    implanted_on: date
    refills: list[RefillPlan] = field(default_factory=list)
    titrations: list[tuple[datetime, ProgramSpec]] = field(default_factory=list)
    readings: list[tuple[datetime, bool]] = field(default_factory=list)  # (at, after an MRI)
    # (occurred at, kind, notes[, recorded at])
    events: list[tuple] = field(default_factory=list)
    explant: tuple[date, str] | None = None
    leave_last_program_unverified: bool = False
    first_fill_without_program: bool = False
    fills: list[Decimal] = field(default_factory=list)  # volume after each planned refill
    reached: str = ""  # the status the plan gives over the reference day

    @property
    def last_program_at(self) -> datetime | None:
        times = [r.at for r in self.refills if r.new_program] + [at for at, _ in self.titrations]
        return max(times, default=None)

    @property
    def alarm(self) -> Decimal:
        return self.alarm_ml if self.alarm_ml is not None else self.model.default_alarm_ml


@dataclass
class Context:
    """One clinic while seeding."""

    spec: ClinicSpec
    clinic: Clinic
    tz: ZoneInfo
    policy: pj.Policy
    products: dict
    nurses: list[str]
    prescribers: list[str]
    verifiers: list[str]
    patients: int = 0
    booked: Counter = field(default_factory=Counter)  # refill visits booked per local day


class Demo:
    """Builds the demo data; ``run()`` writes it through the services."""

    clinic_specs: tuple[ClinicSpec, ...] = CLINICS

    def __init__(self, *, pumps: int, seed: int, now: datetime):
        self.pumps = pumps
        self.seed = seed
        self.now = now
        self.day = now.astimezone(UTC).date()
        # The statuses must hold over the whole reference day in every clinic zone: from
        # 12 hours before the UTC day to 12 hours after it (UTC-12 .. UTC+12 covers both).
        self.window = (
            datetime.combine(self.day, time(0), tzinfo=UTC) - timedelta(hours=12),
            datetime.combine(self.day + ONE_DAY, time(0), tzinfo=UTC) + timedelta(hours=12),
        )
        self.latest = self.window[0] - timedelta(hours=2)  # no record after this instant
        self.models = {m.code: m for m in PumpModel.objects.all()}
        self.products = {p.code: p for p in DrugProduct.objects.all()}
        self.serials = Counter()
        self.counts = Counter()

    # ------------------------------------------------------------------ helpers

    def local(self, ctx: Context, day: date, hour: int, minute: int) -> datetime:
        return datetime.combine(day, time(hour, minute), tzinfo=ctx.tz).astimezone(UTC)

    def refill_slot(self, ctx: Context, day: date, *, later: bool = False) -> datetime | None:
        """The next free refill visit of the clinic on ``day`` or the latest refill day
        before it (``later``: after it), within 30 days; None when there is none. The
        visits of a day follow the clinic's first refill visit, one every 30 minutes."""
        capacity = ctx.clinic.refill_capacity()
        step = ONE_DAY if later else -ONE_DAY
        for _ in range(30):
            used = ctx.booked[day]
            if used < capacity.slots(day):
                ctx.booked[day] += 1
                first = datetime.combine(day, capacity.first_visit)
                return (first + timedelta(minutes=30 * used)).replace(tzinfo=ctx.tz).astimezone(UTC)
            day += step
        return None

    def open_day_on_or_before(self, ctx: Context, day: date) -> date:
        while day.weekday() not in ctx.policy.open_weekdays or day in ctx.policy.closures:
            day -= ONE_DAY
        return day

    @staticmethod
    def clinic_time(rng: random.Random) -> tuple[int, int]:
        return rng.randint(8, 15), rng.choice((0, 10, 15, 20, 30, 40, 45, 50))

    def serial_for(self, model: PumpModel, rng: random.Random) -> str:
        self.serials[model.manufacturer] += 1
        n = self.serials[model.manufacturer]
        if model.manufacturer == "Medtronic":
            return f"NGP{rng.randint(100, 999)}{n:04d}H"
        if model.manufacturer == "Flowonix":
            return f"P{rng.randint(10, 99)}{n:05d}"
        return f"MS{rng.randint(10, 99)}{n:05d}"

    # ------------------------------------------------------------------- clinics

    def create_clinics(self) -> list[Context]:
        User = get_user_model()
        contexts = []
        for spec in self.clinic_specs:
            clinic = Clinic.objects.create(
                code=spec.code, name=spec.name, timezone=spec.timezone,
                refill_slots_per_day=spec.refill_slots_per_day,
                refill_slots_by_weekday=list(spec.refill_slots_by_weekday),
            )
            for email in spec.alert_emails:
                AlertRecipient.objects.create(clinic=clinic, email=email)
            AlertRecipient.objects.create(clinic=clinic, email=f"clinical-lead@{spec.code}.example.org", escalation=True)
            # A closure in the coming weeks moves due dates that fall on it to the day before.
            closure = self.day + timedelta(days=9)
            while closure.weekday() >= 5:
                closure += ONE_DAY
            ClinicClosure.objects.create(clinic=clinic, date=closure, reason="Staff training day")
            nurses, prescribers, verifiers = [], [], []
            for username, first, last, role in spec.staff:
                # Demo staff share the demo password, to try the app in each role.
                user = User.objects.create_user(
                    username=username, first_name=first, last_name=last, email=f"{username}@example.org",
                    password=DEMO_PASSWORD,
                )
                Membership.objects.create(user=user, clinic=clinic, role=role, receives_alerts=role == Role.NURSE)
                {Role.NURSE: nurses, Role.PRESCRIBER: prescribers}.get(role, verifiers).append(username)
            contexts.append(
                Context(
                    spec=spec, clinic=clinic, tz=ZoneInfo(spec.timezone), policy=clinic.policy(),
                    products=spec.products, nurses=nurses, prescribers=prescribers,
                    verifiers=prescribers,  # only a prescriber verifies a program
                )
            )
        return contexts

    def create_demo_user(self, contexts: list[Context]):
        User = get_user_model()
        user = User.objects.filter(username=DEMO_USERNAME).first() or User(username=DEMO_USERNAME)
        user.first_name, user.last_name, user.email = "Demo", "User", "demo@example.org"
        user.is_staff = user.is_superuser = True
        user.set_password(DEMO_PASSWORD)
        user.save()
        for ctx in contexts:
            Membership.objects.update_or_create(
                user=user, clinic=ctx.clinic, defaults={"role": Role.ADMIN, "receives_alerts": True}
            )
        return user

    # ------------------------------------------------------------------ patients

    def create_patient(self, ctx: Context, rng: random.Random, *, high_risk: bool, origin: str | None = None,
                       reason: str | None = None):
        ctx.patients += 1
        origin = origin or rng.choices(
            (Patient.Origin.SPINAL, Patient.Origin.CEREBRAL, Patient.Origin.MIXED, Patient.Origin.UNKNOWN),
            (45, 35, 10, 10),
        )[0]
        # Cerebral palsy patients are often children or young adults.
        age = rng.randint(8, 45) if origin == Patient.Origin.CEREBRAL else rng.randint(19, 82)
        birth = self.day - timedelta(days=age * 365 + rng.randint(0, 364))
        if not high_risk:
            reason = ""
        elif reason is None:
            reason = HIGH_RISK_REASONS[0] if origin == Patient.Origin.SPINAL else rng.choice(HIGH_RISK_REASONS[1:])
        patient = services.create_patient(
            clinic=ctx.clinic,
            actor=ACTOR,
            now=self.now,
            mrn=f"{ctx.spec.mrn_prefix}{100000 + ctx.patients * 7 + rng.randint(0, 6)}",
            family_name=rng.choice(ctx.spec.family_names),
            given_name=rng.choice(ctx.spec.given_names),
            birth_date=birth,
            spasticity_origin=origin,
            withdrawal_high_risk=high_risk,
            high_risk_reason=reason,
            phone=ctx.spec.phone_format.format(rng.randint(0, 99)),
            caregiver_phone=ctx.spec.phone_format.format(rng.randint(0, 99)) if rng.random() < 0.4 else "",
        )
        return patient

    # -------------------------------------------------------------- the programs

    def choose_concentration(self, ctx, dose, bolus, bolus_max, fill, alarm, rng, *, max_rate=None) -> Decimal:
        """The concentration that gives a refill interval of 45-150 days (worst case), as a
        clinic would choose it; ``max_rate`` caps the mL/day."""
        options = []
        for conc in (500, 1000, 2000):
            spec = ProgramSpec(Decimal(conc), dose, bolus=bolus, bolus_max=bolus_max)
            rate = spec.worst_ml_per_day()
            days = (Fraction(fill) - Fraction(alarm)) / rate
            if max_rate is not None and rate > max_rate:
                continue
            options.append((conc, days))
        if not options:
            return Decimal(2000)
        good = [c for c, d in options if 45 <= d <= 150]
        if good:
            return Decimal(rng.choice(good))
        return Decimal(min(options, key=lambda o: min(abs(o[1] - 45), abs(o[1] - 150)))[0])

    def program_specs(self, ctx, rng, *, count, model, alarm, origin, features) -> list[ProgramSpec]:
        """The program in force after each of ``count`` refills (index 0: the first fill)."""
        base = Decimal(rng.randint(20, 140) * 5) if origin == Patient.Origin.SPINAL else Decimal(rng.randint(15, 110) * 5)
        doses = [base]
        override_at = features.get("override_at")
        for i in range(1, count):
            previous = doses[-1]
            if i == override_at:
                doses.append(_round_to(previous * Decimal("1.25"), 5))
                continue
            roll = rng.random()
            if roll < 0.7:
                doses.append(previous)
            elif roll < 0.9:
                doses.append(_floor_to(previous * Decimal(rng.choice(("1.05", "1.08", "1.10"))), 5))
            else:
                doses.append(_round_to(previous * Decimal(rng.choice(("0.90", "0.95"))), 5))
        bolus = Decimal(rng.choice((25, 40, 50))) if features.get("bolus") else None
        bolus_max = rng.choice((2, 3, 4, 6)) if bolus else None
        bolus_from = features.get("bolus_from", 0)
        fill = model.reservoir_ml
        final_bolus = bolus if count - 1 >= bolus_from else None
        conc = self.choose_concentration(
            ctx, doses[-1], final_bolus, bolus_max if final_bolus else None, fill - 1, alarm, rng,
            max_rate=features.get("max_rate"),
        )
        early_conc = conc
        change_at = features.get("concentration_change_at")
        if change_at is not None and conc >= 1000:
            early_conc = conc / 2
        else:
            change_at = None
        flex_from = features.get("flex_from")
        pattern = features.get("flex_pattern")
        specs = []
        for i, dose in enumerate(doses):
            c = conc if change_at is None or i >= change_at else early_conc
            has_bolus = bolus is not None and i >= bolus_from
            spec = ProgramSpec(c, dose, bolus=bolus if has_bolus else None, bolus_max=bolus_max if has_bolus else None)
            if flex_from is not None and i >= flex_from:
                spec = spec.to_flex(pattern)
            if i == override_at:
                spec = ProgramSpec(
                    spec.conc, spec.daily, spec.mode, spec.steps, spec.bolus, spec.bolus_max,
                    "Persistent lower-limb spasticity after review: physician-approved increase above the limit",
                )
            specs.append(spec)
        return specs

    @staticmethod
    def titration(first: ProgramSpec, rng: random.Random) -> tuple[ProgramSpec, list[ProgramSpec]]:
        """After implant the dose starts lower and rises by about 10 % a day (well within
        the limit of Saulino 2016) to the maintenance dose."""
        if first.mode != pj.MODE_CONTINUOUS:
            return first, []
        start = max(Decimal(25), _floor_to(first.daily * Decimal(rng.choice(("0.65", "0.7", "0.75", "0.8"))), 5))
        if start >= first.daily:
            return first, []
        steps, dose = [], start
        while dose < first.daily:
            dose = min(first.daily, max(dose + 5, _floor_to(dose * Decimal("1.10"), 5)))
            steps.append(first.with_daily(dose))
        return first.with_daily(start), steps

    # ------------------------------------------------------------------ schedule

    def schedule(self, ctx, plan: PumpPlan, specs, draws, last_at: datetime) -> None:
        """Place the refills backwards from ``last_at``: each interval is a fraction of the
        time the reservoir takes to reach the alarm, on clinic days at clinic hours."""
        count = len(specs)
        times = [last_at]
        for i in range(count - 2, -1, -1):
            spec = specs[i]
            days = (Fraction(plan.fills[i]) - Fraction(plan.alarm)) / spec.worst_ml_per_day()
            interval = min(days * Fraction(draws["fraction"][i]), Fraction(165))
            interval = max(interval, Fraction(14))
            day = self.open_day_on_or_before(ctx, pj.local_date(times[0] - _days(interval), ctx.tz))
            hour, minute = draws["hours"][i]
            times.insert(0, self.local(ctx, day, hour, minute))
        plan.refills = []
        previous = None
        for i, (at, spec) in enumerate(zip(times, specs, strict=True)):
            new = i == 0 or spec.delivery() != previous.delivery() or bool(spec.override)
            bridge = Decimal("0.25") if i > 0 and spec.conc != previous.conc else None
            if bridge:  # the reservoir holds fill + bridge before the bolus leaves it
                plan.fills[i] = min(plan.fills[i], plan.model.reservoir_ml - bridge)
            plan.refills.append(
                RefillPlan(at=at, spec=spec, fill_ml=plan.fills[i], new_program=new, bridge_ml=bridge,
                           discrepancy=draws["discrepancy"].get(i, 0))
            )
            previous = spec
        plan.implanted_on = pj.local_date(times[0], ctx.tz)
        plan.titrations = []
        first_dose, steps = draws["titration"]
        if steps:
            plan.refills[0].spec = first_dose
            for n, spec in enumerate(steps, start=1):
                plan.titrations.append((times[0] + ONE_DAY * n, spec))

    def program_timeline(self, plan: PumpPlan) -> list[pj.Program]:
        programs = [r.spec.projection(r.at) for r in plan.refills if r.new_program]
        programs += [spec.projection(at) for at, spec in plan.titrations]
        return sorted(programs, key=lambda p: p.effective_at)

    def status_over_window(self, ctx, plan: PumpPlan, high_risk: bool) -> tuple[str, str]:
        last = plan.refills[-1]
        refill = pj.Refill(performed_at=last.at, added_volume_ml=last.fill_ml + (last.bridge_ml or 0),
                           bridge_bolus_ml=last.bridge_ml or Decimal(0))
        state = pj.PumpState(tz=ctx.tz, alarm_volume_ml=plan.alarm, high_risk=high_risk)
        programs = self.program_timeline(plan)
        return tuple(
            pj.project(at=at, pump=state, refills=[refill], readings=[], programs=programs, policy=ctx.policy).status
            for at in self.window
        )

    def place_last_refill(self, ctx, plan: PumpPlan, specs, draws, target: str, high_risk: bool) -> str:
        """Find the last refill instant that gives ``target`` over the whole reference day;
        returns the status obtained (the target unless no clinic day works)."""
        final = specs[-1]
        rate = final.worst_ml_per_day()
        alarm = Fraction(plan.alarm)
        fill = Fraction(plan.fills[-1])
        to_alarm = (fill - alarm) / rate
        centre = datetime.combine(self.day, time(12), tzinfo=UTC)
        extra = 7 if high_risk else 0
        if target == pj.STATUS_OK:
            lra = centre + _days(draws["ok_days"] + extra)
        elif target == pj.STATUS_DUE_SOON:
            lra = centre + _days(draws["due_soon_days"] + extra)
        elif target == pj.STATUS_OVERDUE:
            lra = centre + _days(draws["overdue_days"])
        elif target == pj.STATUS_ALARM:
            lra = centre - _days(alarm / rate / 2)
        else:  # empty
            lra = centre - _days(draws["empty_days"]) - _days(alarm / rate)
        hour, minute = draws["last_time"]
        ideal = pj.local_date(lra - _days(to_alarm), ctx.tz)
        while self.local(ctx, ideal, hour, minute) > self.latest:
            ideal -= ONE_DAY
        first_ok = None
        for weekend_too in (False, True):
            for k in range(0, 30):
                for day in (ideal - timedelta(days=k), ideal + timedelta(days=k)) if k else (ideal,):
                    if not weekend_too and (day.weekday() not in ctx.policy.open_weekdays or day in ctx.policy.closures):
                        continue
                    at = self.local(ctx, day, hour, minute)
                    if at > self.latest:
                        continue
                    self.schedule(ctx, plan, specs, draws, at)
                    statuses = self.status_over_window(ctx, plan, high_risk)
                    if first_ok is None:
                        first_ok = at
                    if statuses[0] == statuses[1] == target:
                        return target
        # No clinic day gives the target for these doses: keep the nearest clinic day.
        self.schedule(ctx, plan, specs, draws, first_ok)
        return self.status_over_window(ctx, plan, high_risk)[1]

    # ---------------------------------------------------------------- plan a pump

    def prepare(self, ctx, rng: random.Random, *, patient: Patient, features: dict):
        """Choose the pump, its programs period by period and the random draws of its
        schedule (drawn up front, so the search for the last refill uses no randomness)."""
        model = self.models[features.get("model") or rng.choices(*zip(*MODEL_WEIGHTS, strict=True))[0]]
        plan = PumpPlan(
            model=model, serial=self.serial_for(model, rng), alarm_ml=features.get("alarm_ml"), implanted_on=self.day
        )
        count = features.get("refills") or rng.randint(2, 9)
        if features.get("flex"):
            features.setdefault("flex_from", min(1, count - 1))
            features.setdefault("flex_pattern", rng.choice(FLEX_PATTERNS))
        if features.get("bolus"):
            features.setdefault("bolus_from", min(1, count - 1))
        if features.get("concentration_change") and count >= 3:
            features["concentration_change_at"] = rng.randint(1, count - 1)
        specs = self.program_specs(
            ctx, rng, count=count, model=model, alarm=plan.alarm, origin=patient.spasticity_origin, features=features,
        )
        plan.fills = [model.reservoir_ml - Decimal(rng.choice(("0", "0.5", "1", "2"))) for _ in specs]
        discrepancy = {}
        if features.get("discrepancy") and count >= 2:
            discrepancy[rng.randint(1, count - 1)] = features["discrepancy"]
        titrate = count >= 2 and not features.get("no_titration")
        draws = {
            "fraction": [rng.uniform(0.62, 0.88) for _ in specs],
            "hours": [self.clinic_time(rng) for _ in specs],
            "last_time": self.clinic_time(rng),
            "discrepancy": discrepancy,
            "titration": self.titration(specs[0], rng) if titrate else (specs[0], []),
            "ok_days": rng.uniform(26, 60),
            "due_soon_days": rng.uniform(13, 18),
            "overdue_days": rng.uniform(2.6, 4.4),
            "empty_days": rng.uniform(1.5, 12),
            "history_end": rng.randint(20, 35),
        }
        return plan, specs, draws

    def place(self, ctx, plan: PumpPlan, specs, draws, *, target: str, high_risk: bool,
              ends_before: date | None = None) -> None:
        if target in pj.STATUSES:
            plan.reached = self.place_last_refill(ctx, plan, specs, draws, target, high_risk)
            return
        # Explanted, or the old pump of a replacement: the history ends before that day.
        day = self.open_day_on_or_before(ctx, ends_before - timedelta(days=draws["history_end"]))
        self.schedule(ctx, plan, specs, draws, self.local(ctx, day, *draws["last_time"]))
        plan.reached = pj.STATUS_INACTIVE

    def add_readings(self, ctx, rng: random.Random, plan: PumpPlan, rate: float) -> None:
        """Interrogations at review visits between refills (a reading re-anchors the
        projection); on a SynchroMed some follow an MRI, as the labelling requires."""
        for i in range(len(plan.refills) - 1):
            if rng.random() >= rate:
                continue
            start, end = plan.refills[i].at, plan.refills[i + 1].at
            day = self.open_day_on_or_before(ctx, pj.local_date(start + (end - start) * rng.uniform(0.3, 0.6), ctx.tz))
            at = self.local(ctx, day, *self.clinic_time(rng))
            after_mri = plan.model.manufacturer == "Medtronic" and rng.random() < 0.3
            if not start + ONE_DAY < at < end - ONE_DAY or any(at < t + ONE_DAY for t, _ in plan.titrations):
                continue
            plan.readings.append((at, after_mri))
            if after_mri:
                plan.events.append((at - timedelta(hours=3), Event.Kind.MRI, "Brain MRI (1.5 T).", at))

    def plan_pump(self, ctx, rng: random.Random, *, target: str, patient: Patient, features: dict,
                  ends_before: date | None = None) -> PumpPlan:
        plan, specs, draws = self.prepare(ctx, rng, patient=patient, features=features)
        self.place(ctx, plan, specs, draws, target=target, high_risk=patient.withdrawal_high_risk, ends_before=ends_before)
        self.add_readings(ctx, rng, plan, features.get("reading_rate", 0.25))
        return plan

    # --------------------------------------------------------------- write a pump

    def write_pump(self, ctx: Context, rng: random.Random, patient: Patient, plan: PumpPlan) -> Pump:
        """Record the history in time order, each write with ``now`` at its own instant, as
        the clinic would have recorded it (the audit trail, write-time checks and alerts
        then see the history as it happened). ``refresh`` brings the pump to today."""
        first_at = plan.refills[0].at if plan.refills else self.local(ctx, plan.implanted_on, 17, 0)
        pump = services.implant_pump(
            patient=patient, model=plan.model, serial_number=plan.serial, implanted_on=plan.implanted_on,
            actor=ACTOR, low_reservoir_alarm_ml=plan.alarm_ml, now=first_at,
        )
        actions = [(r.at, 0, "refill", r) for r in plan.refills]
        actions += [(at, 1, "program", spec) for at, spec in plan.titrations]
        actions += [(at, 2, "reading", after_mri) for at, after_mri in plan.readings]
        # An event is recorded when the clinic learns of it: an MRI done elsewhere is
        # recorded at the interrogation that follows it (so no post-MRI alert fires in
        # between), other events as they happen.
        actions += [(e[3] if len(e) > 3 else e[0], 3, "event", e) for e in plan.events]
        actions.sort(key=lambda a: (a[0], a[1]))
        nurse = rng.choice(ctx.nurses)
        programs = []
        for at, _, kind, payload in actions:
            if kind == "refill":
                programs += self.write_refill(ctx, rng, pump, plan, payload, nurse)
            elif kind == "program":
                programs.append(
                    services.record_program(
                        pump=pump, effective_at=at, data=payload.as_input(rng.choice(ctx.prescribers)),
                        actor=ACTOR, now=at,
                    )
                )
            elif kind == "reading":
                self.write_reading(ctx, rng, pump, plan, at, after_mri=payload)
            else:
                services.record_event(
                    pump=pump, kind=payload[1], occurred_at=payload[0], notes=payload[2], actor=ACTOR, now=at
                )
            # A second clinician verifies each new program within the day (the next record
            # of a pump is always at least 21 hours later).
            while programs:
                program = programs.pop(0)
                if plan.leave_last_program_unverified and program.effective_at == plan.last_program_at:
                    continue
                self.verify(ctx, rng, program)
        return pump

    def verify(self, ctx: Context, rng: random.Random, program: Program) -> None:
        entered = program.entered_by.username if program.entered_by else ""
        services.verify_program(
            program=program, actor=ACTOR, verified_by=rng.choice([v for v in ctx.verifiers if v != entered]),
            now=min(program.effective_at + timedelta(hours=rng.randint(1, 18), minutes=rng.randint(0, 59)), self.latest),
        )

    def refresh(self, pump: Pump) -> Pump:
        """Bring the stored projection and the alerts of a pump to the reference time: what
        the periodic sweep does for a pump whose state changed since its last write."""
        with transaction.atomic():
            locked = Pump.objects.select_for_update().select_related("clinic", "patient", "model").get(pk=pump.pk)
            services.refresh_pump(locked, now=self.now)
        return locked

    def write_refill(self, ctx, rng, pump: Pump, plan: PumpPlan, refill: RefillPlan, nurse: str) -> list[Program]:
        first = refill is plan.refills[0]
        extracted = None
        if not first:
            expected = services.project_pump(pump, refill.at).reservoir_volume_ml or Decimal(0)
            threshold = (
                ctx.clinic.discrepancy_threshold_small_ml
                if plan.model.reservoir_ml <= 20 else ctx.clinic.discrepancy_threshold_large_ml
            )
            sign = refill.discrepancy
            if sign < 0 and expected < threshold + 1:
                sign = 1
            if sign < 0:
                extracted = expected - threshold - Decimal(rng.choice(("0.8", "1.2", "1.9")))
            elif sign > 0:
                extracted = expected + threshold + Decimal(rng.choice(("0.6", "1.1", "1.6")))
            else:
                extracted = expected + Decimal(rng.randint(-3, 3)) / 10
            extracted = min(max(extracted, Decimal(0)), plan.model.reservoir_ml).quantize(
                Decimal("0.1"), rounding=ROUND_HALF_UP
            )
        spec = refill.spec
        product = self.products[ctx.products[int(spec.conc)]]
        local_day = pj.local_date(refill.at, ctx.tz)
        carries_program = refill.new_program and not (first and plan.first_fill_without_program)
        notes = ""
        if refill.bridge_ml:
            notes = f"Concentration change: bridge bolus of {refill.bridge_ml} mL programmed."
        elif refill.discrepancy:
            notes = "Residual differs from the expected volume: reviewed with the physician."
        saved = services.record_refill(
            pump=pump,
            performed_at=refill.at,
            extracted_volume_ml=extracted,
            added_volume_ml=refill.fill_ml + (refill.bridge_ml or 0),
            bridge_bolus_ml=refill.bridge_ml,
            concentration_mcg_per_ml=spec.conc,
            drug_product=product,
            lot_number=f"{product.code[:3].upper()}{local_day:%y}{rng.randint(1000, 9999)}",
            lot_expiry=local_day + timedelta(days=rng.randint(150, 540)),
            performed_by=nurse,
            program=spec.as_input(rng.choice(ctx.prescribers)) if carries_program else None,
            notes=notes,
            actor=ACTOR,
            now=refill.at,
        )
        self.counts["refills"] += 1
        return list(Program.objects.filter(refill=saved))

    def write_reading(self, ctx, rng, pump: Pump, plan: PumpPlan, at: datetime, *, after_mri: bool) -> None:
        projection = services.project_pump(pump, at)
        expected = projection.reservoir_volume_ml or Decimal(0)
        if plan.model.volume_is == PumpModel.VOLUME_MEASURED:
            volume = expected + Decimal(rng.randint(-4, 4)) / 10  # a measured volume differs a little
        else:
            # A calculated-volume pump counts the boluses actually taken.
            worst = projection.worst_case_volume_ml or Decimal(0)
            volume = expected - (expected - worst) * Decimal(rng.choice(("0.2", "0.4", "0.6")))
        volume = min(max(volume, Decimal(0)), plan.model.reservoir_ml).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
        services.record_reading(
            pump=pump, read_at=at, reservoir_volume_ml=volume, actor=ACTOR, now=at,
            performed_by=rng.choice(ctx.nurses),
            notes="Post-MRI interrogation: pump running." if after_mri else "Interrogation at review visit.",
        )
        self.counts["readings"] += 1

    # ----------------------------------------------------------------- scenarios

    def special_slots(self) -> list[tuple[int, str, dict]]:
        """(clinic index, scenario, features) of the special cases, written first so that
        even a small demo shows every status and each kind of history."""
        return [
            (0, pj.STATUS_ALARM, {"model": "8637-40", "max_rate": Fraction(2, 5), "alarm_reported": True,
                                  "urgent_appointment": True}),
            (1, pj.STATUS_EMPTY, {"model": "8637-20", "max_rate": Fraction(1, 2)}),
            (0, pj.STATUS_OVERDUE, {"discrepancy": -1, "missed_appointment": True, "refills": 5}),
            (1, pj.STATUS_DUE_SOON, {"high_risk": True, "alarm_ml": Decimal("4.0"), "withdrawal_history": True,
                                     "appointment": 1.0, "refills": 6, "discrepancy": 1}),
            (0, pj.STATUS_INCOMPLETE, {}),
            (1, "replaced", {}),
            (0, "explanted", {}),
            (1, pj.STATUS_OK, {"flex": True, "bolus": True, "concentration_change": True, "refills": 6,
                               "model": "8637-40", "reading_rate": 0.5}),
            (0, pj.STATUS_DUE_SOON, {"bolus": True, "unverified": True, "recent_mri": True, "model": "8637-40",
                                     "override_at": 2, "refills": 4, "origin": Patient.Origin.CEREBRAL}),
        ]

    @staticmethod
    def random_features(rng: random.Random, scenario: str) -> dict:
        """The features of an ordinary pump aimed at ``scenario``."""
        features = {
            "flex": rng.random() < 0.2,
            "bolus": rng.random() < 0.15,
            "concentration_change": rng.random() < 0.12,
            "high_risk": rng.random() < 0.08,
            "discrepancy": rng.choice((-1, 1)) if rng.random() < 0.08 else 0,
            "appointment": 0.6 if scenario == pj.STATUS_DUE_SOON else 0.2,
            "override_at": 3 if rng.random() < 0.04 else None,
        }
        if scenario in (pj.STATUS_ALARM, pj.STATUS_EMPTY):
            features.update(flex=False, bolus=False, max_rate=Fraction(1, 2))
        return features

    def slots(self) -> list[tuple[int, str, dict]]:
        """(clinic index, scenario, features) for every pump: the special cases first."""
        result, used = [], 0
        for clinic_index, scenario, features in self.special_slots():
            result.append((clinic_index, scenario, features))
            used += 2 if scenario == "replaced" else 1
        slot = 0
        while used < self.pumps:
            rng = random.Random(f"pumpclinic-demo:{self.seed}:random:{slot}")
            slot += 1
            scenario = rng.choices(*zip(*RANDOM_TARGETS, strict=True))[0]
            features = self.random_features(rng, scenario)
            result.append((0 if rng.random() < 0.55 else 1, scenario, features))
            used += 1
        return result

    def run(self) -> dict:
        contexts = self.create_clinics()
        user = self.create_demo_user(contexts)
        for index, (clinic_index, scenario, features) in enumerate(self.slots()):
            rng = random.Random(f"pumpclinic-demo:{self.seed}:pump:{index}")
            ctx = contexts[clinic_index]
            self.write_scenario(ctx, rng, scenario, dict(features))
        return {"user": user, "clinics": [c.clinic for c in contexts], "counts": self.counts}

    def write_scenario(self, ctx: Context, rng: random.Random, scenario: str, features: dict) -> None:
        reason = HIGH_RISK_REASONS[2] if features.get("withdrawal_history") else None
        patient = self.create_patient(
            ctx, rng, high_risk=bool(features.get("high_risk")), origin=features.get("origin"), reason=reason
        )
        if scenario == pj.STATUS_INCOMPLETE:
            self.write_incomplete(ctx, rng, patient)
        elif scenario == "replaced":
            self.write_replacement(ctx, rng, patient)
        elif scenario == "explanted":
            self.write_explanted(ctx, rng, patient, features)
        else:
            self.write_implanted(ctx, rng, patient, scenario, features)

    def write_implanted(self, ctx, rng, patient: Patient, target: str, features: dict) -> None:
        plan = self.plan_pump(ctx, rng, target=target, patient=patient, features=features)
        plan.leave_last_program_unverified = bool(features.get("unverified"))
        if features.get("withdrawal_history") and len(plan.refills) >= 3:
            # The episode that made this patient high-risk, long ago.
            plan.events.append((
                plan.refills[1].at - timedelta(hours=36), Event.Kind.WITHDRAWAL,
                "Itching, fever and rebound spasticity while a refill was delayed; admitted for 2 days.",
            ))
        if features.get("recent_mri") and plan.model.manufacturer == "Medtronic":
            at = self.local(ctx, self.open_day_on_or_before(ctx, self.day - timedelta(days=2)), 16, 30)
            if plan.refills[-1].at + ONE_DAY < at <= self.latest:
                plan.events.append((at, Event.Kind.MRI, "Lumbar spine MRI at an outside hospital; no interrogation yet."))
        if features.get("alarm_reported"):
            lra = self.plan_projection(ctx, plan, patient.withdrawal_high_risk).low_reservoir_alarm_at
            if lra is not None and lra + timedelta(hours=5) <= self.latest:
                plan.events.append((
                    lra + timedelta(hours=5), Event.Kind.ALARM_REPORTED,
                    "Caregiver phoned: the pump is beeping (low-reservoir alarm).",
                ))
        pump = self.write_pump(ctx, rng, patient, plan)
        self.write_appointments(ctx, rng, pump, plan, features)
        self.finish(pump, plan.reached)

    def write_explanted(self, ctx, rng, patient: Patient, features: dict) -> None:
        explant_on = self.open_day_on_or_before(ctx, self.day - timedelta(days=rng.randint(10, 40)))
        plan = self.plan_pump(ctx, rng, target="explanted", patient=patient, features=features, ends_before=explant_on)
        pump = self.write_pump(ctx, rng, patient, plan)
        services.explant_pump(
            pump=pump, explanted_on=explant_on, actor=ACTOR, now=self.local(ctx, explant_on, 17, 0),
            reason="Pocket infection: pump and catheter explanted; oral baclofen bridge started.",
        )
        self.finish(pump, pj.STATUS_INACTIVE)

    def write_incomplete(self, ctx, rng, patient: Patient) -> None:
        """A pump just implanted elsewhere and transferred in: either nothing recorded yet,
        or the first fill recorded but the program not yet entered."""
        model = self.models[rng.choices(*zip(*MODEL_WEIGHTS, strict=True))[0]]
        implanted = self.open_day_on_or_before(ctx, self.day - timedelta(days=rng.randint(2, 6)))
        pump = services.implant_pump(
            patient=patient, model=model, serial_number=self.serial_for(model, rng), implanted_on=implanted,
            actor=ACTOR, now=self.local(ctx, implanted, 12, 0),
        )
        if rng.random() < 0.5:
            conc = Decimal(rng.choice((500, 1000, 2000)))
            at = self.local(ctx, implanted, 14, 0)
            services.record_refill(
                pump=pump, performed_at=at, added_volume_ml=model.reservoir_ml,
                concentration_mcg_per_ml=conc, drug_product=self.products[ctx.products[int(conc)]],
                performed_by=rng.choice(ctx.nurses), notes="First fill in theatre; program sheet awaited.",
                actor=ACTOR, now=at,
            )
            self.counts["refills"] += 1
        self.finish(pump, pj.STATUS_INCOMPLETE)

    def write_replacement(self, ctx, rng, patient: Patient) -> None:
        """A SynchroMed II at its elective replacement indicator (ERI), replaced by a new
        pump in one operation; the new pump's first fill carries on the same program."""
        old_plan, old_specs, old_draws = self.prepare(
            ctx, rng, patient=patient, features={"model": "8637-20", "refills": rng.randint(14, 20)}
        )
        new_plan, _, new_draws = self.prepare(
            ctx, rng, patient=patient, features={"model": "8637-20", "refills": 1, "no_titration": True}
        )
        # The replacement day is the new pump's first fill (in theatre, after the 08:00
        # operation), placed so that the new pump is "ok" today.
        new_draws["last_time"] = (13, 0)
        new_plan.reached = self.place_last_refill(
            ctx, new_plan, [old_specs[-1]], new_draws, pj.STATUS_OK, patient.withdrawal_high_risk
        )
        replaced_on = new_plan.implanted_on
        self.place(ctx, old_plan, old_specs, old_draws, target="replaced", high_risk=False, ends_before=replaced_on)
        self.add_readings(ctx, rng, old_plan, 0.2)
        old_pump = self.write_pump(ctx, rng, patient, old_plan)

        eri_at = self.local(ctx, self.open_day_on_or_before(ctx, replaced_on - timedelta(days=rng.randint(8, 15))), 10, 30)
        booked_at = eri_at + timedelta(hours=1)
        if eri_at > old_plan.refills[-1].at + ONE_DAY:
            expected = services.project_pump(old_pump, eri_at).reservoir_volume_ml or Decimal(0)
            services.record_reading(
                pump=old_pump, read_at=eri_at, reservoir_volume_ml=expected.quantize(Decimal("0.1")), eri=True,
                performed_by=rng.choice(ctx.nurses), actor=ACTOR, now=eri_at,
                notes="Elective replacement indicator on interrogation: replacement booked.",
            )
            self.counts["readings"] += 1
        surgery = services.schedule_appointment(
            pump=old_pump, scheduled_for=self.local(ctx, replaced_on, 8, 0), kind=Appointment.Kind.REPLACEMENT,
            notes="Pump replacement (battery at ERI).", actor=ACTOR, now=booked_at,
        )
        services.update_appointment(appointment=surgery, actor=ACTOR, status=Appointment.Status.DONE)
        new_pump = services.replace_pump(
            old=old_pump, model=new_plan.model, serial_number=new_plan.serial, replaced_on=replaced_on, actor=ACTOR,
            reason="Battery at elective replacement indicator: pump replaced.", now=self.local(ctx, replaced_on, 12, 0),
        )
        for program in self.write_refill(ctx, rng, new_pump, new_plan, new_plan.refills[0], rng.choice(ctx.nurses)):
            self.verify(ctx, rng, program)
        self.finish(old_pump, pj.STATUS_INACTIVE)
        self.finish(new_pump, new_plan.reached)

    def plan_projection(self, ctx, plan: PumpPlan, high_risk: bool) -> pj.Projection:
        last = plan.refills[-1]
        refill = pj.Refill(performed_at=last.at, added_volume_ml=last.fill_ml + (last.bridge_ml or 0),
                           bridge_bolus_ml=last.bridge_ml or Decimal(0))
        state = pj.PumpState(tz=ctx.tz, alarm_volume_ml=plan.alarm, high_risk=high_risk)
        return pj.project(at=self.window[0], pump=state, refills=[refill], readings=[],
                          programs=self.program_timeline(plan), policy=ctx.policy)

    def finish(self, pump: Pump, planned: str) -> None:
        """Refresh the pump as of the reference time and check that it has the status its
        plan was built for (a mismatch would be a bug in this command, not in the data)."""
        pump = self.refresh(pump)
        self.last_pump = pump
        self.counts["pumps"] += 1
        self.counts[f"status:{pump.status}"] += 1
        if pump.status != planned:
            raise CommandError(f"pump {pump.serial_number}: planned status {planned}, stored status {pump.status}")

    def write_appointments(self, ctx, rng, pump: Pump, plan: PumpPlan, features) -> None:
        """Appointments booked yesterday: urgent for the alarm, the next refill for some."""
        pump.refresh_from_db()
        if pump.refill_due_on is None:
            return
        booked_at = self.latest
        if features.get("urgent_appointment"):
            # the first refill visit from tomorrow on
            when = self.refill_slot(ctx, self.day + ONE_DAY, later=True)
            if when is not None:
                services.schedule_appointment(
                    pump=pump, scheduled_for=when, notes="Urgent refill: low-reservoir alarm.", actor=ACTOR,
                    now=booked_at,
                )
        elif features.get("missed_appointment"):
            # Booked at the last refill, for the due date; the patient did not come.
            appointment = services.schedule_appointment(
                pump=pump, scheduled_for=self.local(ctx, pump.refill_due_on, 10, 30), actor=ACTOR,
                now=plan.refills[-1].at + timedelta(hours=1),
            )
            services.update_appointment(
                appointment=appointment, actor=ACTOR, status=Appointment.Status.MISSED,
                notes="Did not attend; phoned twice, no answer.",
            )
        elif rng.random() < features.get("appointment", 0):
            # the latest free refill visit on or before the due date, not before tomorrow
            when = self.refill_slot(ctx, pump.refill_due_on)
            if when is not None and when.astimezone(ctx.tz).date() > self.day:
                services.schedule_appointment(pump=pump, scheduled_for=when, actor=ACTOR, now=booked_at)

#: At scale, the status mix of a real network: most pumps are fine, a few are due, an
#: alarm is rare (each one is an emergency somebody is already handling).
BULK_TARGETS = (
    (pj.STATUS_OK, 700),
    (pj.STATUS_DUE_SOON, 170),
    (pj.STATUS_OVERDUE, 50),
    (pj.STATUS_ALARM, 4),
    (pj.STATUS_EMPTY, 2),
    (pj.STATUS_INCOMPLETE, 20),
    ("explanted", 54),
)
#: Planned histories per clinic and status that the copies are made from.
TEMPLATES_PER_CLINIC = (
    (pj.STATUS_OK, 6), (pj.STATUS_DUE_SOON, 3), (pj.STATUS_OVERDUE, 2), (pj.STATUS_ALARM, 1), (pj.STATUS_EMPTY, 1),
    (pj.STATUS_INCOMPLETE, 1), ("explanted", 1),
)
#: Share of the network's pumps in each clinic (in the order of CLINICS + EXTRA_CLINICS).
CLINIC_WEIGHTS = (35, 25, 25, 15)
BULK_FROM = 1000  # --pumps at or above this use the bulk path


class BulkDemo(Demo):
    """Synthetic data at scale (PostgreSQL). The special pumps, one pump with more than ten
    years of history and a few planned histories per clinic and status (the templates) are
    written through the services, exactly as the small demo; every other pump is a copy of
    a template's records for a new patient, made by the database (``pumps.demo_clone``)."""

    clinic_specs = CLINICS + EXTRA_CLINICS

    def run(self) -> dict:
        from pumps.demo_clone import Copy, copy_pumps

        contexts = self.create_clinics()
        user = self.create_demo_user(contexts)
        for ctx, weight in zip(contexts, CLINIC_WEIGHTS, strict=True):
            # At scale a clinic refills every open day, about one pump in 40 a day (a
            # refill every two to three months), which leaves room in the plan.
            slots = min(MAX_REFILL_SLOTS, max(ctx.spec.refill_slots_per_day, self.pumps * weight // 100 // 40))
            Clinic.objects.filter(pk=ctx.clinic.pk).update(refill_slots_per_day=slots,
                                                           refill_slots_by_weekday=[None] * 7)
            ctx.clinic.refresh_from_db()
        slots = self.special_slots() + [
            # a long history: the pump page must stay fast with more than ten years of records
            (0, pj.STATUS_OK, {"model": "8637-40", "refills": 45, "bolus": True, "reading_rate": 0.4,
                               "high_risk": False}),
        ]
        for index, (clinic_index, scenario, features) in enumerate(slots):
            rng = random.Random(f"pumpclinic-demo:{self.seed}:pump:{index}")
            self.write_scenario(contexts[clinic_index], rng, scenario, dict(features))
        templates: dict[tuple[int, str], list[Pump]] = {}
        for clinic_index, ctx in enumerate(contexts):
            for scenario, count in TEMPLATES_PER_CLINIC:
                for n in range(count):
                    rng = random.Random(f"pumpclinic-demo:{self.seed}:template:{ctx.spec.code}:{scenario}:{n}")
                    self.write_scenario(ctx, rng, scenario, self.random_features(rng, scenario))
                    templates.setdefault((clinic_index, scenario), []).append(self.last_pump)
        remaining = self.pumps - self.counts["pumps"]
        if remaining < 0:
            raise CommandError(f"--pumps must be at least {self.counts['pumps']} for the bulk path.")
        open_alerts = set(
            Alert.objects.filter(pump__in=[p for ps in templates.values() for p in ps], resolved_at__isnull=True)
            .values_list("pump_id", flat=True)
        )
        rng = random.Random(f"pumpclinic-demo:{self.seed}:copies")
        scenarios, weights = zip(*BULK_TARGETS, strict=True)
        copies = []
        for _ in range(remaining):
            clinic_index = rng.choices(range(len(contexts)), CLINIC_WEIGHTS)[0]
            ctx = contexts[clinic_index]
            template = rng.choice(templates[(clinic_index, rng.choices(scenarios, weights)[0])])
            copies.append(Copy(
                template_id=template.pk, patient=self.copy_patient(ctx, rng, template.patient),
                serial_number=self.serial_for(template.model, rng), due_now=template.pk in open_alerts,
            ))
            self.counts["pumps"] += 1
            self.counts[f"status:{template.status}"] += 1
        copy_pumps(copies, now=self.now)
        self.counts["refills"] = Refill.objects.filter(pump__clinic__in=[c.clinic for c in contexts]).count()
        self.counts["readings"] = Reading.objects.filter(pump__clinic__in=[c.clinic for c in contexts]).count()
        self.counts["awaiting_sweep"] = sum(c.due_now for c in copies)
        return {"user": user, "clinics": [c.clinic for c in contexts], "counts": self.counts}

    def copy_patient(self, ctx: Context, rng: random.Random, template: Patient) -> dict:
        """A new synthetic patient like the template's (origin, risk, status)."""
        ctx.patients += 1
        origin = template.spasticity_origin
        age = rng.randint(8, 45) if origin == Patient.Origin.CEREBRAL else rng.randint(19, 82)
        return {
            "clinic_id": ctx.clinic.pk,
            "mrn": f"{ctx.spec.mrn_prefix}{100000 + ctx.patients * 7 + rng.randint(0, 6)}",
            "family_name": rng.choice(ctx.spec.family_names),
            "given_name": rng.choice(ctx.spec.given_names),
            "birth_date": self.day - timedelta(days=age * 365 + rng.randint(0, 364)),
            "spasticity_origin": origin,
            "withdrawal_high_risk": template.withdrawal_high_risk,
            "high_risk_reason": template.high_risk_reason,
            "phone": ctx.spec.phone_format.format(rng.randint(0, 99)),
            "caregiver_phone": ctx.spec.phone_format.format(rng.randint(0, 99)) if rng.random() < 0.4 else "",
            "status": template.status,
        }


class Command(BaseCommand):
    help = (
        "Create realistic synthetic demo clinics, staff, patients, pumps and histories (deterministic for a "
        "given --seed), and the demo sign-in."
    )

    def add_arguments(self, parser):
        parser.add_argument("--pumps", type=int, default=40, help=f"Number of pumps (at least {MIN_PUMPS}; default 40).")
        parser.add_argument("--seed", type=int, default=1, help="Random seed (default 1).")
        parser.add_argument(
            "--now",
            help="Reference instant (ISO 8601 with an offset); default: the current time. The data depends on "
            "its UTC date.",
        )
        parser.add_argument(
            "--if-empty", action="store_true", help="Do nothing when any clinic exists (for make run)."
        )
        parser.add_argument(
            "--bulk", action=argparse.BooleanOptionalAction, default=None,
            help=f"Four clinics, and most pumps copies of planned histories made by the database (PostgreSQL); "
            f"the default from --pumps {BULK_FROM} on.",
        )

    def handle(self, *args, pumps, seed, now, if_empty, bulk=None, **options):
        if if_empty and Clinic.objects.exists():
            self.stdout.write("Clinics already exist: demo data not created.")
            return
        if pumps < MIN_PUMPS:
            raise CommandError(f"--pumps must be at least {MIN_PUMPS} so that every status can be shown.")
        if now:
            moment = parse_datetime(now)
            if moment is None or timezone.is_naive(moment):
                raise CommandError("--now must be an ISO 8601 date and time with an offset, e.g. 2026-03-01T12:00:00Z.")
        else:
            moment = timezone.now()
        bulk = pumps >= BULK_FROM if bulk is None else bulk
        if bulk and connection.vendor != "postgresql":
            raise CommandError(
                f"The bulk path (--pumps {BULK_FROM} or more, or --bulk) needs PostgreSQL (DATABASE_URL=postgres://...)."
            )
        codes = [c.code for c in CLINICS + EXTRA_CLINICS]
        existing = list(Clinic.objects.filter(code__in=codes).values_list("code", flat=True))
        if existing:
            raise CommandError(f"Demo clinics already exist ({', '.join(existing)}): use an empty database.")
        if not PumpModel.objects.exists():
            raise CommandError("The pump catalog is empty: run 'manage.py migrate' first.")
        with transaction.atomic():
            result = (BulkDemo if bulk else Demo)(pumps=pumps, seed=seed, now=moment).run()
        counts = result["counts"]
        statuses = {s: counts[f"status:{s}"] for s in pj.STATUSES}
        for clinic in result["clinics"]:
            self.stdout.write(f"Clinic {clinic.code}: {clinic.name} ({clinic.timezone})")
        self.stdout.write(
            f"Created {Patient.objects.filter(clinic__in=result['clinics']).count()} patients, {counts['pumps']} pumps, "
            f"{counts['refills']} refills and {counts['readings']} readings (seed {seed})."
        )
        self.stdout.write(
            "Pump status now: " + ", ".join(f"{s} {statuses[s]}" for s in pj.STATUSES if statuses[s])
        )
        if counts["awaiting_sweep"]:
            self.stdout.write(
                f"{counts['awaiting_sweep']} copied pumps have alerts to raise: the next sweep raises them "
                "(manage.py run_alert_sweep, or the worker within 5 minutes)."
            )
        self.stdout.write(self.style.SUCCESS(f"Sign in as '{DEMO_USERNAME}' with password '{DEMO_PASSWORD}'."))
        self.stdout.write(
            "To try a role, sign in as a demo staff member with the same password, e.g. "
            "'lakeshore.rn.hayes' (nurse) or 'lakeshore.dr.chen' (prescriber)."
        )
