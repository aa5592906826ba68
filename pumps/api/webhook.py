"""``/api/v1/webhook/``: an API client registers the URL its clinic's alerts are POSTed to.

Each alert is sent as JSON with ``X-Clinic-Timestamp`` and ``X-Clinic-Signature:
sha256=<hex>``, the HMAC-SHA256 of ``<timestamp>.<body>`` keyed with the secret returned
once when the URL is set; deliveries go through the same outbox and retries as e-mails.
Where a webhook may point is checked here (400 ``{"url": [...]}``) and again at every
send (``pumps.net``).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from clinic.auth import api_client_of, detach_principal

from .. import net
from .schema import error_responses
from .views import DecimalJSONParser

REGISTRATION_RESOLVE_SECONDS = 5


class WebhookSerializer(serializers.Serializer):
    url = serializers.URLField(
        max_length=500, allow_blank=True,
        help_text="https URL; empty to remove. No user name or password; the host may not resolve to a "
                  "loopback, private, link-local, multicast or reserved address (unless the operator "
                  "allows the network, where plain http is allowed too). Redirects are not followed.",
    )

    def validate_url(self, value: str) -> str:
        if value:
            try:
                net.vet(value, timeout=REGISTRATION_RESOLVE_SECONDS)
            except net.TargetRefused as exc:
                raise serializers.ValidationError(str(exc)) from None
        return value


class WebhookSecretSerializer(serializers.Serializer):
    url = serializers.URLField()
    secret = serializers.CharField(help_text="Shown once: the HMAC-SHA256 key of X-Clinic-Signature.")


class WebhookView(APIView):
    parser_classes = [DecimalJSONParser]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        detach_principal(request)
        if api_client_of(request) is None:
            raise exceptions.PermissionDenied("Webhooks belong to API clients: call with a Bearer token.")

    @extend_schema(summary="The webhook URL registered by this API client",
                   responses={200: WebhookSerializer, **error_responses(401, 403)})
    def get(self, request):
        return Response({"url": api_client_of(request).webhook_url})

    @extend_schema(summary="Register the webhook URL (a new signing secret is returned once)",
                   request=WebhookSerializer,
                   responses={200: WebhookSecretSerializer, 204: None, **error_responses(400, 401, 403, 415)})
    def put(self, request):
        body = WebhookSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        client = api_client_of(request)
        url = body.validated_data["url"]
        if not url:
            client.set_webhook("")
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"url": url, "secret": client.set_webhook(url)})

    @extend_schema(summary="Remove the webhook", responses={204: None, **error_responses(401, 403)})
    def delete(self, request):
        api_client_of(request).set_webhook("")
        return Response(status=status.HTTP_204_NO_CONTENT)
