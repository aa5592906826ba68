"""``/api/v1/``: the REST API, its OpenAPI schema and browsable docs. The last route
answers every path no endpoint matches with a JSON 404 (``errors.NotRouted``)."""

from django.contrib.auth.decorators import login_required
from django.urls import path, re_path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)
from rest_framework.routers import SimpleRouter

from clinic.auth import IsClinicMember

from . import alerts, assessments, planning, records, views, webhook
from .errors import NotRouted

router = SimpleRouter()
router.register("patients", views.PatientViewSet, basename="patient")
router.register("pumps", views.PumpViewSet, basename="pump")
router.register("programs", views.ProgramViewSet, basename="program")
router.register("refills", views.RefillViewSet, basename="refill")
router.register("readings", views.ReadingViewSet, basename="reading")
router.register("alerts", alerts.AlertViewSet, basename="alert")
router.register("events", records.EventViewSet, basename="event")
router.register("appointments", records.AppointmentViewSet, basename="appointment")
router.register("assessments", assessments.AssessmentViewSet, basename="assessment")
router.register("comedications", assessments.CoMedicationViewSet, basename="comedication")

# Sign-in is required everywhere (README, Security), the schema and docs included: the schema takes
# a Bearer token or a session; the HTML docs (assets from the sidecar, no CDN) a session.
urlpatterns = [
    path("worklist/", views.WorklistView.as_view(), name="worklist"),
    path("refill-plan/", planning.RefillPlanView.as_view(), name="refill-plan"),
    path("refill-plan/book/", planning.RefillPlanBookView.as_view(), name="refill-plan-book"),
    path("webhook/", webhook.WebhookView.as_view(), name="webhook"),
    re_path(r"^pumps/(?P<pk>[^/.]+)/history/$", records.PumpHistoryView.as_view(), name="pump-history"),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[IsClinicMember]), name="api-schema"),
    path(
        "docs/",
        login_required(SpectacularSwaggerSplitView.as_view(url_name="api-schema", permission_classes=[IsClinicMember])),
        name="api-docs",
    ),
    path(
        "redoc/",
        login_required(
            SpectacularRedocView.as_view(
                url_name="api-schema", template_name="pumps/api/redoc.html", permission_classes=[IsClinicMember]
            )
        ),
        name="api-redoc",
    ),
    *router.urls,
    re_path(r"^.*$", NotRouted.as_view(), name="api-not-routed"),
]
