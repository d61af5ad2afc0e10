"""Reading request bodies: size limits, gzip, and splitting a batch into its items.

Limits apply to the decompressed size: a gzip body is inflated at most `max_bytes + 1` bytes
at a time, so a small body that would inflate to gigabytes (a "gzip bomb") is refused with
413 after inflating just past the limit. The body's media type does not matter for `/event`
(`text/plain` is what `navigator.sendBeacon` sends, parsed as JSON like `application/json`);
for `/events`, `application/x-ndjson` means one event per line, anything else one JSON
document: an array of events, or an object `{"batch": [...]}`.
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
    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
        raise _too_large(max_bytes)
    if encoding == "identity":
        return await _read_plain(chunks, max_bytes)
    return await _inflate(chunks, max_bytes)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The body is larger than {max_bytes} bytes (after decompression)")


async def _read_plain(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        parts.append(chunk)
    return b"".join(parts)


async def _inflate(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)  # gzip framing only
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in chunks:
            data = chunk
            while data:
                # Never inflate more than one byte past the limit, whatever the ratio.
                out = inflater.decompress(data, max_bytes - size + 1)
                size += len(out)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                parts.append(out)
                data = inflater.unconsumed_tail
                if inflater.eof:
                    break
        parts.append(inflater.flush())
    except zlib.error as exc:
        raise MalformedJson(f"The gzip body is corrupt: {exc}", field="Content-Encoding") from None
    if not inflater.eof:
        raise MalformedJson("The gzip body is truncated", field="Content-Encoding")
    body = b"".join(parts)
    if len(body) > max_bytes:
        raise _too_large(max_bytes)
    return body


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
    if len(items) > max_events:
        raise PayloadTooLarge(
            f"The batch holds {len(items)} events; at most {max_events} are accepted",
            field="batch",
        )
    return items
