"""Out-of-range values in query strings and forms answer 400 (or are ignored), never 500."""

import pytest

from tests.api_support import token_client
from tests.pages_support import signed_in


@pytest.mark.parametrize("query", [
    "_offset=99999999999999999999", "_count=%C2%B2", "_id=99999999999999999999", "patient=99999999999999999999",
])
def test_fhir_search_parameters_out_of_range(db, clinic, query):
    api, _ = token_client(clinic)
    response = api.get(f"/fhir/r4/Device?{query}")
    assert response.status_code in (200, 400)
    assert response["Content-Type"].startswith("application/fhir+json")
    if response.status_code == 400:
        assert response.json()["resourceType"] == "OperationOutcome"


def test_worklist_ignores_an_oversized_prescriber_id(db, nurse):
    assert signed_in(nurse).get("/?prescriber=99999999999999999999").status_code == 200


def test_refill_page_refuses_a_year_9999(db, pump, nurse):
    response = signed_in(nurse).post(f"/pumps/{pump.pk}/refill/", {
        "performed_at": "9999-12-31T23:00", "added_volume_ml": "36", "concentration_mcg_per_ml": "1000",
    })
    assert response.status_code == 400
    assert "Enter a date between the years 1900 and 2999." in response.content.decode()
