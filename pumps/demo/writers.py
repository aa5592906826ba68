"""The demo's writers: the planned clinics, patients and pump histories recorded through
``pumps.services`` (validation, audit history, stored projection, alerts), as a clinic
would record them, each write with ``now`` at its own instant."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import CommandError
from django.db import transaction

from clinic.models import AlertRecipient, Clinic, ClinicClosure, Membership
from pumps import projection as pj
from pumps import services
from pumps.alerting.acknowledge import acknowledge
from pumps.history import policy_of
from pumps.models import (
    Alert,
    AlertKind,
    Appointment,
    CoMedication,
    DrugProduct,
    Patient,
    Program,
    Pump,
    PumpModel,
    WithdrawalPlan,
)
from pumps.planning import capacity_of
from pumps.services import Actor, AssessmentInput, ProgramInput

from . import plan as pl
from .specs import CLINICS, ClinicSpec

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-pump-clinic"
ACTOR = Actor.system("demo")
BRIDGE_DOSE = "20 mg four times a day"


def assessment_input(plan: pl.AssessmentPlan, assessed_by: str) -> AssessmentInput:
    left_arm, right_arm, left_leg, right_leg = plan.ashworth
    signs = {f"overdose_{code}": True for code in plan.overdose}
    signs.update({f"withdrawal_{code}": True for code in plan.withdrawal})
    return AssessmentInput(
        ashworth_upper_left=left_arm, ashworth_upper_right=right_arm, ashworth_lower_left=left_leg,
        ashworth_lower_right=right_leg, penn_spasm_frequency=plan.penn, pain_score=plan.pain, goal_note=plan.goal,
        notes=plan.notes, signs=signs, assessed_by=assessed_by,
    )


def model_spec(model: PumpModel) -> pl.ModelSpec:
    return pl.ModelSpec(code=model.code, manufacturer=model.manufacturer, reservoir_ml=model.reservoir_ml,
                        default_alarm_ml=model.default_alarm_ml,
                        volume_measured=model.volume_is == PumpModel.VOLUME_MEASURED)


def program_input(spec: pl.ProgramSpec, entered_by: str, *, comedication_confirmed: bool = False) -> ProgramInput:
    """``comedication_confirmed``: the prescriber confirms a dose increase while the patient
    takes a CNS depressant (the services keep it only when there is one)."""
    flex = spec.mode == pj.MODE_FLEX
    return ProgramInput(
        comedication_confirmed=comedication_confirmed,
        concentration_mcg_per_ml=spec.conc,
        mode=spec.mode,
        daily_dose_mcg=None if flex else spec.daily,
        steps=[{"start": s, "dose_mcg_per_hour": str(d)} for s, d in spec.steps] if flex else None,
        ptm_bolus_mcg=spec.bolus,
        ptm_max_per_day=spec.bolus_max,
        override_reason=spec.override,
        entered_by=entered_by,
    )


def _quantize(value: Decimal, ceiling: Decimal) -> Decimal:
    return min(max(value, Decimal(0)), ceiling).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


@dataclass
class Context:
    """One clinic while seeding: its plan and its rows."""

    plan: pl.ClinicPlan
    clinic: Clinic
    products: dict[int, DrugProduct]  # concentration -> drug product


class DemoWriter:
    """Writes a demo of ``pumps`` pumps planned by ``pumps.demo.plan``; ``run()`` returns the
    demo user, the clinics and the counts."""

    clinic_specs: tuple[ClinicSpec, ...] = CLINICS

    def __init__(self, *, pumps: int, seed: int, now: datetime):
        self.pumps = pumps
        self.seed = seed
        self.now = now
        self.models = {m.code: m for m in PumpModel.objects.all()}
        self.products = {p.code: p for p in DrugProduct.objects.all()}
        self.planner = pl.Planner(seed=seed, now=now, models={c: model_spec(m) for c, m in self.models.items()},
                                  clinics=[])
        self.day, self.latest = self.planner.day, self.planner.latest
        self.counts: Counter = Counter()
        self.last_pump: Pump | None = None

    @cached_property
    def password_hash(self) -> str:
        """The demo password, hashed once for every demo user: a password hash is slow by
        design (Argon2, about 0.2 s each here), and the demo users all share the one
        published password, so one salt for all of them hides nothing."""
        return make_password(DEMO_PASSWORD)

    # -------------------------------------------------------------------- clinics

    def create_clinics(self) -> list[Context]:
        contexts = [self.create_clinic(pl.ClinicPlan.from_spec(spec, self.day)) for spec in self.clinic_specs]
        self.planner.clinics = [c.plan for c in contexts]
        return contexts

    def create_clinic(self, plan: pl.ClinicPlan) -> Context:
        spec = plan.spec
        clinic = Clinic.objects.create(
            code=spec.code, name=spec.name, timezone=spec.timezone, refill_slots_per_day=plan.capacity.slots_per_day,
            refill_slots_by_weekday=list(plan.capacity.slots_by_weekday),
        )
        for email in spec.alert_emails:
            AlertRecipient.objects.create(clinic=clinic, email=email)
        AlertRecipient.objects.create(clinic=clinic, email=f"clinical-lead@{spec.code}.example.org", escalation=True)
        for closure in sorted(plan.policy.closures):
            ClinicClosure.objects.create(clinic=clinic, date=closure, reason="Staff training day")
        User = get_user_model()
        for username, first, last, role in spec.staff:
            # Demo staff share the demo password, to try the app in each role.
            user = User.objects.create(
                username=username, first_name=first, last_name=last, email=f"{username}@example.org",
                password=self.password_hash,
            )
            Membership.objects.create(user=user, clinic=clinic, role=role, receives_alerts=role == "nurse")
        self.check_clinic(plan, clinic)
        return Context(plan=plan, clinic=clinic,
                       products={conc: self.products[code] for conc, code in spec.products.items()})

    @staticmethod
    def check_clinic(plan: pl.ClinicPlan, clinic: Clinic) -> None:
        """The planner's view of a new clinic must be the clinic's own policy and capacity."""
        if policy_of(clinic) != plan.policy or capacity_of(clinic) != plan.capacity:
            raise CommandError(f"clinic {clinic.code}: the demo planner's policy or capacity differs from the clinic's")

    def create_demo_user(self, contexts: list[Context]):
        User = get_user_model()
        user = User.objects.filter(username=DEMO_USERNAME).first() or User(username=DEMO_USERNAME)
        user.first_name, user.last_name, user.email = "Demo", "User", "demo@example.org"
        user.is_staff = user.is_superuser = True
        user.password = self.password_hash
        user.save()
        for ctx in contexts:
            Membership.objects.update_or_create(
                user=user, clinic=ctx.clinic, defaults={"role": "admin", "receives_alerts": True}
            )
        return user

    # ---------------------------------------------------------------------- run

    def run(self) -> dict:
        contexts = self.create_clinics()
        user = self.create_demo_user(contexts)
        for index, slot in enumerate(self.planner.slots(self.pumps)):
            self.write_scenario(contexts[slot.clinic], self.planner.rng("pump", index), slot)
        return {"user": user, "clinics": [c.clinic for c in contexts], "counts": self.counts}

    def write_scenario(self, ctx: Context, rng: random.Random, slot: pl.Slot) -> None:
        """Plan the slot's patient and pump, then write them, drawing the details of the
        records from the same generator."""
        planned = self.planner.plan_slot(slot, rng)
        patient = self.write_patient(ctx, planned.patient)
        pump = planned.pump
        if isinstance(pump, pl.IncompletePlan):
            self.write_incomplete(ctx, patient, pump)
        elif isinstance(pump, pl.ReplacementPlan):
            self.write_replacement(ctx, rng, patient, pump)
        elif pump.explanted_on is not None:
            self.write_explanted(ctx, rng, patient, pump)
        else:
            self.write_implanted(ctx, rng, patient, pump)

    def write_patient(self, ctx: Context, plan: pl.PatientPlan) -> Patient:
        return services.create_patient(
            clinic=ctx.clinic, actor=ACTOR, now=self.now, mrn=plan.mrn, family_name=plan.family_name,
            given_name=plan.given_name, birth_date=plan.birth_date, spasticity_origin=plan.origin,
            withdrawal_high_risk=plan.high_risk, high_risk_reason=plan.high_risk_reason, phone=plan.phone,
            caregiver_phone=plan.caregiver_phone,
        )

    # ---------------------------------------------------------------- scenarios

    def write_implanted(self, ctx: Context, rng: random.Random, patient: Patient, plan: pl.PumpPlan) -> None:
        pump = self.write_pump(ctx, rng, patient, plan)
        self.write_appointment(ctx, rng, pump, plan)
        self.finish(pump, plan.reached)

    def write_explanted(self, ctx: Context, rng: random.Random, patient: Patient, plan: pl.PumpPlan) -> None:
        pump = self.write_pump(ctx, rng, patient, plan)
        services.explant_pump(
            pump=pump, explanted_on=plan.explanted_on, actor=ACTOR, now=ctx.plan.local(plan.explanted_on, 17, 0),
            reason="Pocket infection: pump and catheter explanted; oral baclofen bridge started.",
            withdrawal_plan=WithdrawalPlan.Plan.ORAL_BRIDGE, oral_bridge_dose=BRIDGE_DOSE,
        )
        self.finish(pump, pj.STATUS_INACTIVE)

    def write_incomplete(self, ctx: Context, patient: Patient, plan: pl.IncompletePlan) -> None:
        """A pump just implanted elsewhere and transferred in: either nothing recorded yet,
        or the first fill recorded but the program not yet entered."""
        pump = services.implant_pump(
            patient=patient, model=self.models[plan.model.code], serial_number=plan.serial,
            implanted_on=plan.implanted_on, actor=ACTOR, now=plan.implanted_at,
        )
        fill = plan.first_fill
        if fill is not None:
            services.record_refill(
                pump=pump, performed_at=fill.at, added_volume_ml=fill.fill_ml, concentration_mcg_per_ml=fill.conc,
                drug_product=ctx.products[int(fill.conc)], performed_by=fill.nurse,
                notes="First fill in theatre; program sheet awaited.", actor=ACTOR, now=fill.at,
            )
            self.counts["refills"] += 1
        self.finish(pump, pj.STATUS_INCOMPLETE)

    def write_replacement(self, ctx: Context, rng: random.Random, patient: Patient,
                          plan: pl.ReplacementPlan) -> None:
        """A SynchroMed II at its elective replacement indicator (ERI), replaced by a new
        pump in one operation; the new pump's first fill carries on the same program."""
        old_pump = self.write_pump(ctx, rng, patient, plan.old)
        booked_at = self.write_eri(ctx, rng, old_pump, plan) + timedelta(hours=1)
        surgery = services.schedule_appointment(
            pump=old_pump, scheduled_for=ctx.plan.local(plan.replaced_on, 8, 0), kind=Appointment.Kind.REPLACEMENT,
            notes="Pump replacement (battery at ERI).", actor=ACTOR, now=booked_at,
        )
        services.update_appointment(appointment=surgery, actor=ACTOR, status=Appointment.Status.DONE)
        new_pump = services.replace_pump(
            old=old_pump, model=self.models[plan.new.model.code], serial_number=plan.new.serial,
            replaced_on=plan.replaced_on, actor=ACTOR, now=ctx.plan.local(plan.replaced_on, 12, 0),
            reason="Battery at elective replacement indicator: pump replaced.",
        )
        nurse = rng.choice(ctx.plan.nurses)
        for program in self.write_refill(ctx, rng, new_pump, plan.new, plan.new.refills[0], nurse):
            self.verify(ctx, rng, program)
        self.finish(old_pump, pj.STATUS_INACTIVE)
        self.finish(new_pump, plan.new.reached)

    def write_eri(self, ctx: Context, rng: random.Random, pump: Pump, plan: pl.ReplacementPlan) -> datetime:
        """The interrogation that found the ERI (when after the last refill's day)."""
        eri_at = self.planner.eri_at(ctx.plan, rng, plan.replaced_on)
        if eri_at > plan.old.refills[-1].at + pl.ONE_DAY:
            expected = services.project_pump(pump, eri_at).reservoir_volume_ml or Decimal(0)
            services.record_reading(
                pump=pump, read_at=eri_at, reservoir_volume_ml=expected.quantize(Decimal("0.1")), eri=True,
                performed_by=rng.choice(ctx.plan.nurses), actor=ACTOR, now=eri_at,
                notes="Elective replacement indicator on interrogation: replacement booked.",
            )
            self.counts["readings"] += 1
        return eri_at

    # ------------------------------------------------------------- write a pump

    def write_pump(self, ctx: Context, rng: random.Random, patient: Patient, plan: pl.PumpPlan) -> Pump:
        """Record the history in time order, each write with ``now`` at its own instant, as
        the clinic would have recorded it (the audit trail, write-time checks and alerts
        then see the history as it happened). ``refresh`` brings the pump to today."""
        pump = services.implant_pump(
            patient=patient, model=self.models[plan.model.code], serial_number=plan.serial,
            implanted_on=plan.implanted_on, actor=ACTOR, low_reservoir_alarm_ml=plan.alarm_ml,
            now=plan.refills[0].at,
        )
        actions = [(r.at, 0, r) for r in plan.refills]
        actions += [(t.at, 1, t) for t in plan.titrations]
        actions += [(r.at, 2, r) for r in plan.readings]
        # An event is recorded when the clinic learns of it: an MRI done elsewhere is
        # recorded at the interrogation that follows it (so no post-MRI alert fires in
        # between), other events as they happen.
        actions += [(e.written_at, 3, e) for e in plan.events]
        # dose and response: the patient's CNS depressants (started, stopped) and the
        # assessments not made with a refill
        actions += [(ctx.plan.local(c.started_on, 8, 0), 4, c) for c in plan.comedications]
        actions += [(ctx.plan.local(c.stopped_on, 18, 0), 5, c) for c in plan.comedications if c.stopped_on]
        actions += [(a.at, 6, a) for a in plan.assessments if a.refill is None]
        actions.sort(key=lambda a: (a[0], a[1]))
        nurse = rng.choice(ctx.plan.nurses)
        written: dict[pl.CoMedicationPlan, CoMedication] = {}
        for at, order, record in actions:
            if order in (4, 5, 6):
                self.write_response(ctx, pump, record, at, nurse, stop=order == 5, written=written)
                continue
            programs = self.write_record(ctx, rng, pump, plan, record, at, nurse)
            # A second clinician verifies each new program within the day (the next record
            # of a pump is always at least 21 hours later).
            for program in programs:
                if not (plan.leave_last_program_unverified and program.effective_at == plan.last_program_at):
                    self.verify(ctx, rng, program)
        return pump

    def write_record(self, ctx: Context, rng: random.Random, pump: Pump, plan: pl.PumpPlan, record,
                     at: datetime, nurse: str) -> list[Program]:
        """Write one planned record; returns the programs it saved."""
        if isinstance(record, pl.RefillPlan):
            return self.write_refill(ctx, rng, pump, plan, record, nurse)
        if isinstance(record, pl.ProgramPlan):
            data = program_input(record.spec, rng.choice(ctx.plan.prescribers),
                                 comedication_confirmed=bool(plan.comedications))
            return [services.record_program(pump=pump, effective_at=at, data=data, actor=ACTOR, now=at)]
        if isinstance(record, pl.ReadingPlan):
            self.write_reading(ctx, rng, pump, plan, record)
        else:
            services.record_event(pump=pump, kind=record.kind, occurred_at=record.occurred_at, notes=record.notes,
                                  actor=ACTOR, now=at)
        return []

    def write_response(self, ctx: Context, pump: Pump, record, at: datetime, nurse: str, *, stop: bool,
                       written: dict) -> None:
        """A co-medication started or stopped, or an assessment on its own (its alert, if a
        sign was answered yes, acknowledged by a prescriber when the plan says so)."""
        if isinstance(record, pl.CoMedicationPlan) and stop:
            services.stop_comedication(comedication=written[record], stopped_on=record.stopped_on, actor=ACTOR,
                                       now=at)
        elif isinstance(record, pl.CoMedicationPlan):
            written[record] = services.record_comedication(
                patient=pump.patient, name=record.name, category=record.category, started_on=record.started_on,
                notes=record.notes, actor=ACTOR, now=at,
            )
        else:
            assessment = services.record_assessment(pump=pump, assessed_at=at, data=assessment_input(record, nurse),
                                                    actor=ACTOR, now=at)
            self.counts["assessments"] += 1
            if record.acknowledge:
                self.acknowledge(ctx, assessment, record.acknowledge, at + timedelta(hours=2))

    @staticmethod
    def acknowledge(ctx: Context, assessment, reason: str, at: datetime) -> None:
        prescriber = get_user_model().objects.get(username=ctx.plan.prescribers[0])
        for alert in Alert.objects.filter(pump_id=assessment.pump_id, episode=f"assessment:{assessment.pk}",
                                          kind__in=[AlertKind.OVERDOSE_SYMPTOMS, AlertKind.WITHDRAWAL_SYMPTOMS]):
            acknowledge(alert, user=prescriber, reason=reason, now=at)

    def verify(self, ctx: Context, rng: random.Random, program: Program) -> None:
        entered = program.entered_by.username if program.entered_by else ""
        services.verify_program(
            program=program, actor=ACTOR, verified_by=rng.choice([v for v in ctx.plan.verifiers if v != entered]),
            now=min(program.effective_at + timedelta(hours=rng.randint(1, 18), minutes=rng.randint(0, 59)),
                    self.latest),
        )

    @staticmethod
    def extracted(ctx: Context, rng: random.Random, plan: pl.PumpPlan, refill: pl.RefillPlan,
                  expected: Decimal) -> Decimal:
        """The residual a nurse extracts: the expected volume, or beyond the clinic's
        discrepancy threshold when the plan wants a discrepancy."""
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
        return _quantize(extracted, plan.model.reservoir_ml)

    def write_refill(self, ctx: Context, rng: random.Random, pump: Pump, plan: pl.PumpPlan, refill: pl.RefillPlan,
                     nurse: str) -> list[Program]:
        extracted = None
        if refill is not plan.refills[0]:
            expected = services.project_pump(pump, refill.at).reservoir_volume_ml or Decimal(0)
            extracted = self.extracted(ctx, rng, plan, refill, expected)
        spec = refill.spec
        product = ctx.products[int(spec.conc)]
        local_day = pj.local_date(refill.at, ctx.plan.tz)
        notes = ""
        if refill.bridge_ml:
            notes = f"Concentration change: bridge bolus of {refill.bridge_ml} mL programmed."
        elif refill.discrepancy:
            notes = "Residual differs from the expected volume: reviewed with the physician."
        assessment = self.refill_assessment(plan, refill, nurse)
        saved = services.record_refill(
            pump=pump, performed_at=refill.at, extracted_volume_ml=extracted,
            added_volume_ml=refill.fill_ml + (refill.bridge_ml or 0), bridge_bolus_ml=refill.bridge_ml,
            concentration_mcg_per_ml=spec.conc, drug_product=product,
            lot_number=f"{product.code[:3].upper()}{local_day:%y}{rng.randint(1000, 9999)}",
            lot_expiry=local_day + timedelta(days=rng.randint(150, 540)), performed_by=nurse,
            program=program_input(spec, rng.choice(ctx.plan.prescribers),
                                  comedication_confirmed=bool(plan.comedications)) if refill.new_program else None,
            assessment=assessment, notes=notes, actor=ACTOR, now=refill.at,
        )
        self.counts["refills"] += 1
        self.counts["assessments"] += assessment is not None
        return list(Program.objects.filter(refill=saved))

    @staticmethod
    def refill_assessment(plan: pl.PumpPlan, refill: pl.RefillPlan, nurse: str) -> AssessmentInput | None:
        index = plan.refills.index(refill)
        found = next((a for a in plan.assessments if a.refill == index), None)
        return assessment_input(found, nurse) if found is not None else None

    def write_reading(self, ctx: Context, rng: random.Random, pump: Pump, plan: pl.PumpPlan,
                      reading: pl.ReadingPlan) -> None:
        projection = services.project_pump(pump, reading.at)
        expected = projection.reservoir_volume_ml or Decimal(0)
        if plan.model.volume_measured:
            volume = expected + Decimal(rng.randint(-4, 4)) / 10  # a measured volume differs a little
        else:
            # A calculated-volume pump counts the boluses actually taken.
            worst = projection.worst_case_volume_ml or Decimal(0)
            volume = expected - (expected - worst) * Decimal(rng.choice(("0.2", "0.4", "0.6")))
        services.record_reading(
            pump=pump, read_at=reading.at, reservoir_volume_ml=_quantize(volume, plan.model.reservoir_ml),
            actor=ACTOR, now=reading.at, performed_by=rng.choice(ctx.plan.nurses),
            notes="Post-MRI interrogation: pump running." if reading.after_mri else "Interrogation at review visit.",
        )
        self.counts["readings"] += 1

    # ------------------------------------------------------------ appointments

    def write_appointment(self, ctx: Context, rng: random.Random, pump: Pump, plan: pl.PumpPlan) -> None:
        """The planned refill appointment, booked yesterday against the stored due date."""
        pump.refresh_from_db()
        wanted = plan.appointment
        if pump.refill_due_on is None or wanted is None:
            return
        if wanted.kind == pl.AppointmentPlan.URGENT:
            # the first refill visit from tomorrow on
            when = ctx.plan.refill_slot(self.day + pl.ONE_DAY, later=True)
            if when is not None:
                services.schedule_appointment(pump=pump, scheduled_for=when, actor=ACTOR, now=self.latest,
                                              notes="Urgent refill: low-reservoir alarm.")
        elif wanted.kind == pl.AppointmentPlan.MISSED:
            self.write_missed(ctx, pump, plan, pump.refill_due_on)
        elif rng.random() < wanted.chance:
            # the latest free refill visit on or before the due date, not before tomorrow
            when = ctx.plan.refill_slot(pump.refill_due_on)
            if when is not None and when.astimezone(ctx.plan.tz).date() > self.day:
                services.schedule_appointment(pump=pump, scheduled_for=when, actor=ACTOR, now=self.latest)

    @staticmethod
    def write_missed(ctx: Context, pump: Pump, plan: pl.PumpPlan, due_on: date) -> None:
        """Booked at the last refill, for the due date; the patient did not come."""
        appointment = services.schedule_appointment(
            pump=pump, scheduled_for=ctx.plan.local(due_on, 10, 30), actor=ACTOR,
            now=plan.refills[-1].at + timedelta(hours=1),
        )
        services.update_appointment(appointment=appointment, actor=ACTOR, status=Appointment.Status.MISSED,
                                    notes="Did not attend; phoned twice, no answer.")

    # ------------------------------------------------------------------ finish

    def refresh(self, pump: Pump) -> Pump:
        """Bring the stored projection and the alerts of a pump to the reference time: what
        the periodic sweep does for a pump whose state changed since its last write."""
        with transaction.atomic():
            locked = Pump.objects.select_for_update().select_related("clinic", "patient", "model").get(pk=pump.pk)
            services.refresh_pump(locked, now=self.now)
        return locked

    def finish(self, pump: Pump, planned: str) -> None:
        """Refresh the pump as of the reference time and check that it has the status its
        plan was built for (a mismatch would be a bug in the planner, not in the data)."""
        pump = self.refresh(pump)
        self.last_pump = pump
        self.counts["pumps"] += 1
        self.counts[f"status:{pump.status}"] += 1
        if pump.status != planned:
            raise CommandError(f"pump {pump.serial_number}: planned status {planned}, stored status {pump.status}")
