"""The worklist's counts per status without counting pumps: ``StatusTally`` rows kept by
triggers on the pump table, in the transaction of every write to it.

PostgreSQL: statement-level triggers with transition tables, so that a bulk load or a
bulk update adds one row per clinic and status it changed, not one per pump. SQLite (the
embedded default): row-level triggers. The tally starts from a count of the pumps, taken
while the new triggers hold the pump table against writes (the migration's transaction).
"""

import django.db.models.deletion
from django.db import migrations, models

PG_FUNCTION = """
CREATE FUNCTION pumps_status_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pumps_statustally (clinic_id, status, delta)
        SELECT clinic_id, status, count(*) FROM tally_new WHERE explanted_on IS NULL GROUP BY 1, 2;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO pumps_statustally (clinic_id, status, delta)
        SELECT clinic_id, status, -count(*) FROM tally_old WHERE explanted_on IS NULL GROUP BY 1, 2;
    ELSE
        INSERT INTO pumps_statustally (clinic_id, status, delta)
        SELECT clinic_id, status, sum(d) FROM (
            SELECT clinic_id, status, 1 AS d FROM tally_new WHERE explanted_on IS NULL
            UNION ALL
            SELECT clinic_id, status, -1 FROM tally_old WHERE explanted_on IS NULL
        ) changes GROUP BY 1, 2 HAVING sum(d) <> 0;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER pumps_status_tally_insert AFTER INSERT ON pumps_pump
    REFERENCING NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION pumps_status_tally();
CREATE TRIGGER pumps_status_tally_update AFTER UPDATE ON pumps_pump
    REFERENCING OLD TABLE AS tally_old NEW TABLE AS tally_new FOR EACH STATEMENT EXECUTE FUNCTION pumps_status_tally();
CREATE TRIGGER pumps_status_tally_delete AFTER DELETE ON pumps_pump
    REFERENCING OLD TABLE AS tally_old FOR EACH STATEMENT EXECUTE FUNCTION pumps_status_tally();
"""

PG_DROP = """
DROP TRIGGER IF EXISTS pumps_status_tally_insert ON pumps_pump;
DROP TRIGGER IF EXISTS pumps_status_tally_update ON pumps_pump;
DROP TRIGGER IF EXISTS pumps_status_tally_delete ON pumps_pump;
DROP FUNCTION IF EXISTS pumps_status_tally();
"""

SQLITE_TRIGGERS = [
    """CREATE TRIGGER pumps_status_tally_insert AFTER INSERT ON pumps_pump
    WHEN NEW.explanted_on IS NULL BEGIN
        INSERT INTO pumps_statustally (clinic_id, status, delta) VALUES (NEW.clinic_id, NEW.status, 1);
    END""",
    """CREATE TRIGGER pumps_status_tally_update AFTER UPDATE OF clinic_id, status, explanted_on ON pumps_pump
    WHEN OLD.clinic_id IS NOT NEW.clinic_id OR OLD.status IS NOT NEW.status
        OR (OLD.explanted_on IS NULL) <> (NEW.explanted_on IS NULL) BEGIN
        INSERT INTO pumps_statustally (clinic_id, status, delta)
            SELECT OLD.clinic_id, OLD.status, -1 WHERE OLD.explanted_on IS NULL;
        INSERT INTO pumps_statustally (clinic_id, status, delta)
            SELECT NEW.clinic_id, NEW.status, 1 WHERE NEW.explanted_on IS NULL;
    END""",
    """CREATE TRIGGER pumps_status_tally_delete AFTER DELETE ON pumps_pump
    WHEN OLD.explanted_on IS NULL BEGIN
        INSERT INTO pumps_statustally (clinic_id, status, delta) VALUES (OLD.clinic_id, OLD.status, -1);
    END""",
]

SQLITE_DROP = [f"DROP TRIGGER IF EXISTS pumps_status_tally_{op}" for op in ("insert", "update", "delete")]

START = """
INSERT INTO pumps_statustally (clinic_id, status, delta)
SELECT clinic_id, status, count(*) FROM pumps_pump WHERE explanted_on IS NULL GROUP BY clinic_id, status
"""


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FUNCTION)
    elif vendor == "sqlite":
        for sql in SQLITE_TRIGGERS:
            schema_editor.execute(sql)
    else:
        raise RuntimeError(f"the status tally has no triggers for {vendor}")
    schema_editor.execute(START)


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_DROP)
    else:
        for sql in SQLITE_DROP:
            schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [
        ("clinic", "0003_digest_settled_until"),
        ("pumps", "0008_sweeprun_unlogged"),
    ]

    operations = [
        migrations.CreateModel(
            name="StatusTally",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("status", models.CharField(max_length=12)),
                ("delta", models.IntegerField()),
                ("clinic", models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING,
                                             related_name="+", to="clinic.clinic")),
            ],
            options={
                "indexes": [models.Index(fields=["clinic", "status"], name="tally_clinic_status_idx")],
            },
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
