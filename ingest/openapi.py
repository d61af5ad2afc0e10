"""`GET /openapi.json`: the API described for clients and for the schemathesis fuzz tests.

Bodies come from the same msgspec structs that decode and encode them, so the document cannot
drift from the code; the paths, statuses and headers are written out here.
"""

from __future__ import annotations

from typing import Any

import msgspec

from core.events import (
    MAX_CONTEXT_BYTES,
    MAX_FIELD_BYTES,
    MAX_PROP_KEY_BYTES,
    MAX_PROP_VALUE_BYTES,
    IncomingEvent,
)
from ingest.accept import BatchAccepted
from ingest.errors import ErrorBody
from ingest.stats_legacy import DailyStats

_REF = "#/components/schemas/{name}"
NO_NUL_PATTERN = "^[^\\x00]*$"
# The years of ingest/stats_params.py's MIN_DAY..MAX_DAY (1970..9998).
STATS_YEARS = "^(19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"


class EventAccepted(msgspec.Struct):
    message: str


class Status(msgspec.Struct):
    status: str


def _json(ref: str, description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(name=ref)}}},
        **extra,
    }


def _error(description: str, *, retry: bool = False) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if retry:
        extra["headers"] = {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
        }
    return _json("ErrorBody", description, **extra)


_INGEST_ERRORS = {
    "400": _error(
        "Malformed JSON, or an invalid event (`field` names it; `code` is field_too_long for "
        "text past its limit in UTF-8 bytes, timestamp_too_old before MAX_PAST_DAYS, "
        "timestamp_expired for a day retention dropped)"
    ),
    "401": _error("Write keys are configured and none was sent"),
    "403": _error("The write key is not valid for a site of the request"),
    "408": _error("The body did not arrive within BODY_READ_TIMEOUT_S"),
    "413": _error("Body (as sent or decompressed), event or batch larger than the limits"),
    "415": _error("Unsupported Content-Encoding"),
    "503": _error("Kafka unreachable or the producer saturated", retry=True),
}

_KEY_PARAMETERS = [
    {"name": "X-Write-Key", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "write_key", "in": "query", "required": False, "schema": {"type": "string"}},
]


_SITE_PARAMETER = {
    "name": "site_id",
    "in": "query",
    "required": True,
    "description": "At most 128 bytes of UTF-8",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": NO_NUL_PATTERN},
}

_REALTIME = {
    "get": {
        "summary": "Visitors whose visit had an event in the last 5 minutes (a bare number)",
        "parameters": [_SITE_PARAMETER],
        "responses": {
            "200": {
                "description": "The count, as Plausible answers it: a JSON number",
                "content": {"application/json": {"schema": {"type": "integer", "minimum": 0}}},
            },
            "400": _error("A missing or invalid site_id"),
            "401": _error("The site has read keys and none was sent"),
            "403": _error("The read key is not valid for the site"),
            "429": _error("A rate limit is used up", retry=True),
            "503": _error(
                "PostgreSQL unreachable, the query timed out, or the database's schema is "
                "older than this API's",
                retry=True,
            ),
        },
    }
}


def _body(schema: dict[str, Any], *media_types: str) -> dict[str, Any]:
    return {"required": True, "content": {m: {"schema": schema} for m in media_types}}


def _describe_context(event_fields: dict[str, Any]) -> None:
    """The optional context fields' rules that msgspec's schema cannot state."""
    for name, limit in MAX_CONTEXT_BYTES:
        text = event_fields[name]["anyOf"][0]
        text["pattern"] = NO_NUL_PATTERN
        text["description"] = f"At most {limit} bytes in UTF-8; no NUL"
    event_fields["client_address"]["anyOf"][0] = {
        "anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}],
        "description": "A browser's address; honoured only with a valid write key (else 403)",
    }
    event_fields["user_agent"]["description"] = (
        "A browser's user agent; honoured only with a valid write key (else 403)"
    )
    props = event_fields["props"]["anyOf"][0]
    props["propertyNames"] = {
        "minLength": 1,
        "maxLength": MAX_PROP_KEY_BYTES,
        "pattern": NO_NUL_PATTERN,
    }
    props["additionalProperties"] = {
        "type": "string",
        "maxLength": MAX_PROP_VALUE_BYTES,
        "pattern": NO_NUL_PATTERN,
    }
    props["description"] = (
        f"Custom properties: keys of 1 to {MAX_PROP_KEY_BYTES} bytes, values of at most "
        f"{MAX_PROP_VALUE_BYTES} bytes in UTF-8; no NUL"
    )


