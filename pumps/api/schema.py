"""OpenAPI generation: list endpoints document their error answers too (a bad filter is
400, a page past the end 404) and every operation its 429, so the schema describes every
status the API sends."""

from drf_spectacular.openapi import AutoSchema


class ClinicAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        from .views import ERRORS

        codes = [429]
        if self._is_list_view() and self.method == "GET":
            codes += [400, 401, 404]
        for code in codes:
            responses.setdefault(str(code), self._get_response_for_code(ERRORS[code], str(code), direction=direction))
        return responses
