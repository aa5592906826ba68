"""OpenAPI generation: list endpoints document their error answers too (a bad filter is
400, a page past the end 404), so the schema describes every status the API sends."""

from drf_spectacular.openapi import AutoSchema


class ClinicAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if self._is_list_view() and self.method == "GET":
            from .views import ERRORS

            for code in (400, 401, 404):
                responses.setdefault(str(code), self._get_response_for_code(ERRORS[code], str(code), direction=direction))
        return responses
