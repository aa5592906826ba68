"""The demo's planner: each synthetic pump's history, planned backwards from the status the
pump should have on the reference day, without a database.

Pure Python in the style of ``pumps.projection`` and ``pumps.planner`` (no Django, no
clock): the reference instant, the seed, the clinics (``ClinicPlan``) and the pump models
(``ModelSpec``) are parameters, and the results are dataclasses — a patient
(``PatientPlan``), a pump's refills, programs, readings, events and the appointment it
gets (``PumpPlan``), an incomplete pump, a replacement. Each planned history is checked
with the projection engine over the whole reference day in every zone (UTC-12 .. UTC+12).

Deterministic: every random choice comes from a ``random.Random`` seeded by
``Planner.rng`` from the seed and the pump's slot, and every plan is a function of that
generator and the reference day. The writers (``pumps.demo.writers``) go on drawing from
the same generator for the details of the records they write (who did a refill, lot
numbers, the residual read at a refill), so plan and write are one sequence of draws.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from fractions import Fraction
from itertools import pairwise
from zoneinfo import ZoneInfo

from pumps import projection as pj
from pumps import symptoms
from pumps.planner import Capacity

from .specs import (
    BENZODIAZEPINE,
    CEREBRAL,
    CLINICS,
    EVENT_ALARM_REPORTED,
    EVENT_MRI,
    EVENT_WITHDRAWAL,
    EXPLANTED,
    FLEX_PATTERNS,
    HIGH_RISK_REASONS,
    MODEL_WEIGHTS,
    NURSE,
    OPIOID,
    OPIOID_SCORES,
    ORIGIN_WEIGHTS,
    OVERDOSE_ACK,
    OVERDOSE_NOTE,
    OVERDOSE_SCORES,
    OVERDOSE_SIGNS,
    PRESCRIBER,
    RANDOM_TARGETS,
    REPLACED,
    RESPONSE_OPIOID,
    RESPONSE_OVERDOSE,
    RESPONSE_TITRATED,
    SPINAL,
    TITRATED_GOAL,
    TITRATED_SCORES,
    ClinicSpec,
)

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
ONE_DAY = timedelta(days=1)
MIN_PUMPS = 10
OVERRIDE_REASON = "Persistent lower-limb spasticity after review: physician-approved increase above the limit"
MEDTRONIC = "Medtronic"


def _round_to(value: Decimal, step: int) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_HALF_UP) * step


def _floor_to(value: Decimal, step: int) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def _days(value: Fraction | float) -> timedelta:
    return timedelta(seconds=round(float(value) * 86400))


def local(tz: ZoneInfo, day: date, hour: int, minute: int) -> datetime:
    """The UTC instant of a local clock time on ``day`` in ``tz``."""
    return datetime.combine(day, time(hour, minute), tzinfo=tz).astimezone(UTC)


def is_open(day: date, policy: pj.Policy) -> bool:
    return day.weekday() in policy.open_weekdays and day not in policy.closures


def closure_day(day: date) -> date:
    """The demo's closure (a staff training day): the first weekday from nine days after
    ``day`` (due dates that fall on it move to the open day before)."""
    closure = day + timedelta(days=9)
    while closure.weekday() >= 5:
        closure += ONE_DAY
    return closure


# ------------------------------------------------------------------ the catalog


@dataclass(frozen=True)
class ModelSpec:
    """What the planner needs of a pump model of the catalog (``pumps.models.PumpModel``)."""

    code: str
    manufacturer: str
    reservoir_ml: Decimal
    default_alarm_ml: Decimal
    volume_measured: bool  # the pump measures its volume (else it calculates it)


# ---------------------------------------------------------------------- programs


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

    def projection(self, at: datetime) -> pj.ProgramData:
        return pj.ProgramData(
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

    def with_daily(self, daily: Decimal, override: str = "") -> ProgramSpec:
        return ProgramSpec(self.conc, daily, pj.MODE_CONTINUOUS, (), self.bolus, self.bolus_max, override)

    def to_flex(self, pattern) -> ProgramSpec:
        mean = self.daily / 24
        steps = tuple(
            (start, (mean * factor).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)) for start, factor in pattern
        )
        total = pj.to_decimal_ml(pj.flex_daily_dose([pj.FlexStep(time.fromisoformat(s), d) for s, d in steps]))
        return ProgramSpec(self.conc, total, pj.MODE_FLEX, steps, self.bolus, self.bolus_max, "")


# ------------------------------------------------------------ features and draws


@dataclass
class Features:
    """What a pump's history should show (the scenario's choices)."""

    model: str | None = None  # a catalog code; None: drawn by MODEL_WEIGHTS
    refills: int | None = None  # None: 2 to 9
    flex: bool = False
    bolus: bool = False
    concentration_change: bool = False
    high_risk: bool = False
    withdrawal_history: bool = False  # a withdrawal episode long ago (the reason for the risk)
    origin: str | None = None
    discrepancy: int = 0  # -1 / +1: one refill finds less / more than expected
    override_at: int | None = None  # the refill whose program exceeds the titration limit
    max_rate: Fraction | None = None  # cap on the worst-case mL/day
    alarm_ml: Decimal | None = None  # None: the model's default
    reading_rate: float = 0.25  # chance of an interrogation between two refills
    no_titration: bool = False
    unverified: bool = False  # the last program is left for verification
    recent_mri: bool = False  # an MRI elsewhere two days ago, not yet interrogated
    alarm_reported: bool = False  # the caregiver phoned about the alarm
    appointment: float = 0.0  # chance of a refill booked on or before the due date
    urgent_appointment: bool = False
    missed_appointment: bool = False
    response: str = ""  # a dose-and-response story (specs.RESPONSE_*): assessments and co-medication


@dataclass(frozen=True)
class Shape:
    """Where the program of a history changes (derived from the features and drawn)."""

    count: int
    override_at: int | None = None
    bolus_from: int = 0
    flex_from: int | None = None
    flex_pattern: tuple = ()
    concentration_change_at: int | None = None
    max_rate: Fraction | None = None
    titrate_up: bool = False  # the dose rises at every refill (the titrated story)


@dataclass
class Draws:
    """The random draws of a schedule, drawn up front so that the search for the last
    refill uses no randomness."""

    fractions: list[float]  # interval before each refill, as a fraction of the time to the alarm
    hours: list[tuple[int, int]]  # local clock time of each refill but the last
    last_time: tuple[int, int]
    discrepancy: dict[int, int]  # refill index -> -1 / +1
    first_dose: ProgramSpec  # the program of the first fill (lower during titration)
    titration: list[ProgramSpec]  # one a day after the first fill up to the maintenance dose
    ok_days: float
    due_soon_days: float
    overdue_days: float
    empty_days: float
    history_end: int  # days between the last refill and the end of an ended history


# --------------------------------------------------------------------- the plans


@dataclass
class RefillPlan:
    at: datetime
    spec: ProgramSpec  # the program in force after this refill
    fill_ml: Decimal  # volume in the reservoir after the refill
    new_program: bool  # the refill carries a new program (first fill, change)
    bridge_ml: Decimal | None = None
    discrepancy: int = 0  # -1: less than expected remained, +1: more, 0: as expected


@dataclass(frozen=True)
class ProgramPlan:
    at: datetime
    spec: ProgramSpec


@dataclass(frozen=True)
class ReadingPlan:
    at: datetime
    after_mri: bool


@dataclass(frozen=True)
class EventPlan:
    occurred_at: datetime
    kind: str
    notes: str
    recorded_at: datetime | None = None  # when the clinic learns of it; None: as it happens

    @property
    def written_at(self) -> datetime:
        return self.recorded_at or self.occurred_at


@dataclass(frozen=True)
class AppointmentPlan:
    """The refill appointment a pump gets; the writer books it against the stored due date
    in the clinic's free refill visits (``RefillBook``)."""

    kind: str  # URGENT: the first visit from tomorrow; MISSED: at the due date, not attended;
    # LIKELY: with probability ``chance``, the latest visit on or before the due date
    chance: float = 1.0

    URGENT = "urgent"
    MISSED = "missed"
    LIKELY = "likely"


