"""Clinical tables (docs/clinical-rules.md; README, Clinical safety). Nothing clinical is hard-deleted:
records are voided with a reason, and django-simple-history keeps who changed what, when, with old and
new values.

Writes go through ``pumps.services``; these models hold fields, constraints, indexes and
read-only helpers only.
"""

from __future__ import annotations

import functools
import operator
from datetime import time
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from clinic.models import Clinic

from . import projection as pj
from . import symptoms

ML = {"max_digits": 9, "decimal_places": 3}
DOSE = {"max_digits": 12, "decimal_places": 3}


class Drug(models.Model):
    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    default_stability_days = models.PositiveSmallIntegerField(
        help_text="In-pump stability when a refill names no product (baclofen: 180 days)."
    )

    def __str__(self) -> str:
        return self.name


class DrugProduct(models.Model):
    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=200)
    drug = models.ForeignKey(Drug, on_delete=models.PROTECT, related_name="products")
    concentration_mcg_per_ml = models.DecimalField(
        **DOSE, null=True, blank=True, help_text="Empty for a compounded product of any concentration."
    )
    stability_days = models.PositiveSmallIntegerField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    @property
    def effective_stability_days(self) -> int:
        return self.stability_days or self.drug.default_stability_days


class PumpModel(models.Model):
    VOLUME_CALCULATED = "calculated"
    VOLUME_MEASURED = "measured"
    MRI_INTERROGATE = "interrogate_after"
    MRI_EMPTY = "empty_before"
    MRI_CONDITIONAL = "conditional"

    code = models.CharField(max_length=40, unique=True)
    manufacturer = models.CharField(max_length=100)
    name = models.CharField(max_length=100)
    reservoir_ml = models.DecimalField(**ML)
    default_alarm_ml = models.DecimalField(**ML)
    volume_is = models.CharField(
        max_length=12, choices=[(VOLUME_CALCULATED, "calculated"), (VOLUME_MEASURED, "measured")]
    )
    battery_months = models.PositiveSmallIntegerField(null=True, blank=True)
    mri_behaviour = models.CharField(
        max_length=20,
        blank=True,
        choices=[
            (MRI_INTERROGATE, "stalls during MRI: interrogate afterwards"),
            (MRI_EMPTY, "must be emptied before MRI"),
            (MRI_CONDITIONAL, "MR conditional: follow the labelling"),
        ],
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.manufacturer} {self.name} {self.code} ({self.reservoir_ml.normalize():f} mL)"


class VoidableQuerySet(models.QuerySet):
    def live(self):
        return self.filter(voided_at__isnull=True)


class Voidable(models.Model):
    voided_at = models.DateTimeField(null=True, blank=True)
    voided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    void_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    objects = VoidableQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def is_voided(self) -> bool:
        return self.voided_at is not None


class Patient(models.Model):
    class Origin(models.TextChoices):
        SPINAL = "spinal", "spinal"
        CEREBRAL = "cerebral", "cerebral"
        MIXED = "mixed", "mixed"
        UNKNOWN = "unknown", "unknown"

    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        INACTIVE = "inactive", "inactive"
        DECEASED = "deceased", "deceased"

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="patients")
    mrn = models.CharField("MRN", max_length=64)
    family_name = models.CharField(max_length=100)
    given_name = models.CharField(max_length=100)
    birth_date = models.DateField()
    spasticity_origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.UNKNOWN)
    withdrawal_high_risk = models.BooleanField(default=False)
    high_risk_reason = models.CharField(max_length=300, blank=True)
    phone = models.CharField(max_length=40, blank=True)
    caregiver_phone = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["family_name", "given_name", "id"]
        constraints = [models.UniqueConstraint(fields=["clinic", "mrn"], name="unique_mrn_per_clinic")]

    def __str__(self) -> str:
        return f"{self.mrn} {self.initials}"

    @property
    def initials(self) -> str:
        return f"{self.given_name[:1]}{self.family_name[:1]}".upper()


