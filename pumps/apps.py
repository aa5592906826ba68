from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PumpsConfig(AppConfig):
    name = "pumps"
    verbose_name = "Pumps"

    def ready(self) -> None:
        from . import tallies

        post_migrate.connect(tallies.ensure_sqlite_triggers, sender=self, dispatch_uid="pumps.tally_triggers")