@dataclass(frozen=True)
class AssessmentPlan:
    """A visit assessment (docs/clinical-rules.md §15): with the refill ``refill`` (an
    index in the plan's refills; its instant is the refill's) or on its own."""

    at: datetime
    ashworth: tuple[str, str, str, str]  # left arm, right arm, left leg, right leg ("": not assessed)
    penn: int | None
    pain: int | None
    refill: int | None = None
    goal: str = ""
    overdose: tuple[str, ...] = ()  # codes of pumps.symptoms.OVERDOSE_SIGNS answered yes
    withdrawal: tuple[str, ...] = ()  # codes of pumps.symptoms.WITHDRAWAL_SIGNS answered yes
    notes: str = ""
    acknowledge: str = ""  # a prescriber acknowledges its alert with this reason, two hours later

    @property
    def highest(self) -> float | None:
        """The highest Ashworth grade of the limbs assessed (1+ is 1.5)."""
        values = [symptoms.ASHWORTH_VALUE[g] for g in self.ashworth if g]
        return max(values) if values else None


@dataclass(frozen=True)
class CoMedicationPlan:
    """A CNS depressant the patient takes (docs/clinical-rules.md §15)."""

    name: str
    category: str
    started_on: date
    stopped_on: date | None = None
    notes: str = ""


@dataclass
class PumpPlan:
    model: ModelSpec
    serial: str
    alarm_ml: Decimal | None  # None: the model's default
    implanted_on: date
    refills: list[RefillPlan] = field(default_factory=list)
    titrations: list[ProgramPlan] = field(default_factory=list)
    readings: list[ReadingPlan] = field(default_factory=list)
    events: list[EventPlan] = field(default_factory=list)
    appointment: AppointmentPlan | None = None
    explanted_on: date | None = None
    leave_last_program_unverified: bool = False
    fills: list[Decimal] = field(default_factory=list)  # volume after each planned refill
    reached: str = ""  # the status the plan gives over the reference day
    assessments: list[AssessmentPlan] = field(default_factory=list)
    comedications: list[CoMedicationPlan] = field(default_factory=list)  # the patient's

    @property
    def last_program_at(self) -> datetime | None:
        times = [r.at for r in self.refills if r.new_program] + [t.at for t in self.titrations]
        return max(times, default=None)

    @property
    def alarm(self) -> Decimal:
        return self.alarm_ml if self.alarm_ml is not None else self.model.default_alarm_ml

    def program_timeline(self) -> list[pj.ProgramData]:
        programs = [r.spec.projection(r.at) for r in self.refills if r.new_program]
        programs += [t.spec.projection(t.at) for t in self.titrations]
        return sorted(programs, key=lambda p: p.effective_at)


@dataclass(frozen=True)
class PatientPlan:
    mrn: str
    family_name: str
    given_name: str
    birth_date: date
    origin: str
    high_risk: bool
    high_risk_reason: str
    phone: str
    caregiver_phone: str


@dataclass(frozen=True)
class FirstFill:
    """The first fill of an incomplete pump, recorded without its program."""

    at: datetime
    conc: Decimal
    fill_ml: Decimal
    nurse: str


