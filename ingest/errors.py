"""Every error the API answers, mapped to a status and a JSON body in one place.

The body always has the same shape: `message` (as the original service had), a
machine-readable `code`, and `field` where one field is to blame.
"""

from __future__ import annotations

import msgspec
from starlette.responses import Response

JSON_MEDIA_TYPE = "application/json; charset=utf-8"  # what the original (Express) sent


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(
        self, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400
    code = "invalid_request"


class MalformedJson(ApiError):
    status = 400
    code = "malformed_json"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class ServiceUnavailable(ApiError):
    """A dependency (Kafka or PostgreSQL) cannot serve the request now; retry later."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class _ErrorBody(msgspec.Struct, omit_defaults=True):
    message: str
    code: str
    field: str | None = None


def error_response(error: ApiError) -> Response:
    body = msgspec.json.encode(_ErrorBody(error.message, error.code, error.field))
    return Response(body, error.status, headers=error.headers, media_type=JSON_MEDIA_TYPE)
