"""Reading request bodies: size limits, gzip, and splitting a batch into its items.

Limits apply to the body as received and to the decompressed size, with the same number of
bytes: a gzip body is inflated at most `max_bytes + 1` bytes at a time, so a small body that
would inflate to gigabytes (a "gzip bomb") is refused with 413 after inflating just past the
limit, and a compressed body larger than the limit (JSON compresses, so only padding does
that, e.g. empty gzip members by the million) is refused as it arrives. Every gzip member is
read (RFC 1952 allows several, one after the other); bytes after the last member that do not
form another one are refused, as is a member cut short. A body is read whole or refused.

The body's media type does not matter for `/event` (`text/plain` is what
`navigator.sendBeacon` sends, parsed as JSON like `application/json`); for `/events`,
`application/x-ndjson` means one event per line, anything else one JSON document: an array
of events, or an object `{"batch": [...]}`. JSON nested thousands deep is refused (400).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import msgspec

from ingest.errors import MalformedJson, PayloadTooLarge, UnsupportedMediaType

NDJSON_MEDIA_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
_WHITESPACE = b" \t\r\n"


async def read_body(
    content_length: str | None,
    content_encoding: str | None,
    chunks: AsyncIterator[bytes],
    *,
    max_bytes: int,
) -> bytes:
    """The body, inflated if gzip; raises PayloadTooLarge past `max_bytes` (decompressed),
    UnsupportedMediaType for an encoding other than gzip/identity, MalformedJson for a
    corrupt gzip stream. Bodies that declare a length beyond the limit are refused unread."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported (use gzip or none)",
            field="Content-Encoding",
        )
    compressed = encoding != "identity"
    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
        raise PayloadTooLarge(
            f"The {_body(compressed)} is larger than {max_bytes} bytes as received "
            f"(Content-Length: {int(content_length)})",
            field="Content-Length",
        )
    if not compressed:
        return await _read_plain(chunks, max_bytes)
    return await _inflate(chunks, max_bytes)


def _body(compressed: bool) -> str:
    return "compressed body" if compressed else "body"


def _received_too_large(max_bytes: int, *, compressed: bool) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The {_body(compressed)} is larger than {max_bytes} bytes as received",
        field="Content-Encoding" if compressed else None,
    )


def _inflated_too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The body is larger than {max_bytes} bytes after decompression",
        field="Content-Encoding",
    )


async def _read_plain(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise _received_too_large(max_bytes, compressed=False)
        parts.append(chunk)
    return b"".join(parts)


async def _inflate(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)  # gzip framing only
    parts: list[bytes] = []
    size = 0
    received = 0
    later_member = False  # whether the bytes being read follow a complete member
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > max_bytes:
                raise _received_too_large(max_bytes, compressed=True)
            data = chunk
            while data:
                if inflater.eof:  # the bytes after a member must be another member
                    inflater = zlib.decompressobj(wbits=31)
                    later_member = True
                # Never inflate more than one byte past the limit, whatever the ratio.
                out = inflater.decompress(data, max_bytes - size + 1)
                size += len(out)
                if size > max_bytes:
                    raise _inflated_too_large(max_bytes)
                parts.append(out)
                data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    except zlib.error as exc:
        raise MalformedJson(
            _gzip_problem(later_member, str(exc)), field="Content-Encoding"
        ) from None
    if not inflater.eof:
        raise MalformedJson(_gzip_problem(later_member, "truncated"), field="Content-Encoding")
    return b"".join(parts)


def _gzip_problem(later_member: bool, detail: str) -> str:
    if later_member:
        return (
            "The gzip body has bytes after its first member that do not form a complete gzip "
            f"member ({detail})"
        )
    return f"The gzip body is corrupt or truncated ({detail})"


class _Envelope(msgspec.Struct):
    batch: list[msgspec.Raw]


_array_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_envelope_decoder = msgspec.json.Decoder(_Envelope)


def split_batch(body: bytes, *, ndjson: bool, max_events: int) -> list[msgspec.Raw | bytes]:
    """The raw items of a batch, not yet validated; raises MalformedJson when the body is not
    an array, an object with `batch`, or NDJSON, and PayloadTooLarge past `max_events`."""
    items: list[msgspec.Raw | bytes]
    if ndjson:
        items = [line for line in body.split(b"\n") if line.strip(_WHITESPACE)]
    else:
        start = body.lstrip(_WHITESPACE)[:1]
        try:
            if start == b"{":
                items = list(_envelope_decoder.decode(body).batch)
            else:
                items = list(_array_decoder.decode(body))
        except msgspec.ValidationError as exc:
            raise MalformedJson(
                f'A batch is a JSON array of events or {{"batch": [...]}}: {exc}', field="batch"
            ) from None
        except msgspec.DecodeError as exc:
            raise MalformedJson(f"Malformed JSON: {exc}") from None
        except RecursionError:  # `[[[[...` thousands deep exhausts msgspec's stack
            raise MalformedJson(
                "Malformed JSON: nested too deeply (a batch is an array of flat objects)",
                field="batch",
            ) from None
    if len(items) > max_events:
        raise PayloadTooLarge(
            f"The batch holds {len(items)} events; at most {max_events} are accepted",
            field="batch",
        )
    return items