@dataclass(frozen=True)
class IncompletePlan:
    """A pump just implanted elsewhere and transferred in: nothing recorded yet, or the
    first fill without the program."""

    model: ModelSpec
    serial: str
    implanted_on: date
    implanted_at: datetime
    first_fill: FirstFill | None


@dataclass(frozen=True)
class ReplacementPlan:
    """A SynchroMed II at its elective replacement indicator replaced by a new pump in one
    operation; the new pump's first fill carries on the same program."""

    old: PumpPlan
    new: PumpPlan

    @property
    def replaced_on(self) -> date:
        return self.new.implanted_on


@dataclass(frozen=True)
class Slot:
    """One pump (two for a replacement) of the demo: its clinic and scenario."""

    clinic: int  # index in the planner's clinics
    scenario: str  # a status of pumps.projection, EXPLANTED or REPLACED
    features: Features


@dataclass(frozen=True)
class PlannedSlot:
    """A slot planned: the patient and the pump (an incomplete pump, a pump in use or
    explanted, or a replacement)."""

    slot: Slot
    patient: PatientPlan
    pump: PumpPlan | IncompletePlan | ReplacementPlan


# -------------------------------------------------------------------- the clinics


@dataclass
class ClinicPlan:
    """One clinic as the planner sees it: zone, policy (open days, closures), refill
    capacity, staff, and the counters of patients and booked refill visits."""

    spec: ClinicSpec
    tz: ZoneInfo
    policy: pj.Policy
    capacity: Capacity
    nurses: list[str]
    prescribers: list[str]
    patients: int = 0
    booked: Counter = field(default_factory=Counter)  # refill visits booked per local day

    @classmethod
    def from_spec(cls, spec: ClinicSpec, day: date, *, slots_per_day: int | None = None,
                  slots_by_weekday: tuple[int | None, ...] | None = None) -> ClinicPlan:
        """The clinic with the defaults of a new clinic (``clinic.models.Clinic``), the
        spec's refill capacity (or the one given) and the demo's closure."""
        closures = frozenset({closure_day(day)})
        policy = pj.Policy(closures=closures)
        capacity = Capacity(
            slots_per_day=spec.refill_slots_per_day if slots_per_day is None else slots_per_day,
            slots_by_weekday=spec.refill_slots_by_weekday if slots_by_weekday is None else slots_by_weekday,
            open_weekdays=policy.open_weekdays, closures=closures,
        )
        return cls(spec=spec, tz=ZoneInfo(spec.timezone), policy=policy, capacity=capacity,
                   nurses=spec.usernames(NURSE), prescribers=spec.usernames(PRESCRIBER))

    @property
    def verifiers(self) -> list[str]:
        return self.prescribers  # only a prescriber verifies a program

    def previous_open_day(self, day: date) -> date:
        return pj.previous_open_day(day, self.policy)

    def local(self, day: date, hour: int, minute: int) -> datetime:
        return local(self.tz, day, hour, minute)

    def refill_slot(self, day: date, *, later: bool = False) -> datetime | None:
        """Book the next free refill visit on ``day`` or the latest refill day before it
        (``later``: after it), within 30 days; None when there is none. The visits of a day
        follow the clinic's first refill visit, one every 30 minutes."""
        step = ONE_DAY if later else -ONE_DAY
        for _ in range(30):
            used = self.booked[day]
            if used < self.capacity.slots(day):
                self.booked[day] += 1
                first = datetime.combine(day, self.capacity.first_visit)
                return (first + timedelta(minutes=30 * used)).replace(tzinfo=self.tz).astimezone(UTC)
            day += step
        return None


# --------------------------------------------------------------------- the planner


def clinic_time(rng: random.Random) -> tuple[int, int]:
    return rng.randint(8, 15), rng.choice((0, 10, 15, 20, 30, 40, 45, 50))


def random_features(rng: random.Random, scenario: str) -> Features:
    """The features of an ordinary pump aimed at ``scenario``."""
    features = Features(
        flex=rng.random() < 0.2,
        bolus=rng.random() < 0.15,
        concentration_change=rng.random() < 0.12,
        high_risk=rng.random() < 0.08,
        discrepancy=rng.choice((-1, 1)) if rng.random() < 0.08 else 0,
        appointment=0.6 if scenario == pj.STATUS_DUE_SOON else 0.2,
        override_at=3 if rng.random() < 0.04 else None,
    )
    if scenario in (pj.STATUS_ALARM, pj.STATUS_EMPTY):
        features = replace(features, flex=False, bolus=False, max_rate=Fraction(1, 2))
    return features


def special_slots() -> list[Slot]:
    """The special cases, planned first so that even a small demo shows every status and
    each kind of history."""
    return [
        Slot(0, pj.STATUS_ALARM, Features(model="8637-40", max_rate=Fraction(2, 5), alarm_reported=True,
                                          urgent_appointment=True)),
        Slot(1, pj.STATUS_EMPTY, Features(model="8637-20", max_rate=Fraction(1, 2))),
        Slot(0, pj.STATUS_OVERDUE, Features(discrepancy=-1, missed_appointment=True, refills=5,
                                            response=RESPONSE_TITRATED)),
        Slot(1, pj.STATUS_DUE_SOON, Features(high_risk=True, alarm_ml=Decimal("4.0"), withdrawal_history=True,
                                             appointment=1.0, refills=6, discrepancy=1)),
        Slot(0, pj.STATUS_INCOMPLETE, Features()),
        Slot(1, REPLACED, Features()),
        Slot(0, EXPLANTED, Features()),
        Slot(1, pj.STATUS_OK, Features(flex=True, bolus=True, concentration_change=True, refills=6,
                                       model="8637-40", reading_rate=0.5, response=RESPONSE_OPIOID)),
        Slot(0, pj.STATUS_DUE_SOON, Features(bolus=True, unverified=True, recent_mri=True, model="8637-40",
                                             override_at=2, refills=4, origin=CEREBRAL,
                                             response=RESPONSE_OVERDOSE)),
    ]