class Pump(models.Model):
    """An implant. The ``projected_*`` fields and ``status`` are the stored projection,
    recomputed in the same transaction as every write that changes them, so that the
    sweep and the worklist read them from an index instead of recomputing every pump."""

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="pumps")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="pumps")
    model = models.ForeignKey(PumpModel, on_delete=models.PROTECT, related_name="pumps")
    serial_number = models.CharField(max_length=64)
    udi = models.CharField("UDI", max_length=200, blank=True)
    implanted_on = models.DateField()
    explanted_on = models.DateField(null=True, blank=True)
    explant_reason = models.CharField(max_length=300, blank=True)
    low_reservoir_alarm_ml = models.DecimalField(**ML)
    expected_end_of_service = models.DateField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    # stored projection (worst case unless named expected)
    status = models.CharField(max_length=12, default=pj.STATUS_INCOMPLETE, db_index=True)
    #: The rank of ``status`` in the worklist's order (0 = empty ... 6 = inactive), kept with
    #: it so that the worklist's order is an index scan, not a sort of every pump.
    urgency = models.PositiveSmallIntegerField(default=pj.STATUSES.index(pj.STATUS_INCOMPLETE), editable=False)
    low_reservoir_alarm_at = models.DateTimeField(null=True, blank=True)
    empty_at = models.DateTimeField(null=True, blank=True)
    expected_low_reservoir_alarm_at = models.DateTimeField(null=True, blank=True)
    expected_empty_at = models.DateTimeField(null=True, blank=True)
    drug_expires_at = models.DateTimeField(null=True, blank=True)
    refill_due_on = models.DateField(null=True, blank=True)
    anchor_at = models.DateTimeField(null=True, blank=True)
    next_change_at = models.DateTimeField(
        null=True, blank=True, help_text="The next instant at which the stored status changes."
    )
    projected_at = models.DateTimeField(null=True, blank=True)

    history = HistoricalRecords(excluded_fields=["projected_at", "next_change_at", "urgency"])

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["patient"], condition=Q(explanted_on__isnull=True), name="one_implanted_pump_per_patient"
            ),
            models.CheckConstraint(condition=Q(low_reservoir_alarm_ml__gte=0), name="pump_alarm_not_negative"),
            # the worklist (pages and API) filters and orders by ``urgency``: it is the status's rank
            models.CheckConstraint(
                condition=functools.reduce(
                    operator.or_, (Q(status=status, urgency=rank) for rank, status in enumerate(pj.STATUSES))
                ),
                name="pump_urgency_is_status_rank",
            ),
            models.CheckConstraint(
                condition=Q(explanted_on__isnull=True) | Q(explanted_on__gte=models.F("implanted_on")),
                name="pump_explant_after_implant",
            ),
        ]
        indexes = [
            # "which pumps change state before T": one range scan
            models.Index(fields=["next_change_at"], name="pump_next_change_idx"),
            models.Index(fields=["clinic", "status", "refill_due_on"], name="pump_worklist_idx"),
            models.Index(fields=["clinic", "serial_number"], name="pump_serial_idx"),
            # the worklist: most urgent first, then by due date and alarm instant
            models.Index(
                fields=["urgency", "refill_due_on", "low_reservoir_alarm_at", "id"], name="pump_urgency_idx",
                condition=Q(explanted_on__isnull=True),
            ),
            # one clinic's worklist (a clinic's staff, the clinic filter, an API client)
            models.Index(
                fields=["clinic", "urgency", "refill_due_on", "low_reservoir_alarm_at", "id"],
                name="pump_clinic_urgency_idx", condition=Q(explanted_on__isnull=True),
            ),
            # the explanted pumps of a clinic (counted under "Inactive"): a small range
            models.Index(fields=["clinic"], name="pump_explanted_idx", condition=Q(explanted_on__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.model.code} #{self.serial_number}"

    @property
    def is_implanted(self) -> bool:
        return self.explanted_on is None

    @property
    def reservoir_ml(self) -> Decimal:
        return self.model.reservoir_ml

    def live_status(self, at) -> str:
        """Status as of ``at`` from the stored instants (no recompute)."""
        clinic = self.clinic
        return pj.status_at(
            at,
            tz=clinic.tz,
            active=self.status != pj.STATUS_INACTIVE,
            complete=self.status != pj.STATUS_INCOMPLETE,
            empty_at=self.empty_at,
            lra_at=self.low_reservoir_alarm_at,
            due_on=self.refill_due_on,
            due_soon_days=clinic.due_soon_days,
        )

    def status_reason(self, at) -> str:
        """The status as of ``at`` in words, from the stored instants: what binds and since
        or until when (``projection.status_reason``). Needs ``clinic`` and ``patient``."""
        clinic = self.clinic
        if self.explanted_on is not None:
            inactive = f"explanted on {self.explanted_on.isoformat()}"
        else:
            inactive = f"patient {self.patient.status}"
        return pj.status_reason(
            self.live_status(at), at, tz=clinic.tz, empty_at=self.empty_at, lra_at=self.low_reservoir_alarm_at,
            due_on=self.refill_due_on, drug_expires_at=self.drug_expires_at, inactive_reason=inactive,
            binding=pj.due_date_binding(
                worst_lra_at=self.low_reservoir_alarm_at, drug_expires_at=self.drug_expires_at, tz=clinic.tz,
                lead_days=clinic.lead_days, high_risk_extra_days=clinic.high_risk_extra_days,
                high_risk=self.patient.withdrawal_high_risk,
            ),
        )


class Program(Voidable):
    class Mode(models.TextChoices):
        CONTINUOUS = pj.MODE_CONTINUOUS, "continuous"
        FLEX = pj.MODE_FLEX, "flex"

    pump = models.ForeignKey(Pump, on_delete=models.PROTECT, related_name="programs")
    effective_at = models.DateTimeField()
    concentration_mcg_per_ml = models.DecimalField(**DOSE)
    mode = models.CharField(max_length=12, choices=Mode.choices, default=Mode.CONTINUOUS)
    daily_dose_mcg = models.DecimalField(
        **DOSE, help_text="Basal mcg per 24 h (for flex, the total of the steps)."
    )
    steps = models.JSONField(default=list, blank=True, help_text='Flex: [{"start": "HH:MM", "dose_mcg_per_hour": "…"}]')
    ptm_bolus_mcg = models.DecimalField(**DOSE, null=True, blank=True)
    ptm_max_per_day = models.PositiveSmallIntegerField(null=True, blank=True)
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    entered_by_external = models.CharField(max_length=100, blank=True)
    verified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    verified_by_external = models.CharField(max_length=100, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    entered_at = models.DateTimeField(default=timezone.now, help_text="When the program was entered here.")
    override_reason = models.CharField(max_length=500, blank=True)
    #: A dose increase while a CNS depressant is active needs the prescriber's explicit
    #: confirmation (docs/clinical-rules.md §15); what they confirmed is kept with the program.
    comedication_confirmed = models.BooleanField(default=False)
    comedication_summary = models.CharField(
        max_length=500, blank=True, help_text="The active CNS depressants shown when the increase was confirmed."
    )
    refill = models.OneToOneField(
        "Refill", null=True, blank=True, on_delete=models.PROTECT, related_name="program"
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["pump", "effective_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(concentration_mcg_per_ml__gt=0), name="program_concentration_positive"),
            models.CheckConstraint(condition=Q(daily_dose_mcg__gte=0), name="program_dose_not_negative"),
        ]
        indexes = [models.Index(fields=["pump", "effective_at"], name="program_pump_time_idx")]

    def __str__(self) -> str:
        return (
            f"{self.mode} {self.daily_dose_mcg.normalize():f} mcg/day"
            f" at {self.concentration_mcg_per_ml.normalize():f} mcg/mL"
        )

    def to_projection(self) -> pj.ProgramData:
        steps = tuple(
            pj.FlexStep(
                time(int(s["start"][:2]), int(s["start"][3:5])), Decimal(str(s["dose_mcg_per_hour"]))
            )
            for s in (self.steps or [])
        )
        return pj.ProgramData(
            effective_at=self.effective_at,
            concentration_mcg_per_ml=self.concentration_mcg_per_ml,
            mode=self.mode,
            daily_dose_mcg=self.daily_dose_mcg,
            steps=steps,
            bolus_mcg=self.ptm_bolus_mcg,
            bolus_max_per_day=self.ptm_max_per_day,
        )

    @property
    def daily_volume_ml(self) -> Decimal:
        return pj.to_decimal_ml(self.to_projection().daily_volume_ml())

    @property
    def worst_case_daily_volume_ml(self) -> Decimal:
        return pj.to_decimal_ml(self.to_projection().worst_case_daily_volume_ml())


class Refill(Voidable):
    pump = models.ForeignKey(Pump, on_delete=models.PROTECT, related_name="refills")
    performed_at = models.DateTimeField()
    performed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    performed_by_external = models.CharField(max_length=100, blank=True)
    extracted_volume_ml = models.DecimalField(**ML, null=True, blank=True)
    added_volume_ml = models.DecimalField(**ML)
    residual_left_ml = models.DecimalField(**ML, default=Decimal("0"))
    bridge_bolus_ml = models.DecimalField(**ML, null=True, blank=True)
    drug_product = models.ForeignKey(DrugProduct, null=True, blank=True, on_delete=models.PROTECT)
    concentration_mcg_per_ml = models.DecimalField(**DOSE)
    stability_days = models.PositiveSmallIntegerField()
    lot_number = models.CharField(max_length=64, blank=True)
    lot_expiry = models.DateField(null=True, blank=True)
    # computed at write time; recomputed when earlier history changes (docs/clinical-rules.md §8)
    expected_residual_ml = models.DecimalField(**ML, null=True, blank=True)
    discrepancy_ml = models.DecimalField(**ML, null=True, blank=True)
    discrepancy_flagged = models.BooleanField(default=False)
    refilled_after_empty = models.BooleanField(default=False)
    flags = models.JSONField(default=list, blank=True)
    notes = models.TextField(blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["pump", "performed_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(added_volume_ml__gt=0), name="refill_added_positive"),
            models.CheckConstraint(
                condition=Q(extracted_volume_ml__isnull=True) | Q(extracted_volume_ml__gte=0),
                name="refill_extracted_not_negative",
            ),
            models.CheckConstraint(condition=Q(residual_left_ml__gte=0), name="refill_residual_not_negative"),
            models.CheckConstraint(
                condition=Q(bridge_bolus_ml__isnull=True) | Q(bridge_bolus_ml__gte=0),
                name="refill_bridge_not_negative",
            ),
            models.CheckConstraint(condition=Q(concentration_mcg_per_ml__gt=0), name="refill_concentration_positive"),
        ]
        indexes = [models.Index(fields=["pump", "performed_at"], name="refill_pump_time_idx")]

    def __str__(self) -> str:
        return f"refill of {self.pump} at {self.performed_at:%Y-%m-%d %H:%M}"

    @property
    def is_first_fill(self) -> bool:
        return self.extracted_volume_ml is None

    @property
    def volume_after_ml(self) -> Decimal:
        return (self.residual_left_ml or 0) + self.added_volume_ml - (self.bridge_bolus_ml or 0)

    def to_projection(self) -> pj.RefillData:
        return pj.RefillData(
            performed_at=self.performed_at,
            added_volume_ml=self.added_volume_ml,
            residual_left_ml=self.residual_left_ml or Decimal(0),
            bridge_bolus_ml=self.bridge_bolus_ml or Decimal(0),
            stability_days=self.stability_days,
        )


class Reading(Voidable):
    pump = models.ForeignKey(Pump, on_delete=models.PROTECT, related_name="readings")
    read_at = models.DateTimeField()
    reservoir_volume_ml = models.DecimalField(**ML)
    eri = models.BooleanField("elective replacement indicator", default=False)
    performed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    performed_by_external = models.CharField(max_length=100, blank=True)
    notes = models.TextField(blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["pump", "read_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(reservoir_volume_ml__gte=0), name="reading_volume_not_negative")
        ]
        indexes = [models.Index(fields=["pump", "read_at"], name="reading_pump_time_idx")]

    def __str__(self) -> str:
        return f"reading of {self.pump} at {self.read_at:%Y-%m-%d %H:%M}"

    def to_projection(self) -> pj.ReadingData:
        return pj.ReadingData(read_at=self.read_at, reservoir_volume_ml=self.reservoir_volume_ml)


class Event(Voidable):
    class Kind(models.TextChoices):
        MRI = "mri", "MRI scan"
        EMPTIED_FOR_MRI = "emptied_for_mri", "emptied for MRI"
        ALARM_REPORTED = "alarm_reported", "alarm reported by patient"
        WITHDRAWAL = "withdrawal_episode", "withdrawal episode"

    pump = models.ForeignKey(Pump, on_delete=models.PROTECT, related_name="events")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    occurred_at = models.DateTimeField()
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    notes = models.TextField(blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["pump", "occurred_at", "id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.occurred_at:%Y-%m-%d %H:%M}"


class Appointment(Voidable):
    class Kind(models.TextChoices):
        REFILL = "refill", "refill"
        REPLACEMENT = "replacement_surgery", "replacement surgery"
        REVIEW = "review", "review"

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "scheduled"
        DONE = "done", "done"
        CANCELLED = "cancelled", "cancelled"
        MISSED = "missed", "missed"

    pump = models.ForeignKey(Pump, on_delete=models.PROTECT, related_name="appointments")
    scheduled_for = models.DateTimeField()
    kind = models.CharField(max_length=24, choices=Kind.choices, default=Kind.REFILL)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.SCHEDULED)
    notes = models.TextField(blank=True)
    #: The staff member who does the visit (a member of the pump's clinic whose role
    #: records: ``services.schedule_appointment``); their calendar feed lists it.
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="assigned_appointments", db_index=False,  # the (assigned_to, scheduled_for) index below serves it
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["scheduled_for", "id"]
        indexes = [
            models.Index(fields=["pump", "scheduled_for"], name="appointment_pump_time_idx"),
            models.Index(fields=["assigned_to", "scheduled_for"], name="appointment_assignee_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.scheduled_for:%Y-%m-%d %H:%M} ({self.status})"


# ------------------------------------------------------------------------ dose and response

ASHWORTH_CHOICES = list(symptoms.ASHWORTH_GRADES)
PENN_CHOICES = list(symptoms.PENN_GRADES)


def _ashworth(limb: str) -> models.CharField:
    return models.CharField(f"Modified Ashworth, {limb}", max_length=2, choices=ASHWORTH_CHOICES, blank=True,
                            help_text="Blank: not assessed.")


def _sign(words: str) -> models.BooleanField:
    return models.BooleanField(words, default=False)


class Assessment(Voidable):
    """A visit assessment (docs/clinical-rules.md §15): spasticity scores and a yes/no
    screen for each withdrawal and each overdose sign. Recorded with a refill (``refill``)
    or on its own. Any sign answered yes opens a critical alert for this assessment
    (episode ``assessment:<id>``): exactly once per assessment."""

    pump = models.ForeignKey(Pump, on_delete=models.PROTECT, related_name="assessments")
    assessed_at = models.DateTimeField()
    assessed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    assessed_by_external = models.CharField(max_length=100, blank=True)
    refill = models.OneToOneField(
        "Refill", null=True, blank=True, on_delete=models.PROTECT, related_name="assessment"
    )
    ashworth_upper_left = _ashworth("left arm")
    ashworth_upper_right = _ashworth("right arm")
    ashworth_lower_left = _ashworth("left leg")
    ashworth_lower_right = _ashworth("right leg")
    penn_spasm_frequency = models.PositiveSmallIntegerField(choices=PENN_CHOICES, null=True, blank=True)
    pain_score = models.PositiveSmallIntegerField("pain (0-10)", null=True, blank=True)
    goal_note = models.TextField(blank=True)
    # withdrawal signs (pumps/symptoms.py WITHDRAWAL_SIGNS)
    withdrawal_baseline_spasticity = _sign("return of baseline spasticity")
    withdrawal_pruritus = _sign("pruritus (itching)")
    withdrawal_hypotension = _sign("hypotension")
    withdrawal_paresthesias = _sign("paresthesias")
    withdrawal_high_fever = _sign("high fever")
    withdrawal_altered_mental_status = _sign("altered mental status")
    withdrawal_rebound_spasticity = _sign("exaggerated rebound spasticity")
    withdrawal_muscle_rigidity = _sign("muscle rigidity")
    # overdose signs (pumps/symptoms.py OVERDOSE_SIGNS)
    overdose_drowsiness = _sign("drowsiness")
    overdose_lightheadedness = _sign("lightheadedness")
    overdose_dizziness = _sign("dizziness")
    overdose_somnolence = _sign("somnolence")
    overdose_respiratory_depression = _sign("respiratory depression")
    overdose_seizures = _sign("seizures")
    overdose_rostral_hypotonia = _sign("rostral progression of hypotonia")
    overdose_loss_of_consciousness = _sign("loss of consciousness")
    notes = models.TextField(blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["pump", "assessed_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(penn_spasm_frequency__lte=4), name="assessment_penn_0_4"),
            models.CheckConstraint(condition=Q(pain_score__lte=10), name="assessment_pain_0_10"),
        ]
        indexes = [models.Index(fields=["pump", "assessed_at"], name="assessment_pump_time_idx")]

    def __str__(self) -> str:
        return f"assessment at {self.assessed_at:%Y-%m-%d %H:%M}"

    def withdrawal_signs(self) -> list[str]:
        """The withdrawal signs answered yes, in words, in the label's order."""
        return [words for code, words in symptoms.WITHDRAWAL_SIGNS
                if getattr(self, symptoms.WITHDRAWAL_FIELD_PREFIX + code)]

    def overdose_signs(self) -> list[str]:
        """The overdose signs answered yes, in words, in the label's order."""
        return [words for code, words in symptoms.OVERDOSE_SIGNS
                if getattr(self, symptoms.OVERDOSE_FIELD_PREFIX + code)]


class CoMedication(Voidable):
    """A CNS depressant the patient takes besides the pump (docs/clinical-rules.md §15):
    additive sedation and respiratory depression with intrathecal baclofen. Active from
    ``started_on`` until ``stopped_on`` (inclusive; open when blank)."""

    class Category(models.TextChoices):
        OPIOID = "opioid", "opioid"
        BENZODIAZEPINE = "benzodiazepine", "benzodiazepine"
        ORAL_BACLOFEN = "oral_baclofen", "oral baclofen"
        OTHER_SEDATIVE = "other_sedative", "other sedative"

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="comedications")
    name = models.CharField(max_length=200, help_text="Drug and dose as prescribed, e.g. oxycodone 10 mg twice a day.")
    category = models.CharField(max_length=16, choices=Category.choices)
    started_on = models.DateField()
    stopped_on = models.DateField(null=True, blank=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    recorded_by_external = models.CharField(max_length=100, blank=True)
    notes = models.TextField(blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["patient", "started_on", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(stopped_on__isnull=True) | Q(stopped_on__gte=models.F("started_on")),
                name="comedication_stop_after_start",
            ),
        ]
        indexes = [models.Index(fields=["patient", "started_on"], name="comedication_patient_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_category_display()})"

    def is_active_on(self, day) -> bool:
        return self.voided_at is None and self.started_on <= day and (self.stopped_on is None or day <= self.stopped_on)


class WithdrawalPlan(Voidable):
    """What was done against withdrawal when intrathecal delivery stopped (an explant, or
    a program that delivers nothing): docs/clinical-rules.md §15. With ``none`` a critical
    ``withdrawal_risk`` alert (episode ``stop:<id>``) stays open for the clinic's
    withdrawal window after ``stopped_at`` until it is acknowledged with a reason."""

    class Plan(models.TextChoices):
        TAPER_COMPLETED = "taper_completed", "taper completed"
        ORAL_BRIDGE = "oral_bridge", "oral baclofen bridge"
        NONE = "none", "none"

    class Stop(models.TextChoices):
        EXPLANT = "explant", "explant"
        PROGRAM = "program", "program that stops delivery"

    pump = models.ForeignKey(Pump, on_delete=models.PROTECT, related_name="withdrawal_plans")
    stop = models.CharField(max_length=8, choices=Stop.choices)
    program = models.OneToOneField(
        Program, null=True, blank=True, on_delete=models.PROTECT, related_name="withdrawal_plan",
        help_text="The program that stops delivery (stop = program).",
    )
    stopped_at = models.DateTimeField(help_text="When delivery stops (explant: the start of the explant day).")
    plan = models.CharField(max_length=16, choices=Plan.choices)
    oral_bridge_dose = models.CharField(
        max_length=200, blank=True, help_text="Oral baclofen bridge, e.g. 10 mg four times a day (plan = oral bridge)."
    )
    reason = models.CharField(max_length=500, blank=True, help_text="Why there is no plan (plan = none).")
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    recorded_by_external = models.CharField(max_length=100, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["pump", "stopped_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(plan="oral_bridge") | ~Q(oral_bridge_dose=""), name="withdrawal_plan_bridge_has_dose"
            ),
            models.CheckConstraint(condition=~Q(plan="none") | ~Q(reason=""), name="withdrawal_plan_none_has_reason"),
            models.CheckConstraint(
                condition=Q(stop="explant", program__isnull=True) | Q(stop="program", program__isnull=False),
                name="withdrawal_plan_program_matches_stop",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_plan_display()} ({self.get_stop_display()} at {self.stopped_at:%Y-%m-%d %H:%M})"


# ------------------------------------------------------------------------ alerting


class AlertKind(models.TextChoices):
    REFILL_DUE_SOON = "refill_due_soon", "refill due soon"
    REFILL_OVERDUE = "refill_overdue", "refill overdue"
    LOW_RESERVOIR = "low_reservoir", "low reservoir"
    WITHDRAWAL_RISK = "withdrawal_risk", "withdrawal risk"
    RESIDUAL_DISCREPANCY = "residual_discrepancy", "residual discrepancy"
    BATTERY_REPLACEMENT = "battery_replacement", "battery replacement"
    POST_MRI_CHECK = "post_mri_check", "post-MRI check"
    UNVERIFIED_PROGRAM = "unverified_program", "unverified program"
    ALERTING_STALLED = "alerting_stalled", "alerting stalled"
    DRUG_EXPIRED = "drug_expired", "drug expired"
    REFILL_UNBOOKED = "refill_unbooked", "refill not booked"
    WITHDRAWAL_SYMPTOMS = "withdrawal_symptoms", "withdrawal symptoms"
    OVERDOSE_SYMPTOMS = "overdose_symptoms", "overdose symptoms"


class Severity(models.TextChoices):
    INFO = "info", "info"
    WARNING = "warning", "warning"
    CRITICAL = "critical", "critical"


class Alert(models.Model):
    """One row per (pump, kind, episode): the episode is what the alert is about (the
    anchoring refill for reservoir alerts, the MRI event, the program, the battery
    threshold). The unique constraint is what makes "never a second alert" true even
    when two sweeps run at once."""

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="alerts")
    pump = models.ForeignKey(Pump, null=True, blank=True, on_delete=models.PROTECT, related_name="alerts")
    kind = models.CharField(max_length=24, choices=AlertKind.choices)
    episode = models.CharField(max_length=64)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    due_at = models.DateTimeField(null=True, blank=True, help_text="The instant the alert is about.")
    message = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    acknowledged_by_external = models.CharField(max_length=100, blank=True)
    acknowledgement_reason = models.CharField(
        max_length=500, blank=True, help_text="Why it was acknowledged (required for critical alerts)."
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=200, blank=True)
    repeat_count = models.PositiveIntegerField(default=0)
    next_repeat_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords(excluded_fields=["repeat_count", "next_repeat_at"])

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["clinic", "pump", "kind", "episode"], name="one_alert_per_episode"),
            # NULLs are distinct in a unique index: clinic-level alerts need their own.
            models.UniqueConstraint(
                fields=["clinic", "kind", "episode"], condition=Q(pump__isnull=True),
                name="one_clinic_alert_per_episode",
            ),
        ]
        indexes = [
            models.Index(fields=["next_repeat_at"], name="alert_repeat_idx"),
            models.Index(fields=["clinic", "resolved_at", "acknowledged_at"], name="alert_open_idx"),
            # the sweep's quiet tick: "is alerting_stalled open?" without reading every alert
            models.Index(fields=["kind"], condition=Q(resolved_at__isnull=True), name="alert_open_kind_idx"),
            # the worklist's band: the pumps with an open critical alert
            models.Index(fields=["clinic", "pump"], name="alert_open_critical_idx",
                         condition=Q(resolved_at__isnull=True, severity="critical", pump__isnull=False)),
            # the quiet tick's probe for the end of an acknowledged stop's window
            # (pumps_idle_tick): the open unacknowledged withdrawal-risk alerts of empty
            # pumps, hundreds at scale, are not in it
            models.Index(fields=["due_at"], name="alert_ack_withdrawal_idx",
                         condition=Q(kind="withdrawal_risk", resolved_at__isnull=True, acknowledged_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.severity}) #{self.pk}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None and self.acknowledged_at is None


class Notification(models.Model):
    """The outbox: one row per (alert, recipient, repeat number), committed before anything
    is sent, claimed by compare-and-swap by the sender."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"  # its alert was resolved before it was sent: never sent
    STATUSES = [(PENDING, "pending"), (SENDING, "sending"), (SENT, "sent"), (FAILED, "failed"),
                (CANCELLED, "cancelled")]

    alert = models.ForeignKey(Alert, null=True, blank=True, on_delete=models.CASCADE, related_name="notifications")
    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="notifications")
    EMAIL = "email"
    WEBHOOK = "webhook"

    kind = models.CharField(max_length=24, help_text="The alert kind, or 'digest'.")
    channel = models.CharField(max_length=10, choices=[(EMAIL, "e-mail"), (WEBHOOK, "webhook")], default=EMAIL)
    recipient = models.CharField(max_length=254, help_text="An e-mail address, or webhook:<API client id>.")
    api_client = models.ForeignKey(
        "clinic.ApiClient", null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    repeat_number = models.PositiveIntegerField(default=0)
    digest_on = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["alert", "recipient", "repeat_number"], condition=Q(alert__isnull=False),
                name="one_notification_per_alert_recipient_repeat",
            ),
            models.UniqueConstraint(
                fields=["clinic", "recipient", "digest_on"], condition=Q(digest_on__isnull=False),
                name="one_digest_per_clinic_recipient_day",
            ),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="notification_due_idx")]

    def __str__(self) -> str:
        return f"{self.kind} to {self.recipient} ({self.status})"


class DeliveryAttempt(models.Model):
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField()
    ok = models.BooleanField()
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{'delivered' if self.ok else 'failed'} at {self.at:%Y-%m-%d %H:%M}"


class SweepRun(models.Model):
    """The heartbeat: one row per completed sweep."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(db_index=True)
    pumps_checked = models.PositiveIntegerField(default=0)
    alerts_created = models.PositiveIntegerField(default=0)
    notifications_created = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-finished_at"]

    def __str__(self) -> str:
        return f"sweep finished {self.finished_at:%Y-%m-%d %H:%M:%S}"


class StatusTally(models.Model):
    """How many implanted pumps each clinic has in each stored status, as a sum of signed
    rows: database triggers on the pump table (migration 0009) add a row of +n or -n for
    every insert, update or delete that changes a clinic's count, in the writing
    transaction, whatever wrote it (the services, the sweep, a bulk load, the admin). The
    sweep folds the rows into one per clinic and status (``pumps.tallies.fold``). The
    worklist's counts are then one indexed sum of a few dozen rows at any number of pumps.
    Never written from Python except by the fold."""

    clinic = models.ForeignKey(Clinic, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    status = models.CharField(max_length=12)
    delta = models.IntegerField()

    class Meta:
        indexes = [models.Index(fields=["clinic", "status"], name="tally_clinic_status_idx")]

    def __str__(self) -> str:
        return f"clinic {self.clinic_id} {self.status} {self.delta:+d}"


# ------------------------------------------------------------------- access audit


class PatientAccess(models.Model):
    """Who viewed which patient record, when and how: one row per read of a patient's
    page or pump page, of the API's patient detail or the FHIR Patient, and one row per
    patient returned by a list or search read (``list_read``). Written by
    ``pumps.access``; never changed nor deleted."""

    PAGE = "page"
    API = "api"
    FHIR = "fhir"
    CHANNELS = [(PAGE, "staff page"), (API, "REST API"), (FHIR, "FHIR")]

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="accesses")
    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="patient_accesses")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    api_client = models.ForeignKey(
        "clinic.ApiClient", null=True, blank=True, on_delete=models.PROTECT, related_name="patient_accesses"
    )
    channel = models.CharField(max_length=8, choices=CHANNELS)
    path = models.CharField(max_length=300)
    list_read = models.BooleanField(default=False, help_text="Returned by a list or search, not opened alone.")

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "patient record access"
        verbose_name_plural = "patient record accesses"

    def __str__(self) -> str:
        who = self.user or self.api_client or "unknown"
        return f"{who} viewed patient #{self.patient_id} ({self.channel}) at {self.at:%Y-%m-%d %H:%M:%S}"


# ------------------------------------------------------------ clinic re-projection


class ClinicReprojection(models.Model):
    """A clinic's policy, open days or closures changed: every implanted pump's stored
    projection and alerts are brought up to date by a background job
    (``pumps.reprojection``), in chunks, each chunk committed with this row's progress.
    The newest row of a clinic is the one that counts: a change saved while a job runs
    supersedes it, and the new job re-projects every pump under the newest policy."""

    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="reprojections")
    requested_at = models.DateTimeField()
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    total = models.PositiveIntegerField(default=0, help_text="Implanted pumps when requested (then as counted).")
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0, help_text="Pumps left due for the sweep to retry.")
    last_pump_id = models.BigIntegerField(default=0, help_text="Pumps are taken in id order after this one.")
    updated_at = models.DateTimeField(help_text="The last chunk committed (or the request).")
    finished_at = models.DateTimeField(null=True, blank=True)
    superseded = models.BooleanField(default=False, help_text="A newer change of the clinic took over.")
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["clinic", "-id"], name="reprojection_clinic_idx"),
            models.Index(fields=["updated_at"], condition=Q(finished_at__isnull=True),
                         name="reprojection_running_idx"),
        ]

    def __str__(self) -> str:
        state = "finished" if self.finished_at else "running"
        return f"re-projection #{self.pk} of clinic {self.clinic_id}: {self.done}/{self.total} ({state})"
