"""OpenAPI 3 schema and the browsable docs, served locally (no CDN), behind sign-in."""

from __future__ import annotations

import io
import re

from django.conf import settings
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.api_support import API, session_client, token_client


def schema(api, **extra):
    response = api.get(f"{API}/schema/", {"format": "json"}, **extra)
    assert response.status_code == 200
    return response.json()


def test_schema_is_openapi_3_json_with_every_resource(clinic):
    api, _ = token_client(clinic, write=False)
    response = api.get(f"{API}/schema/", {"format": "json"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.oai.openapi+json"
    body = response.json()
    assert body["openapi"].startswith("3.")
    assert body["info"]["title"] == "Intrathecal pump clinic API"
    assert set(body["paths"]) == {
        "/api/v1/patients/", "/api/v1/patients/{id}/", "/api/v1/pumps/", "/api/v1/pumps/{id}/",
        "/api/v1/pumps/{id}/explant/", "/api/v1/pumps/{id}/projection/", "/api/v1/programs/",
        "/api/v1/programs/{id}/", "/api/v1/programs/{id}/verify/", "/api/v1/programs/{id}/void/",
        "/api/v1/refills/", "/api/v1/refills/{id}/", "/api/v1/refills/{id}/void/", "/api/v1/readings/",
        "/api/v1/readings/{id}/", "/api/v1/readings/{id}/void/", "/api/v1/worklist/",
        "/api/v1/alerts/", "/api/v1/alerts/{id}/", "/api/v1/alerts/{id}/acknowledge/", "/api/v1/webhook/",
        "/api/v1/events/", "/api/v1/events/{id}/", "/api/v1/events/{id}/void/", "/api/v1/appointments/",
        "/api/v1/appointments/{id}/", "/api/v1/appointments/{id}/ics/", "/api/v1/appointments/{id}/void/",
        "/api/v1/pumps/{id}/history/", "/api/v1/refill-plan/", "/api/v1/refill-plan/book/",
        "/api/v1/assessments/", "/api/v1/assessments/{id}/", "/api/v1/assessments/{id}/void/",
        "/api/v1/comedications/", "/api/v1/comedications/{id}/", "/api/v1/comedications/{id}/void/",
    }


def test_accept_application_json_selects_json(clinic):
    api, _ = token_client(clinic)
    response = api.get(f"{API}/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["openapi"].startswith("3.")


def test_schema_needs_sign_in(db):
    assert APIClient().get(f"{API}/schema/", {"format": "json"}).status_code == 401


def test_bearer_security_scheme_is_documented(clinic):
    body = schema(token_client(clinic)[0])
    assert body["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer",
        "description": "An API client's token: `Authorization: Bearer <token>` (`create_api_client`).",
    }


def test_refill_create_documents_request_response_and_errors(clinic):
    body = schema(token_client(clinic)[0])
    operation = body["paths"]["/api/v1/refills/"]["post"]
    request_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = body["components"]["schemas"][request_ref.rsplit("/", 1)[1]]
    assert {"pump", "performed_at", "extracted_volume_ml", "added_volume_ml", "concentration_mcg_per_ml",
            "residual_left_ml", "bridge_bolus_ml", "drug_product", "lot_number", "confirm_duplicate",
            "program"} <= set(request["properties"])
    assert set(request["required"]) == {"pump", "performed_at", "added_volume_ml", "concentration_mcg_per_ml"}
    assert request["properties"]["added_volume_ml"]["oneOf"] == [
        {"type": "string", "format": "decimal"}, {"type": "number"}
    ]
    response_ref = operation["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    response = body["components"]["schemas"][response_ref.rsplit("/", 1)[1]]
    assert {"id", "expected_residual_ml", "discrepancy_ml", "discrepancy_flagged", "refilled_after_empty", "flags",
            "volume_after_ml"} <= set(response["properties"])
    assert response["properties"]["discrepancy_ml"]["pattern"] == r"^-?\d+\.\d{3}$"
    assert set(operation["responses"]) == {"201", "400", "401", "403", "404", "409", "412", "415", "422", "429"}
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"Idempotency-Key", "If-Match"}


def test_projection_and_filters_are_documented(clinic):
    body = schema(token_client(clinic)[0])
    projection = body["paths"]["/api/v1/pumps/{id}/projection/"]["get"]
    assert [p["name"] for p in projection["parameters"] if p["in"] == "query"] == ["at"]
    ref = projection["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert list(body["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]) == [
        "at", "status", "status_reason", "reservoir_volume_ml", "daily_volume_ml", "worst_case_daily_volume_ml",
        "low_reservoir_alarm_at", "empty_at", "expected_low_reservoir_alarm_at", "expected_empty_at",
        "drug_expires_at", "refill_due_on",
    ]
    pump_filters = {p["name"] for p in body["paths"]["/api/v1/pumps/"]["get"]["parameters"]}
    assert {"patient", "mrn", "serial_number", "status", "due_before", "due_after", "updated_since", "page",
            "page_size"} <= pump_filters
    refill_filters = {p["name"] for p in body["paths"]["/api/v1/refills/"]["get"]["parameters"]}
    assert {"pump", "patient", "updated_since", "include_voided"} <= refill_filters


def test_swagger_ui_is_served_from_the_sidecar(nurse):
    api = session_client(nurse)
    page = api.get(f"{API}/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert not re.search(r"https?://", html)
    assert "<script>" not in html  # the init script is a separate file (strict CSP)
    script = api.get(f"{API}/docs/", {"script": ""})
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "/api/v1/schema/" in script.content.decode()


def test_redoc_is_served_from_the_sidecar_without_web_fonts(nurse):
    page = session_client(nurse).get(f"{API}/redoc/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js" in html
    assert 'spec-url="/api/v1/schema/"' in html
    assert not re.search(r"https?://", html)


def test_docs_redirect_to_sign_in(db):
    response = APIClient().get(f"{API}/docs/")
    assert response.status_code == 302
    assert response["Location"] == f"{settings.LOGIN_URL}?next=/api/v1/docs/"


def test_schema_validates_without_warnings(db):
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out)
    assert '"openapi": "3.0.3"' in out.getvalue()


def test_open_alerts_status_reason_and_acknowledgement_are_documented(clinic):
    body = schema(token_client(clinic)[0])
    schemas = body["components"]["schemas"]
    pump = schemas["Pump"]["properties"]
    assert pump["status_reason"]["type"] == "string"
    assert pump["open_alerts"]["type"] == "array"
    open_alert = schemas[pump["open_alerts"]["items"]["$ref"].rsplit("/", 1)[1]]["properties"]
    assert list(open_alert) == [
        "id", "kind", "severity", "raised_at", "acknowledged_at", "acknowledged_by", "acknowledgement_reason",
    ]
    kinds = schemas[open_alert["kind"]["allOf"][0]["$ref"].rsplit("/", 1)[1]]["enum"]
    assert "drug_expired" in kinds
    assert list(schemas["Worklist"]["properties"]).count("open_alerts") == 1
    acknowledge = body["paths"]["/api/v1/alerts/{id}/acknowledge/"]["post"]
    request = acknowledge["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert list(schemas[request]["properties"]) == ["acknowledged_by", "reason"]
    assert schemas[request]["properties"]["reason"]["maxLength"] == 500
    assert {"200", "400", "401", "403", "404"} <= set(acknowledge["responses"])
    assert "acknowledgement_reason" in schemas["Alert"]["properties"]


def test_dose_and_response_endpoints_are_documented_with_examples(clinic):
    body = schema(token_client(clinic)[0])
    schemas = body["components"]["schemas"]

    def ref(node):
        node = node["allOf"][0] if "allOf" in node else node
        return schemas[node["$ref"].rsplit("/", 1)[1]]

    create = body["paths"]["/api/v1/assessments/"]["post"]
    content = create["requestBody"]["content"]["application/json"]
    request = ref(content["schema"])
    assert set(request["properties"]) == {
        "pump", "assessed_at", "ashworth", "penn_spasm_frequency", "pain_score", "goal_note", "withdrawal_signs",
        "overdose_signs", "notes", "assessed_by",
    }
    assert set(request["required"]) == {"pump", "assessed_at"}
    assert list(ref(request["properties"]["ashworth"])["properties"]) == [
        "upper_left", "upper_right", "lower_left", "lower_right",
    ]
    assert list(ref(request["properties"]["withdrawal_signs"])["properties"]) == [
        "baseline_spasticity", "pruritus", "hypotension", "paresthesias", "high_fever", "altered_mental_status",
        "rebound_spasticity", "muscle_rigidity",
    ]
    assert list(ref(request["properties"]["overdose_signs"])["properties"]) == [
        "drowsiness", "lightheadedness", "dizziness", "somnolence", "respiratory_depression", "seizures",
        "rostral_hypotonia", "loss_of_consciousness",
    ]
    (example,) = content["examples"].values()
    assert example["value"]["ashworth"]["lower_left"] == "1+"
    assert example["value"]["overdose_signs"] == {"drowsiness": True}
    assert set(create["responses"]) == {"201", "400", "401", "403", "404", "412", "415", "422", "429"}
    assert {p["name"] for p in create["parameters"] if p["in"] == "header"} == {"Idempotency-Key", "If-Match"}
    response = ref(create["responses"]["201"]["content"]["application/json"]["schema"])
    assert "alerts" in response["properties"] and "withdrawal_signs" in response["properties"]
    assessment_filters = {p["name"] for p in body["paths"]["/api/v1/assessments/"]["get"]["parameters"]}
    assert {"pump", "patient", "since", "include_voided", "page"} <= assessment_filters

    comedications = body["paths"]["/api/v1/comedications/"]
    assert set(ref(comedications["post"]["requestBody"]["content"]["application/json"]["schema"])["required"]) == {
        "patient", "name", "category", "started_on",
    }
    assert {p["name"] for p in comedications["get"]["parameters"]} >= {"patient", "include_voided"}
    assert set(body["paths"]["/api/v1/comedications/{id}/"]) == {"get", "patch"}

    program = ref(body["paths"]["/api/v1/programs/"]["post"]["requestBody"]["content"]["application/json"]["schema"])
    assert program["properties"]["comedication_confirmed"]["type"] == "boolean"
    plan = ref(program["properties"]["withdrawal_plan"])
    assert list(plan["properties"]) == ["plan", "oral_bridge_dose", "reason"]
    explant = body["paths"]["/api/v1/pumps/{id}/explant/"]["post"]["requestBody"]["content"]["application/json"]
    assert "withdrawal_plan" in ref(explant["schema"])["properties"]
    assert {"comedication_confirmed", "comedication_summary", "withdrawal_plan"} <= set(
        schemas["Program"]["properties"]
    )
    assert "assessment" in ref(
        body["paths"]["/api/v1/refills/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    )["properties"]
    examples = {
        path: [e["value"] for e in body["paths"][path]["post"]["requestBody"]["content"]["application/json"][
            "examples"].values()]
        for path in ("/api/v1/programs/", "/api/v1/pumps/{id}/explant/", "/api/v1/comedications/")
    }
    assert [e.get("comedication_confirmed") for e in examples["/api/v1/programs/"]] == [True, None]
    assert examples["/api/v1/programs/"][1]["withdrawal_plan"]["plan"] == "none"
    assert [e["withdrawal_plan"]["plan"] for e in examples["/api/v1/pumps/{id}/explant/"]] == [
        "taper_completed", "oral_bridge",
    ]
    assert examples["/api/v1/comedications/"][0]["category"] == "opioid"