def openapi_document(max_batch_events: int = 1000) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [IncomingEvent, BatchAccepted, ErrorBody, DailyStats, EventAccepted, Status],
        ref_template=_REF,
    )
    # PostgreSQL text cannot hold NUL, so the decoder refuses it: say so in the document.
    event_fields = components["IncomingEvent"]["properties"]
    # Lengths are limits in UTF-8 bytes, which JSON Schema cannot say: maxLength is the same
    # number, in characters (what an ASCII value has), and the description says the rest.
    for name, limit in MAX_FIELD_BYTES:
        event_fields[name]["pattern"] = NO_NUL_PATTERN
        event_fields[name]["description"] = f"At most {limit} bytes in UTF-8; no NUL"
    _describe_context(event_fields)
    event_fields["timestamp"]["description"] = (
        "When it happened; its UTC day must be within the server's MAX_PAST_DAYS (31 by "
        "default) and kept by its retention; times beyond MAX_FUTURE_S ahead become the "
        "receipt time"
    )
    event_ref = {"$ref": _REF.format(name="IncomingEvent")}
    events = {"type": "array", "items": event_ref, "minItems": 1, "maxItems": max_batch_events}
    batch_schema = {
        "oneOf": [
            events,
            {"type": "object", "properties": {"batch": events}, "required": ["batch"]},
        ]
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "analytics-ingest",
            "version": "1",
            "description": "Event ingest to Kafka, and stats from PostgreSQL rollups.",
        },
        "paths": {
            "/event": {
                "post": {
                    "summary": "Send one event; 202 once Kafka acknowledged it",
                    "parameters": _KEY_PARAMETERS,
                    "requestBody": _body(event_ref, "application/json", "text/plain"),
                    "responses": {
                        "202": _json("EventAccepted", "Stored in Kafka (acks=all)"),
                        **_INGEST_ERRORS,
                    },
                }
            },
            "/events": {
                "post": {
                    "summary": "Send a batch (array, {batch: [...]}, or NDJSON)",
                    "parameters": _KEY_PARAMETERS,
                    "requestBody": _body(batch_schema, "application/json", "text/plain"),
                    "responses": {
                        "202": _json("BatchAccepted", "Valid items stored in Kafka"),
                        **_INGEST_ERRORS,
                    },
                }
            },
            "/stats": {
                "get": {
                    "summary": "One site's views, unique users and top paths on a UTC day",
                    "parameters": [
                        _SITE_PARAMETER,
                        {
                            "name": "date",
                            "in": "query",
                            "required": True,
                            "description": "A day from 1970-01-01 to 9998-12-31",
                            "schema": {"type": "string", "format": "date", "pattern": STATS_YEARS},
                        },
                    ],
                    "responses": {
                        "200": _json("DailyStats", "The day's figures"),
                        "400": _error("A missing or invalid parameter"),
                        "503": _error(
                            "PostgreSQL unreachable, or its schema older than this API's",
                            retry=True,
                        ),
                    },
                }
            },
            "/api/v1/stats/realtime/visitors": _REALTIME,
            "/healthz": {
                "get": {
                    "summary": "The process is alive",
                    "responses": {"200": _json("Status", "Alive")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Kafka reachable and the producer not saturated",
                    "responses": {
                        "200": _json("Status", "Ready"),
                        "503": _error("Not ready", retry=True),
                    },
                }
            },
            "/readyz/browser": {
                "get": {
                    "summary": "Ready, and the browser route holds today's visitor salt",
                    "responses": {
                        "200": _json("Status", "Ready"),
                        "503": _error(
                            "Not ready (no VISITOR_KEY, no salt, another key)", retry=True
                        ),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {"schemas": components},
    }
