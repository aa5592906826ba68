from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PumpsConfig(AppConfig):
    name = "pumps"
    verbose_name = "Pumps"

    def ready(self) -> None:
        # Imported here, as Django's app loading requires: models are not ready before.
        from clinic.signals import clinic_changed

        from . import receivers, reprojection, tallies, tasks
        from .alerting import delivery

        delivery.register_trigger(tasks.trigger_delivery)
        reprojection.register_queue(tasks.queue_reprojection)
        post_migrate.connect(tallies.ensure_sqlite_triggers, sender=self, dispatch_uid="pumps.tally_triggers")
        clinic_changed.connect(receivers.refresh_after_clinic_change, dispatch_uid="pumps.refresh_clinic")
