"""The demo's clinics and the weights of its random choices (pure data, no Django).

Roles, patient origins and event kinds are the values of the models' choices
(``clinic.models.Role``, ``pumps.models.Patient.Origin``, ``pumps.models.Event.Kind``);
tests/test_seed_demo.py checks that they stay equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pumps import projection as pj

NURSE, PRESCRIBER, PHARMACIST = "nurse", "prescriber", "pharmacist"
SPINAL, CEREBRAL, MIXED, UNKNOWN = "spinal", "cerebral", "mixed", "unknown"
EVENT_MRI, EVENT_ALARM_REPORTED, EVENT_WITHDRAWAL = "mri", "alarm_reported", "withdrawal_episode"
#: Scenarios beyond the projection's statuses: a pump explanted, a pump replaced by a new one.
EXPLANTED, REPLACED = "explanted", "replaced"

#: The status each ordinary (non-special) pump is aimed at, with weights.
RANDOM_TARGETS = (
    (pj.STATUS_OK, 55),
    (pj.STATUS_DUE_SOON, 22),
    (pj.STATUS_OVERDUE, 8),
    (pj.STATUS_ALARM, 3),
    (pj.STATUS_EMPTY, 2),
    (pj.STATUS_INCOMPLETE, 4),
    (EXPLANTED, 3),
)
#: At scale, the status mix of a real network: most pumps are fine, a few are due, an
#: alarm is rare (each one is an emergency somebody is already handling).
BULK_TARGETS = (
    (pj.STATUS_OK, 700),
    (pj.STATUS_DUE_SOON, 170),
    (pj.STATUS_OVERDUE, 50),
    (pj.STATUS_ALARM, 4),
    (pj.STATUS_EMPTY, 2),
    (pj.STATUS_INCOMPLETE, 20),
    (EXPLANTED, 54),
)
#: Planned histories per clinic and status that the bulk copies are made from.
TEMPLATES_PER_CLINIC = (
    (pj.STATUS_OK, 6), (pj.STATUS_DUE_SOON, 3), (pj.STATUS_OVERDUE, 2), (pj.STATUS_ALARM, 1), (pj.STATUS_EMPTY, 1),
    (pj.STATUS_INCOMPLETE, 1), (EXPLANTED, 1),
)
#: Share of the network's pumps in each clinic at scale (in the order of CLINICS + EXTRA_CLINICS).
CLINIC_WEIGHTS = (35, 25, 25, 15)
#: Pump models in use, with weights (SynchroMed II is by far the most common).
MODEL_WEIGHTS = (("8637-40", 40), ("8637-20", 18), ("16827", 12), ("13827", 8), ("91-4201", 12), ("91-4200", 10))
#: Patient origins, with weights.
ORIGIN_WEIGHTS = ((SPINAL, 45), (CEREBRAL, 35), (MIXED, 10), (UNKNOWN, 10))
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

#: Dose-and-response stories of the special pumps (docs/clinical-rules.md §15): a dose
#: titrated up over months while the spasticity scores fall; an overdose screen the day
#: after a large increase; a patient on an opioid (and a benzodiazepine stopped earlier).
RESPONSE_TITRATED, RESPONSE_OVERDOSE, RESPONSE_OPIOID = "titrated", "overdose", "opioid"
#: The titrated story, step by step from the first refill to the last (left leg, right leg,
#: Penn spasm frequency, pain 0-10): the highest grade falls from 3 to 1+.
TITRATED_SCORES = (("3", "3", 3, 7), ("3", "2", 3, 6), ("2", "2", 2, 5), ("2", "1+", 2, 4), ("1+", "1", 1, 3))
TITRATED_GOAL = "Stand for transfers without help; sleep through the night without spasms."
#: The overdose story: the scores at each refill, then the screen the day after the large
#: increase (the third refill's program).
OVERDOSE_SCORES = (("2", "2", 2, 4), ("2", "1+", 2, 4), ("1+", "1+", 1, 3), ("1", "1", 1, 2))
OVERDOSE_SIGNS = ("drowsiness", "somnolence")
OVERDOSE_NOTE = "Caregiver phoned: very sleepy since yesterday's dose increase; seen in clinic the same day."
OVERDOSE_ACK = ("Seen in clinic: drowsy but rousable, breathing normal; dose kept, family to call at once if worse; "
                "rechecked at the next refill.")
OPIOID_SCORES = (("2", "2", 2, 6), ("2", "2", 2, 5), ("1+", "2", 2, 5), ("1+", "1+", 1, 4), ("1+", "1+", 1, 4),
                 ("1+", "1", 1, 3))
OPIOID = ("oxycodone 10 mg twice a day", "opioid", "Chronic shoulder pain; prescribed by the GP.")
BENZODIAZEPINE = ("diazepam 5 mg at night", "benzodiazepine", "Short course for night-time spasms.")


@dataclass(frozen=True)
class ClinicSpec:
    code: str
    name: str
    timezone: str
    alert_emails: tuple[str, ...]
    mrn_prefix: str
    phone_format: str  # formatted with a number 0-99
    products: dict[int, str]  # concentration (mcg/mL) -> drug product code
    given_names: tuple[str, ...]
    family_names: tuple[str, ...]
    staff: tuple[tuple[str, str, str, str], ...]  # username, first, last, role
    refill_slots_per_day: int = 2
    refill_slots_by_weekday: tuple[int | None, ...] = (None,) * 7  # Monday first

    def usernames(self, role: str) -> list[str]:
        """The staff of ``role``, in the order of ``staff``."""
        return [username for username, _, _, staff_role in self.staff if staff_role == role]


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
            ("lakeshore.rn.hayes", "Dana", "Hayes", NURSE),
            ("lakeshore.rn.ortiz", "Luz", "Ortiz", NURSE),
            ("lakeshore.dr.chen", "Wei", "Chen", PRESCRIBER),
            ("lakeshore.dr.adeyemi", "Tolu", "Adeyemi", PRESCRIBER),
            ("lakeshore.pharm.novak", "Eva", "Novak", PHARMACIST),
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
            ("thames.rn.okoro", "Ngozi", "Okoro", NURSE),
            ("thames.rn.fletcher", "Sam", "Fletcher", NURSE),
            ("thames.dr.maitland", "Iain", "Maitland", PRESCRIBER),
            ("thames.dr.rahman", "Farah", "Rahman", PRESCRIBER),
            ("thames.pharm.doyle", "Ciara", "Doyle", PHARMACIST),
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
            ("harbour.rn.mcgrath", "Tess", "McGrath", NURSE),
            ("harbour.rn.ivanov", "Nadia", "Ivanov", NURSE),
            ("harbour.dr.wong", "Felix", "Wong", PRESCRIBER),
            ("harbour.dr.osei", "Ama", "Osei", PRESCRIBER),
            ("harbour.pharm.ross", "Ian", "Ross", PHARMACIST),
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
            ("rockies.rn.bauer", "Kim", "Bauer", NURSE),
            ("rockies.rn.salazar", "Rosa", "Salazar", NURSE),
            ("rockies.dr.hart", "Megan", "Hart", PRESCRIBER),
            ("rockies.dr.begay", "Nathan", "Begay", PRESCRIBER),
            ("rockies.pharm.kline", "Owen", "Kline", PHARMACIST),
        ),
    ),
)
