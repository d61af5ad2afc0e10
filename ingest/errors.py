"""Every error the API answers, mapped to a status and a JSON body in one place.

The body always has the same shape: `message` (as the original service had), a
machine-readable `code`, and `field` where one field is to blame.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from starlette.responses import Response

from core.events import ItemError

JSON_MEDIA_TYPE = "application/json; charset=utf-8"  # what the original (Express) sent


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        errors: Sequence[ItemError] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.errors = list(errors)


class BadRequest(ApiError):
    status = 400
    code = "invalid_request"


class OutOfRange(BadRequest):
    """A parameter outside the range the stats API supports (dates, numbers)."""

    code = "out_of_range"


class InvalidText(BadRequest):
    """Text that PostgreSQL cannot hold (NUL) or that is not valid Unicode."""

    code = "invalid_text"


class TooLong(BadRequest):
    """Text longer, in UTF-8 bytes, than anything stored can be."""

    code = "too_long"


class TooManyFilters(BadRequest):
    code = "too_many_filters"


class MalformedJson(ApiError):
    status = 400
    code = "malformed_json"


class FieldTooLong(BadRequest):
    """A text field larger than the store can index, in UTF-8 bytes."""

    code = "field_too_long"


class TimestampTooOld(BadRequest):
    """The event's day is before the accepted past-time window (MAX_PAST_DAYS)."""

    code = "timestamp_too_old"


class TimestampExpired(BadRequest):
    """The event's day is one retention has already deleted (RETENTION_DAYS)."""

    code = "timestamp_expired"


class BodyTimeout(ApiError):
    """The client did not send its whole body in time (BODY_READ_TIMEOUT_S)."""

    status = 408
    code = "body_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class WriteKeyRequired(ApiError):
    """Write keys are configured and the request carries none."""

    status = 401
    code = "write_key_required"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(
            message, field=field, headers={"WWW-Authenticate": 'Basic realm="analytics-ingest"'}
        )


class WriteKeyInvalid(ApiError):
    """The request's write key is not valid for a site it sends events for."""

    status = 403
    code = "write_key_invalid"


class WriteKeyNeeded(ApiError):
    """A field only a server holding a valid write key may send (`user_agent`,
    `client_address`): without one, anybody could pose as any browser."""

    status = 403
    code = "write_key_needed"


class ReadKeyRequired(ApiError):
    """The site has read keys and the stats request carries none."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="stats"'})


class ReadKeyInvalid(ApiError):
    """The stats request's read key is not one of the site's."""

    status = 403
    code = "forbidden"


class RateLimited(ApiError):
    """The caller's stats rate limit is used up."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class ServiceUnavailable(ApiError):
    """A dependency (Kafka or PostgreSQL) cannot serve the request now; retry later."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class StatsTimedOut(ServiceUnavailable):
    """A stats query ran past the API's statement_timeout or waited past its lock_timeout."""

    code = "stats_timeout"


class SchemaOutdated(ServiceUnavailable):
    """The database's schema is older than this API's: the release's migrations have not run
    (the consumers refuse to start on it; the API would otherwise answer 500)."""

    code = "schema_outdated"


class ClientClosedRequest(ApiError):
    """The client went away before its answer was ready; its query was cancelled. Nobody
    reads this answer: the status (nginx's 499) is for metrics and logs."""

    status = 499
    code = "client_closed_request"


class Overloaded(ServiceUnavailable):
    """Too many events are waiting for Kafka's ack: shed load rather than queue it."""

    code = "overloaded"


class ErrorBody(msgspec.Struct, omit_defaults=True):
    message: str
    code: str
    field: str | None = None
    errors: list[ItemError] | None = None  # per-item refusals of a batch, when all failed


def error_response(error: ApiError) -> Response:
    body = msgspec.json.encode(
        ErrorBody(error.message, error.code, error.field, error.errors or None)
    )
    return Response(body, error.status, headers=error.headers, media_type=JSON_MEDIA_TYPE)
