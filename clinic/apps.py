from django.apps import AppConfig


class ClinicConfig(AppConfig):
    name = "clinic"
    verbose_name = "Clinics, staff and API clients"

    def ready(self):
        from . import checks  # noqa: F401 - registers the production system checks
