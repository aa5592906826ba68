"""The sweep's quiet tick also wakes for the end of a stop's withdrawal window.

A ``withdrawal_risk`` alert of a stop of delivery without a plan (episode ``stop:<id>``,
docs/clinical-rules.md §15) that was acknowledged during its window resolves at the
window's end (``due_at``) by the sweep (``pumps.symptom_alerts.settle``). Such an alert
has no repeat due and may belong to an explanted pump (never due), so the quiet-tick
check gains one probe: the earliest end among the open, acknowledged stop alerts (the
partial index of open alerts by kind; no parameter in the scan, as the others).
"""

import importlib

from django.db import migrations

PREVIOUS = importlib.import_module("pumps.migrations.0010_idle_tick_function").CREATE

PROBE = """OR coalesce((SELECT min(due_at) FROM pumps_alert
                     WHERE kind = 'withdrawal_risk' AND resolved_at IS NULL
                       AND acknowledged_at IS NOT NULL AND left(episode, 5) = 'stop:') <= p_now, false)
        OR EXISTS (SELECT 1 FROM clinic_clinic"""

CREATE = PREVIOUS.replace("OR EXISTS (SELECT 1 FROM clinic_clinic", PROBE, 1)
assert CREATE != PREVIOUS


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def restore(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PREVIOUS)


class Migration(migrations.Migration):
    dependencies = [("pumps", "0016_dose_and_response")]

    operations = [migrations.RunPython(create, restore)]
