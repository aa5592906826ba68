"""The demo at scale (PostgreSQL): the special pumps, one pump with more than ten years of
history and a few planned histories per clinic and status (the templates) are written
through the services, exactly as the small demo; every other pump is a copy of a
template's records for a new patient, made by the database (``pumps.demo.clone``)."""

from __future__ import annotations

from dataclasses import replace

from django.core.management.base import CommandError

from clinic.models import MAX_REFILL_SLOTS, Clinic
from pumps import projection as pj
from pumps.models import Alert, Pump, Reading, Refill

from . import plan as pl
from .clone import Copy, copy_pumps
from .specs import BULK_TARGETS, CLINIC_WEIGHTS, CLINICS, EXTRA_CLINICS, TEMPLATES_PER_CLINIC
from .writers import Context, DemoWriter

BULK_FROM = 1000  # --pumps at or above this use the bulk path


def long_history() -> pl.Slot:
    """A long history: the pump page must stay fast with more than ten years of records."""
    return pl.Slot(0, pj.STATUS_OK, pl.Features(model="8637-40", refills=45, bolus=True, reading_rate=0.4))


class BulkDemoWriter(DemoWriter):
    """Synthetic data at scale: four clinics, templates written through the services and
    copies made by the database."""

    clinic_specs = CLINICS + EXTRA_CLINICS

    def run(self) -> dict:
        contexts = self.create_clinics()
        user = self.create_demo_user(contexts)
        for ctx, weight in zip(contexts, CLINIC_WEIGHTS, strict=True):
            self.scale_capacity(ctx, weight)
        for index, slot in enumerate([*pl.special_slots(), long_history()]):
            self.write_scenario(contexts[slot.clinic], self.planner.rng("pump", index), slot)
        templates = self.write_templates(contexts)
        remaining = self.pumps - self.counts["pumps"]
        if remaining < 0:
            raise CommandError(f"--pumps must be at least {self.counts['pumps']} for the bulk path.")
        copies = self.copies(contexts, remaining, templates)
        copy_pumps(copies, now=self.now)
        clinics = [c.clinic for c in contexts]
        self.counts["refills"] = Refill.objects.filter(pump__clinic__in=clinics).count()
        self.counts["readings"] = Reading.objects.filter(pump__clinic__in=clinics).count()
        self.counts["awaiting_sweep"] = sum(c.due_now for c in copies)
        return {"user": user, "clinics": clinics, "counts": self.counts}

    def scale_capacity(self, ctx: Context, weight: int) -> None:
        """At scale a clinic refills every open day, about one pump in 40 a day (a refill
        every two to three months), which leaves room in the plan."""
        slots = min(MAX_REFILL_SLOTS, max(ctx.plan.spec.refill_slots_per_day, self.pumps * weight // 100 // 40))
        Clinic.objects.filter(pk=ctx.clinic.pk).update(refill_slots_per_day=slots, refill_slots_by_weekday=[None] * 7)
        ctx.clinic.refresh_from_db()
        ctx.plan.capacity = replace(ctx.plan.capacity, slots_per_day=slots, slots_by_weekday=(None,) * 7)
        self.check_clinic(ctx.plan, ctx.clinic)

    def write_templates(self, contexts: list[Context]) -> dict[tuple[int, str], list[pl.TemplateRef]]:
        """The planned histories the copies are made from, per clinic and status."""
        templates: dict[tuple[int, str], list[pl.TemplateRef]] = {}
        for clinic_index, ctx in enumerate(contexts):
            for scenario, count in TEMPLATES_PER_CLINIC:
                for n in range(count):
                    rng = self.planner.rng("template", ctx.plan.spec.code, scenario, n)
                    self.write_scenario(ctx, rng, pl.Slot(clinic_index, scenario, pl.random_features(rng, scenario)))
                    templates.setdefault((clinic_index, scenario), []).append(self.template_ref(clinic_index))
        return templates

    def template_ref(self, clinic_index: int) -> pl.TemplateRef:
        pump: Pump = self.last_pump
        patient = pump.patient
        return pl.TemplateRef(
            key=pump.pk, clinic=clinic_index, status=pump.status, model=self.planner.models[pump.model.code],
            origin=patient.spasticity_origin, high_risk=patient.withdrawal_high_risk,
            high_risk_reason=patient.high_risk_reason, patient_status=patient.status,
        )

    def copies(self, contexts: list[Context], count: int,
               templates: dict[tuple[int, str], list[pl.TemplateRef]]) -> list[Copy]:
        keys = [t.key for refs in templates.values() for t in refs]
        open_alerts = set(
            Alert.objects.filter(pump__in=keys, resolved_at__isnull=True).values_list("pump_id", flat=True)
        )
        plans = pl.plan_copies(self.planner, self.planner.rng("copies"), count, CLINIC_WEIGHTS, BULK_TARGETS,
                               templates)
        copies = []
        for plan in plans:
            ctx = contexts[plan.template.clinic]
            copies.append(Copy(template_id=plan.template.key, patient=self.copy_patient(ctx, plan),
                               serial_number=plan.serial, due_now=plan.template.key in open_alerts))
            self.counts["pumps"] += 1
            self.counts[f"status:{plan.template.status}"] += 1
        return copies

    @staticmethod
    def copy_patient(ctx: Context, plan: pl.CopyPlan) -> dict:
        person = plan.patient
        return {
            "clinic_id": ctx.clinic.pk, "mrn": person.mrn, "family_name": person.family_name,
            "given_name": person.given_name, "birth_date": person.birth_date, "spasticity_origin": person.origin,
            "withdrawal_high_risk": person.high_risk, "high_risk_reason": person.high_risk_reason,
            "phone": person.phone, "caregiver_phone": person.caregiver_phone, "status": plan.template.patient_status,
        }
