"""The worklist's counts per status come from the status tally (0009): the index that
served them by an index-only scan of the clinic's pumps only cost every pump write."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("pumps", "0010_idle_tick_function")]

    operations = [migrations.RemoveIndex(model_name="pump", name="pump_status_count_idx")]
