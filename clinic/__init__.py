"""The Django project: settings, URLs, the Celery app, and the clinic-level models
(clinics and their policy, staff memberships and roles, API clients)."""

from .celery import app as celery_app

__all__ = ("celery_app",)
