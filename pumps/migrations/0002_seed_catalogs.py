"""Seed the pump-model and drug-product catalogs with the verified values of docs/clinical-rules.md §2.

Sources: Medtronic SynchroMed II (2 mL alarm recommended; battery at most 7 years; stalls
during MRI, interrogate afterwards), Flowonix Prometra II PTC guide (refill when 3.0 mL
remains; must be emptied before MRI), Codman MedStream recall notice (alarm normally 3 mL).
Baclofen in-pump stability 180 days (PMID 38043050).
"""

from decimal import Decimal

from django.db import migrations

PUMP_MODELS = [
    # code, manufacturer, name, reservoir, alarm, volume_is, battery months, MRI behaviour
    ("8637-20", "Medtronic", "SynchroMed II", "20", "2.0", "calculated", 84, "interrogate_after"),
    ("8637-40", "Medtronic", "SynchroMed II", "40", "2.0", "calculated", 84, "interrogate_after"),
    ("13827", "Flowonix", "Prometra II", "20", "3.0", "calculated", 120, "empty_before"),
    ("16827", "Flowonix", "Prometra II", "40", "3.0", "calculated", 120, "empty_before"),
    ("91-4200", "Codman", "MedStream", "20", "3.0", "measured", 96, ""),
    ("91-4201", "Codman", "MedStream", "40", "3.0", "measured", 96, ""),
]

PRODUCTS = [
    ("lioresal-50", "Lioresal Intrathecal 50 mcg/mL (screening)", "50"),
    ("lioresal-500", "Lioresal Intrathecal 500 mcg/mL", "500"),
    ("lioresal-2000", "Lioresal Intrathecal 2000 mcg/mL", "2000"),
    ("gablofen-50", "Gablofen 50 mcg/mL", "50"),
    ("gablofen-500", "Gablofen 500 mcg/mL", "500"),
    ("gablofen-1000", "Gablofen 1000 mcg/mL", "1000"),
    ("gablofen-2000", "Gablofen 2000 mcg/mL", "2000"),
    ("baclofen-compounded", "Baclofen, compounded (any concentration)", None),
]


def seed(apps, schema_editor):
    PumpModel = apps.get_model("pumps", "PumpModel")
    Drug = apps.get_model("pumps", "Drug")
    DrugProduct = apps.get_model("pumps", "DrugProduct")
    for code, manufacturer, name, reservoir, alarm, volume_is, battery, mri in PUMP_MODELS:
        PumpModel.objects.update_or_create(
            code=code,
            defaults=dict(
                manufacturer=manufacturer, name=name, reservoir_ml=Decimal(reservoir),
                default_alarm_ml=Decimal(alarm), volume_is=volume_is, battery_months=battery, mri_behaviour=mri,
            ),
        )
    baclofen, _ = Drug.objects.update_or_create(
        code="baclofen", defaults=dict(name="Baclofen", default_stability_days=180)
    )
    for code, name, conc in PRODUCTS:
        DrugProduct.objects.update_or_create(
            code=code,
            defaults=dict(
                name=name, drug=baclofen, concentration_mcg_per_ml=Decimal(conc) if conc else None,
                stability_days=None,
            ),
        )


class Migration(migrations.Migration):
    dependencies = [("pumps", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
