from django.contrib import admin
from django.urls import include, path

from clinic.health import health

urlpatterns = [
    path("health/", health, name="health"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("pumps.api.urls")),
    path("fhir/r4/", include("pumps.fhir.urls")),
    path("", include("pumps.urls")),
]
