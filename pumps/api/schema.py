"""OpenAPI generation: list endpoints document their error answers too (a bad filter is
400, a page past the end 404) and every operation its 429, so the schema describes every
status the API sends."""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse

from . import serializers as s

ERRORS = {
    400: OpenApiResponse(s.VALIDATION_ERROR_SCHEMA, description="Invalid input; nothing was saved."),
    401: OpenApiResponse(s.ErrorDetailSerializer, description="No, unknown or revoked token."),
    403: OpenApiResponse(s.ErrorDetailSerializer, description="Read-only token, or the role does not allow it."),
    404: OpenApiResponse(s.ErrorDetailSerializer, description="No such record in the caller's clinics."),
    409: OpenApiResponse(s.ErrorDetailSerializer, description="Probable duplicate (code probable_duplicate)."),
    412: OpenApiResponse(s.ErrorDetailSerializer, description="If-Match names a stale pump version."),
    415: OpenApiResponse(s.ErrorDetailSerializer, description="The body is not application/json."),
    422: OpenApiResponse(s.ErrorDetailSerializer, description="Idempotency-Key reused for another request."),
    429: OpenApiResponse(s.ErrorDetailSerializer,
                         description="Too many requests from this API client: see Retry-After."),
}


def error_responses(*codes: int) -> dict:
    """The documented error answers of an operation, by status code."""
    return {code: ERRORS[code] for code in codes}


class ClinicAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        codes = [429]
        if self._is_list_view() and self.method == "GET":
            codes += [400, 401, 404]
        for code in codes:
            responses.setdefault(str(code), self._get_response_for_code(ERRORS[code], str(code), direction=direction))
        return responses
