"""``/fhir/r4/``: FHIR R4 read API (README, REST API). FHIR URLs have no trailing slash; one is
tolerated."""

from django.urls import path, re_path

from . import views

urlpatterns = [
    path("metadata", views.MetadataView.as_view(), name="fhir-metadata"),
    re_path(
        r"^(?P<resource_type>[A-Za-z]+)/(?P<pk>[A-Za-z0-9\-.]{1,64})/?$", views.ReadView.as_view(), name="fhir-read"
    ),
    re_path(r"^(?P<resource_type>[A-Za-z]+)/?$", views.SearchView.as_view(), name="fhir-search"),
]