def spread(steps: Sequence, count: int) -> list:
    """``count`` items from ``steps`` spread from the first to the last."""
    if count == 1:
        return [steps[-1]]
    return [steps[round(i * (len(steps) - 1) / (count - 1))] for i in range(count)]


def _candidate_days(ideal: date, policy: pj.Policy) -> Iterator[date]:
    """Days around ``ideal``, nearest first: open days, then any day."""
    for weekend_too in (False, True):
        for k in range(30):
            for day in (ideal - timedelta(days=k), ideal + timedelta(days=k)) if k else (ideal,):
                if weekend_too or is_open(day, policy):
                    yield day


class Planner:
    """Plans the demo's patients and pump histories for ``seed`` as of ``now``."""

    def __init__(self, *, seed: int, now: datetime, models: Mapping[str, ModelSpec],
                 clinics: Sequence[ClinicPlan]):
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
        self.models = dict(models)
        self.clinics = list(clinics)
        self.serials: Counter = Counter()

    @classmethod
    def for_specs(cls, *, seed: int, now: datetime, models: Mapping[str, ModelSpec],
                  specs: Sequence[ClinicSpec] = CLINICS) -> Planner:
        day = now.astimezone(UTC).date()
        return cls(seed=seed, now=now, models=models, clinics=[ClinicPlan.from_spec(s, day) for s in specs])

    def rng(self, *parts) -> random.Random:
        """The generator of one pump (or one batch of copies): a function of the seed."""
        return random.Random(":".join(["pumpclinic-demo", str(self.seed), *map(str, parts)]))

    # ------------------------------------------------------------------ the slots

    def slots(self, pumps: int) -> list[Slot]:
        """Every pump of a demo of ``pumps`` pumps: the special cases first."""
        result = special_slots()
        used = sum(2 if s.scenario == REPLACED else 1 for s in result)
        index = 0
        while used < pumps:
            rng = self.rng("random", index)
            index += 1
            scenario = rng.choices(*zip(*RANDOM_TARGETS, strict=True))[0]
            features = random_features(rng, scenario)
            result.append(Slot(0 if rng.random() < 0.55 else 1, scenario, features))
            used += 1
        return result

    def plan_slot(self, slot: Slot, rng: random.Random) -> PlannedSlot:
        """The patient and pump of ``slot``, drawn from ``rng``."""
        clinic = self.clinics[slot.clinic]
        patient = self.patient(clinic, rng, slot.features)
        if slot.scenario == pj.STATUS_INCOMPLETE:
            pump = self.incomplete(clinic, rng)
        elif slot.scenario == REPLACED:
            pump = self.replacement(clinic, rng, patient)
        elif slot.scenario == EXPLANTED:
            pump = self.explanted(clinic, rng, patient, slot.features)
        else:
            pump = self.implanted(clinic, rng, patient, slot.scenario, slot.features)
        return PlannedSlot(slot=slot, patient=patient, pump=pump)

    def plan_demo(self, pumps: int) -> Iterator[PlannedSlot]:
        """Every slot of a demo of ``pumps`` pumps, planned in order. The writers draw the
        details of each pump's records from the slot's generator after its plan, so these
        are the plans they write."""
        for index, slot in enumerate(self.slots(pumps)):
            yield self.plan_slot(slot, self.rng("pump", index))

    # ------------------------------------------------------------------- patients

    def serial_for(self, model: ModelSpec, rng: random.Random) -> str:
        self.serials[model.manufacturer] += 1
        n = self.serials[model.manufacturer]
        if model.manufacturer == MEDTRONIC:
            return f"NGP{rng.randint(100, 999)}{n:04d}H"
        if model.manufacturer == "Flowonix":
            return f"P{rng.randint(10, 99)}{n:05d}"
        return f"MS{rng.randint(10, 99)}{n:05d}"

    def birth_date(self, rng: random.Random, origin: str) -> date:
        # Cerebral palsy patients are often children or young adults.
        age = rng.randint(8, 45) if origin == CEREBRAL else rng.randint(19, 82)
        return self.day - timedelta(days=age * 365 + rng.randint(0, 364))

    def patient(self, clinic: ClinicPlan, rng: random.Random, features: Features) -> PatientPlan:
        clinic.patients += 1
        origin = features.origin or rng.choices(*zip(*ORIGIN_WEIGHTS, strict=True))[0]
        birth = self.birth_date(rng, origin)
        reason = ""
        if features.high_risk and features.withdrawal_history:
            reason = HIGH_RISK_REASONS[2]
        elif features.high_risk:
            reason = HIGH_RISK_REASONS[0] if origin == SPINAL else rng.choice(HIGH_RISK_REASONS[1:])
        spec = clinic.spec
        return PatientPlan(
            mrn=f"{spec.mrn_prefix}{100000 + clinic.patients * 7 + rng.randint(0, 6)}",
            family_name=rng.choice(spec.family_names),
            given_name=rng.choice(spec.given_names),
            birth_date=birth,
            origin=origin,
            high_risk=features.high_risk,
            high_risk_reason=reason,
            phone=spec.phone_format.format(rng.randint(0, 99)),
            caregiver_phone=spec.phone_format.format(rng.randint(0, 99)) if rng.random() < 0.4 else "",
        )

    def copy_patient(self, clinic: ClinicPlan, rng: random.Random, *, origin: str, high_risk: bool,
                     reason: str) -> PatientPlan:
        """A new synthetic patient like a template's (origin, risk), for a bulk copy."""
        clinic.patients += 1
        age = rng.randint(8, 45) if origin == CEREBRAL else rng.randint(19, 82)
        spec = clinic.spec
        mrn = f"{spec.mrn_prefix}{100000 + clinic.patients * 7 + rng.randint(0, 6)}"
        family, given = rng.choice(spec.family_names), rng.choice(spec.given_names)
        return PatientPlan(
            mrn=mrn, family_name=family, given_name=given,
            birth_date=self.day - timedelta(days=age * 365 + rng.randint(0, 364)),
            origin=origin, high_risk=high_risk, high_risk_reason=reason,
            phone=spec.phone_format.format(rng.randint(0, 99)),
            caregiver_phone=spec.phone_format.format(rng.randint(0, 99)) if rng.random() < 0.4 else "",
        )

    # ------------------------------------------------------------------- programs

    @staticmethod
    def choose_concentration(dose, bolus, bolus_max, fill, alarm, rng, *, max_rate=None) -> Decimal:
        """The concentration that gives a refill interval of 45-150 days (worst case), as a
        clinic would choose it; ``max_rate`` caps the mL/day."""
        options = []
        for conc in (500, 1000, 2000):
            rate = ProgramSpec(Decimal(conc), dose, bolus=bolus, bolus_max=bolus_max).worst_ml_per_day()
            if max_rate is None or rate <= max_rate:
                options.append((conc, (Fraction(fill) - Fraction(alarm)) / rate))
        if not options:
            return Decimal(2000)
        good = [c for c, d in options if 45 <= d <= 150]
        if good:
            return Decimal(rng.choice(good))
        return Decimal(min(options, key=lambda o: min(abs(o[1] - 45), abs(o[1] - 150)))[0])

    @staticmethod
    def doses(rng: random.Random, origin: str, shape: Shape) -> list[Decimal]:
        """The daily dose after each refill: mostly unchanged, sometimes up or down."""
        base = Decimal(rng.randint(20, 140) * 5) if origin == SPINAL else Decimal(rng.randint(15, 110) * 5)
        doses = [base]
        if shape.titrate_up:  # about 12 % more at every refill, within any titration limit
            for _ in range(1, shape.count):
                doses.append(_floor_to(doses[-1] * Decimal("1.12"), 5))
            return doses
        for i in range(1, shape.count):
            previous = doses[-1]
            if i == shape.override_at:
                doses.append(_round_to(previous * Decimal("1.25"), 5))
                continue
            roll = rng.random()
            if roll < 0.7:
                doses.append(previous)
            elif roll < 0.9:
                doses.append(_floor_to(previous * Decimal(rng.choice(("1.05", "1.08", "1.10"))), 5))
            else:
                doses.append(_round_to(previous * Decimal(rng.choice(("0.90", "0.95"))), 5))
        return doses

    def program_specs(self, rng: random.Random, *, shape: Shape, model: ModelSpec, alarm: Decimal, origin: str,
                      bolus_wanted: bool) -> list[ProgramSpec]:
        """The program in force after each of ``shape.count`` refills (index 0: the first fill)."""
        doses = self.doses(rng, origin, shape)
        bolus = Decimal(rng.choice((25, 40, 50))) if bolus_wanted else None
        bolus_max = rng.choice((2, 3, 4, 6)) if bolus else None
        final_bolus = bolus if shape.count - 1 >= shape.bolus_from else None
        conc = self.choose_concentration(
            doses[-1], final_bolus, bolus_max if final_bolus else None, model.reservoir_ml - 1, alarm, rng,
            max_rate=shape.max_rate,
        )
        change_at = shape.concentration_change_at if conc >= 1000 else None
        specs = []
        for i, dose in enumerate(doses):
            c = conc if change_at is None or i >= change_at else conc / 2
            has_bolus = bolus is not None and i >= shape.bolus_from
            spec = ProgramSpec(c, dose, bolus=bolus if has_bolus else None, bolus_max=bolus_max if has_bolus else None)
            if shape.flex_from is not None and i >= shape.flex_from:
                spec = spec.to_flex(shape.flex_pattern)
            if i == shape.override_at:
                spec = replace(spec, override=OVERRIDE_REASON)
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

    # ------------------------------------------------------------------- schedule

    def schedule(self, clinic: ClinicPlan, plan: PumpPlan, specs: Sequence[ProgramSpec], draws: Draws,
                 last_at: datetime) -> None:
        """Place the refills backwards from ``last_at``: each interval is a fraction of the
        time the reservoir takes to reach the alarm, on clinic days at clinic hours."""
        times = [last_at]
        for i in range(len(specs) - 2, -1, -1):
            days = (Fraction(plan.fills[i]) - Fraction(plan.alarm)) / specs[i].worst_ml_per_day()
            interval = max(min(days * Fraction(draws.fractions[i]), Fraction(165)), Fraction(14))
            day = clinic.previous_open_day(pj.local_date(times[0] - _days(interval), clinic.tz))
            times.insert(0, clinic.local(day, *draws.hours[i]))
        plan.refills = []
        previous = None
        for i, (at, spec) in enumerate(zip(times, specs, strict=True)):
            new = i == 0 or spec.delivery() != previous.delivery() or bool(spec.override)
            bridge = Decimal("0.25") if i > 0 and spec.conc != previous.conc else None
            if bridge:  # the reservoir holds fill + bridge before the bolus leaves it
                plan.fills[i] = min(plan.fills[i], plan.model.reservoir_ml - bridge)
            plan.refills.append(RefillPlan(at=at, spec=spec, fill_ml=plan.fills[i], new_program=new, bridge_ml=bridge,
                                           discrepancy=draws.discrepancy.get(i, 0)))
            previous = spec
        plan.implanted_on = pj.local_date(times[0], clinic.tz)
        plan.titrations = []
        if draws.titration:
            plan.refills[0].spec = draws.first_dose
            plan.titrations = [ProgramPlan(times[0] + ONE_DAY * n, spec)
                               for n, spec in enumerate(draws.titration, start=1)]

    def projection(self, clinic: ClinicPlan, plan: PumpPlan, high_risk: bool, at: datetime) -> pj.Projection:
        """The projection of the plan at ``at`` from its last refill."""
        last = plan.refills[-1]
        refill = pj.RefillData(performed_at=last.at, added_volume_ml=last.fill_ml + (last.bridge_ml or 0),
                           bridge_bolus_ml=last.bridge_ml or Decimal(0))
        state = pj.PumpState(tz=clinic.tz, alarm_volume_ml=plan.alarm, high_risk=high_risk)
        return pj.project(at=at, pump=state, refills=[refill], readings=[], programs=plan.program_timeline(),
                          policy=clinic.policy)

    def status_over_window(self, clinic: ClinicPlan, plan: PumpPlan, high_risk: bool) -> tuple[str, str]:
        first, last = (self.projection(clinic, plan, high_risk, at).status for at in self.window)
        return first, last

    def alarm_instant(self, plan: PumpPlan, specs: Sequence[ProgramSpec], draws: Draws, target: str,
                      high_risk: bool) -> datetime:
        """When the reservoir should reach its alarm for the pump to show ``target`` today."""
        rate = specs[-1].worst_ml_per_day()
        alarm = Fraction(plan.alarm)
        centre = datetime.combine(self.day, time(12), tzinfo=UTC)
        extra = 7 if high_risk else 0
        if target == pj.STATUS_OK:
            return centre + _days(draws.ok_days + extra)
        if target == pj.STATUS_DUE_SOON:
            return centre + _days(draws.due_soon_days + extra)
        if target == pj.STATUS_OVERDUE:
            return centre + _days(draws.overdue_days)
        if target == pj.STATUS_ALARM:
            return centre - _days(alarm / rate / 2)
        return centre - _days(draws.empty_days) - _days(alarm / rate)  # empty

    def place_last_refill(self, clinic: ClinicPlan, plan: PumpPlan, specs: Sequence[ProgramSpec], draws: Draws,
                          target: str, high_risk: bool) -> str:
        """Find the last refill instant that gives ``target`` over the whole reference day;
        returns the status obtained (the target unless no clinic day works)."""
        to_alarm = (Fraction(plan.fills[-1]) - Fraction(plan.alarm)) / specs[-1].worst_ml_per_day()
        lra = self.alarm_instant(plan, specs, draws, target, high_risk)
        hour, minute = draws.last_time
        ideal = pj.local_date(lra - _days(to_alarm), clinic.tz)
        while clinic.local(ideal, hour, minute) > self.latest:
            ideal -= ONE_DAY
        first_ok = None
        for day in _candidate_days(ideal, clinic.policy):
            at = clinic.local(day, hour, minute)
            if at > self.latest:
                continue
            self.schedule(clinic, plan, specs, draws, at)
            first_ok = first_ok or at
            if self.status_over_window(clinic, plan, high_risk) == (target, target):
                return target
        # No clinic day gives the target for these doses: keep the nearest clinic day.
        self.schedule(clinic, plan, specs, draws, first_ok)
        return self.status_over_window(clinic, plan, high_risk)[1]

    # ----------------------------------------------------------------- plan a pump

    def shape(self, rng: random.Random, features: Features, count: int) -> Shape:
        flex_from = min(1, count - 1) if features.flex else None
        pattern = rng.choice(FLEX_PATTERNS) if features.flex else ()
        change_at = rng.randint(1, count - 1) if features.concentration_change and count >= 3 else None
        return Shape(
            count=count, override_at=features.override_at, bolus_from=min(1, count - 1) if features.bolus else 0,
            flex_from=flex_from, flex_pattern=pattern, concentration_change_at=change_at, max_rate=features.max_rate,
            titrate_up=features.response == RESPONSE_TITRATED,
        )

    def draws(self, rng: random.Random, specs: Sequence[ProgramSpec], features: Features) -> Draws:
        count = len(specs)
        discrepancy = {}
        if features.discrepancy and count >= 2:
            discrepancy[rng.randint(1, count - 1)] = features.discrepancy
        fractions = [rng.uniform(0.62, 0.88) for _ in specs]
        hours = [clinic_time(rng) for _ in specs]
        last_time = clinic_time(rng)
        first_dose, titration = specs[0], []
        if count >= 2 and not features.no_titration:
            first_dose, titration = self.titration(specs[0], rng)
        return Draws(
            fractions=fractions, hours=hours, last_time=last_time, discrepancy=discrepancy, first_dose=first_dose,
            titration=titration, ok_days=rng.uniform(26, 60), due_soon_days=rng.uniform(13, 18),
            overdue_days=rng.uniform(2.6, 4.4), empty_days=rng.uniform(1.5, 12), history_end=rng.randint(20, 35),
        )

    def prepare(self, rng: random.Random, *, origin: str, features: Features
                ) -> tuple[PumpPlan, list[ProgramSpec], Draws]:
        """Choose the pump, its programs period by period and the random draws of its
        schedule (drawn up front, so the search for the last refill uses no randomness)."""
        model = self.models[features.model or rng.choices(*zip(*MODEL_WEIGHTS, strict=True))[0]]
        plan = PumpPlan(model=model, serial=self.serial_for(model, rng), alarm_ml=features.alarm_ml,
                        implanted_on=self.day)
        shape = self.shape(rng, features, features.refills or rng.randint(2, 9))
        specs = self.program_specs(rng, shape=shape, model=model, alarm=plan.alarm, origin=origin,
                                   bolus_wanted=features.bolus)
        plan.fills = [model.reservoir_ml - Decimal(rng.choice(("0", "0.5", "1", "2"))) for _ in specs]
        return plan, specs, self.draws(rng, specs, features)

    def end_history(self, clinic: ClinicPlan, plan: PumpPlan, specs: Sequence[ProgramSpec], draws: Draws,
                    ends_before: date) -> None:
        """An explanted pump, or the old pump of a replacement: the history ends some weeks
        before ``ends_before``."""
        day = clinic.previous_open_day(ends_before - timedelta(days=draws.history_end))
        self.schedule(clinic, plan, specs, draws, clinic.local(day, *draws.last_time))
        plan.reached = pj.STATUS_INACTIVE

    def add_readings(self, clinic: ClinicPlan, rng: random.Random, plan: PumpPlan, rate: float) -> None:
        """Interrogations at review visits between refills (a reading re-anchors the
        projection); on a SynchroMed some follow an MRI, as the labelling requires."""
        for before, after in pairwise(plan.refills):
            start, end = before.at, after.at
            if rng.random() >= rate:
                continue
            day = clinic.previous_open_day(pj.local_date(start + (end - start) * rng.uniform(0.3, 0.6), clinic.tz))
            at = clinic.local(day, *clinic_time(rng))
            after_mri = plan.model.manufacturer == MEDTRONIC and rng.random() < 0.3
            if not start + ONE_DAY < at < end - ONE_DAY or any(at < t.at + ONE_DAY for t in plan.titrations):
                continue
            plan.readings.append(ReadingPlan(at, after_mri))
            if after_mri:
                # recorded at the interrogation that follows it (no post-MRI alert in between)
                plan.events.append(EventPlan(at - timedelta(hours=3), EVENT_MRI, "Brain MRI (1.5 T).", at))

    def implanted(self, clinic: ClinicPlan, rng: random.Random, patient: PatientPlan, target: str,
                  features: Features) -> PumpPlan:
        """A pump in use, aimed at ``target`` (a status of the projection) today."""
        plan, specs, draws = self.prepare(rng, origin=patient.origin, features=features)
        plan.reached = self.place_last_refill(clinic, plan, specs, draws, target, patient.high_risk)
        self.add_readings(clinic, rng, plan, features.reading_rate)
        plan.leave_last_program_unverified = features.unverified
        plan.events += self.special_events(clinic, plan, patient, features)
        plan.appointment = self.appointment(features)
        self.add_response(clinic, plan, features.response, features.override_at)
        return plan

    # ---------------------------------------------------------- dose and response

    def add_response(self, clinic: ClinicPlan, plan: PumpPlan, story: str, increase_at: int | None) -> None:
        """The assessments and co-medication of a dose-and-response story (no random
        draw: the story follows the planned refills)."""
        if not story:
            return
        scores = {RESPONSE_TITRATED: TITRATED_SCORES, RESPONSE_OVERDOSE: OVERDOSE_SCORES,
                  RESPONSE_OPIOID: OPIOID_SCORES}[story]
        plan.assessments = [
            AssessmentPlan(refill.at, ("", "", left, right), penn, pain, refill=i,
                           goal=TITRATED_GOAL if story == RESPONSE_TITRATED and i == 0 else "")
            for i, (refill, (left, right, penn, pain)) in enumerate(
                zip(plan.refills, spread(scores, len(plan.refills)), strict=True))
        ]
        if story == RESPONSE_OVERDOSE and increase_at is not None and increase_at < len(plan.refills):
            screen = self.overdose_screen(clinic, plan, increase_at)
            if screen is not None:
                plan.assessments = sorted([*plan.assessments, screen], key=lambda a: a.at)
        if story == RESPONSE_OPIOID:
            first = pj.local_date(plan.refills[0].at, clinic.tz)
            middle = pj.local_date(plan.refills[len(plan.refills) // 2].at, clinic.tz)
            name, category, notes = BENZODIAZEPINE
            plan.comedications.append(CoMedicationPlan(name, category, first + timedelta(days=7),
                                                       first + timedelta(days=35), notes))
            name, category, notes = OPIOID
            plan.comedications.append(CoMedicationPlan(name, category, middle - timedelta(days=12), None, notes))

    def overdose_screen(self, clinic: ClinicPlan, plan: PumpPlan, index: int) -> AssessmentPlan | None:
        """The morning after the refill ``index`` raised the dose: drowsy, somnolent."""
        day = pj.local_date(plan.refills[index].at, clinic.tz) + ONE_DAY
        at = clinic.local(day, 11, 0)
        following = plan.refills[index + 1].at if index + 1 < len(plan.refills) else None
        if at > self.latest or (following is not None and at >= following - ONE_DAY):
            return None
        return AssessmentPlan(at, ("", "", "1", "1"), 0, 2, overdose=OVERDOSE_SIGNS, notes=OVERDOSE_NOTE,
                              acknowledge=OVERDOSE_ACK)

    def special_events(self, clinic: ClinicPlan, plan: PumpPlan, patient: PatientPlan,
                       features: Features) -> list[EventPlan]:
        events = []
        if features.withdrawal_history and len(plan.refills) >= 3:
            # The episode that made this patient high-risk, long ago.
            events.append(EventPlan(
                plan.refills[1].at - timedelta(hours=36), EVENT_WITHDRAWAL,
                "Itching, fever and rebound spasticity while a refill was delayed; admitted for 2 days.",
            ))
        if features.recent_mri and plan.model.manufacturer == MEDTRONIC:
            at = clinic.local(clinic.previous_open_day(self.day - timedelta(days=2)), 16, 30)
            if plan.refills[-1].at + ONE_DAY < at <= self.latest:
                events.append(EventPlan(at, EVENT_MRI,
                                        "Lumbar spine MRI at an outside hospital; no interrogation yet."))
        if features.alarm_reported:
            lra = self.projection(clinic, plan, patient.high_risk, self.window[0]).low_reservoir_alarm_at
            if lra is not None and lra + timedelta(hours=5) <= self.latest:
                events.append(EventPlan(lra + timedelta(hours=5), EVENT_ALARM_REPORTED,
                                        "Caregiver phoned: the pump is beeping (low-reservoir alarm)."))
        return events

    @staticmethod
    def appointment(features: Features) -> AppointmentPlan | None:
        if features.urgent_appointment:
            return AppointmentPlan(AppointmentPlan.URGENT)
        if features.missed_appointment:
            return AppointmentPlan(AppointmentPlan.MISSED)
        return AppointmentPlan(AppointmentPlan.LIKELY, features.appointment)

    def explanted(self, clinic: ClinicPlan, rng: random.Random, patient: PatientPlan,
                  features: Features) -> PumpPlan:
        """A pump explanted some weeks ago (a pocket infection)."""
        explant_on = clinic.previous_open_day(self.day - timedelta(days=rng.randint(10, 40)))
        plan, specs, draws = self.prepare(rng, origin=patient.origin, features=features)
        self.end_history(clinic, plan, specs, draws, explant_on)
        self.add_readings(clinic, rng, plan, features.reading_rate)
        plan.explanted_on = explant_on
        return plan

    def incomplete(self, clinic: ClinicPlan, rng: random.Random) -> IncompletePlan:
        model = self.models[rng.choices(*zip(*MODEL_WEIGHTS, strict=True))[0]]
        implanted = clinic.previous_open_day(self.day - timedelta(days=rng.randint(2, 6)))
        serial = self.serial_for(model, rng)
        fill = None
        if rng.random() < 0.5:
            conc = Decimal(rng.choice((500, 1000, 2000)))
            fill = FirstFill(at=clinic.local(implanted, 14, 0), conc=conc, fill_ml=model.reservoir_ml,
                             nurse=rng.choice(clinic.nurses))
        return IncompletePlan(model=model, serial=serial, implanted_on=implanted,
                              implanted_at=clinic.local(implanted, 12, 0), first_fill=fill)

    def replacement(self, clinic: ClinicPlan, rng: random.Random, patient: PatientPlan) -> ReplacementPlan:
        old, old_specs, old_draws = self.prepare(
            rng, origin=patient.origin, features=Features(model="8637-20", refills=rng.randint(14, 20))
        )
        new, _, new_draws = self.prepare(
            rng, origin=patient.origin, features=Features(model="8637-20", refills=1, no_titration=True)
        )
        # The replacement day is the new pump's first fill (in theatre, after the 08:00
        # operation), placed so that the new pump is "ok" today.
        new_draws.last_time = (13, 0)
        new.reached = self.place_last_refill(clinic, new, [old_specs[-1]], new_draws, pj.STATUS_OK,
                                             patient.high_risk)
        self.end_history(clinic, old, old_specs, old_draws, new.implanted_on)
        self.add_readings(clinic, rng, old, 0.2)
        return ReplacementPlan(old=old, new=new)

    def eri_at(self, clinic: ClinicPlan, rng: random.Random, replaced_on: date) -> datetime:
        """The interrogation that found the elective replacement indicator, one to two
        weeks before the replacement."""
        return clinic.local(clinic.previous_open_day(replaced_on - timedelta(days=rng.randint(8, 15))), 10, 30)


# ------------------------------------------------------------------- bulk copies


@dataclass(frozen=True)
class TemplateRef:
    """A recorded history that bulk copies are made from (``pumps.demo.clone``)."""

    key: int  # the template pump's id
    clinic: int  # index in the planner's clinics
    status: str  # the template pump's stored status
    model: ModelSpec
    origin: str
    high_risk: bool
    high_risk_reason: str
    patient_status: str


@dataclass(frozen=True)
class CopyPlan:
    template: TemplateRef
    patient: PatientPlan
    serial: str


def plan_copies(planner: Planner, rng: random.Random, count: int, weights: Sequence[int],
                targets: Sequence[tuple[str, int]], templates: Mapping[tuple[int, str], Sequence[TemplateRef]]
                ) -> list[CopyPlan]:
    """``count`` copies: a clinic by ``weights``, a status by ``targets``, one of that
    clinic's templates of that status, and a new patient and serial number."""
    scenarios, scenario_weights = zip(*targets, strict=True)
    copies = []
    for _ in range(count):
        clinic_index = rng.choices(range(len(planner.clinics)), weights)[0]
        template = rng.choice(templates[(clinic_index, rng.choices(scenarios, scenario_weights)[0])])
        patient = planner.copy_patient(planner.clinics[clinic_index], rng, origin=template.origin,
                                       high_risk=template.high_risk, reason=template.high_risk_reason)
        copies.append(CopyPlan(template=template, patient=patient, serial=planner.serial_for(template.model, rng)))
    return copies
