"""The heartbeat table is UNLOGGED on PostgreSQL: a sweep's heartbeat is liveness data,
not clinical data, and a write to an unlogged table does not wait for the write-ahead log
to reach the disk, so a quiet sweep costs about as little as the SELECT it makes. After a
crash of the database server (not a clean restart) the table is emptied; /health/ then
reports the sweep as not run until the next sweep, within one interval."""

from django.db import migrations


def _set(logged: bool):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        table = apps.get_model("pumps", "SweepRun")._meta.db_table
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} SET {'LOGGED' if logged else 'UNLOGGED'}")

    return run


class Migration(migrations.Migration):
    dependencies = [("pumps", "0007_alert_open_kind_index")]

    operations = [migrations.RunPython(_set(False), _set(True))]
