"""Admitting exports and sending their archives (ingest/export.py), so that no client can keep
an export's resources for long: pure but for the send.

An export is admitted by ExportSlots: at most `max_building` at once read the database (each
on its own connection and snapshot), at most `max_sending` built archives wait for their
clients, and each client (its address, and its read key when it gives one) runs one export at
a time. A built archive is sent by ArchiveResponse under one deadline for the whole body; a
client that has not read it all by then is dropped, and its slot is free again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import weakref
from collections.abc import Callable
from typing import IO

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ingest.errors import RateLimited, ServiceUnavailable

log = logging.getLogger(__name__)

ZIP_MEDIA_TYPE = "application/zip"
SEND_CHUNK_BYTES = 256 * 1024


class ExportBusy(ServiceUnavailable):
    """This process builds or sends as many exports as its settings allow."""

    code = "export_busy"


class ExportInProgress(RateLimited):
    """The client (its address or its read key) has an export running already."""

    code = "export_in_progress"


def owners_of(client: str, token: str | None) -> tuple[str, ...]:
    """Who an export counts against: the client's address bucket, and the read key it gave
    (digested: the map of running exports holds no key)."""
    if not token:
        return (f"client:{client}",)
    return (f"client:{client}", "key:" + hashlib.sha256(token.encode()).hexdigest())


class Ticket:
    """One admitted export: building, then sending until a deadline, then released."""

    def __init__(self, slots: ExportSlots, owners: tuple[str, ...]) -> None:
        self._slots = slots
        self.owners = owners
        self.deadline: float | None = None  # monotonic, once sending
        self.released = False

    def sending(self, deadline: float) -> None:
        """The archive is built (its database connection closed): from now on it counts as
        sent, until `deadline`. Raises ExportBusy when `max_sending` archives are already
        being sent (they filled while this one was built); the ticket is then still building,
        for the caller to release."""
        if self._slots.sending >= self._slots.max_sending:
            raise ExportBusy(
                f"this API is already sending {self._slots.sending} exports; retry later",
                retry_after_s=self._slots.retry_after_s,
            )
        self.deadline = deadline
        self._slots.building -= 1
        self._slots.sending += 1

    def release(self) -> None:
        """Frees the export's slot and its owners; idempotent."""
        if self.released:
            return
        self.released = True
        if self.deadline is None:
            self._slots.building -= 1
        else:
            self._slots.sending -= 1
        for owner in self.owners:
            self._slots.owners.pop(owner, None)


class ExportSlots:
    """The exports of one API process (see the module's docstring)."""

    def __init__(
        self,
        max_building: int,
        max_sending: int,
        retry_after_s: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_building = max_building
        self.max_sending = max_sending
        self.retry_after_s = retry_after_s
        self._clock = clock
        self.building = 0
        self.sending = 0
        self.owners: dict[str, Ticket] = {}

    def admit(self, owners: tuple[str, ...]) -> Ticket:
        """A ticket for a new export of `owners`; raises ExportInProgress (429) when one of
        them has an export running, ExportBusy (503) when every slot is taken."""
        for owner in owners:
            running = self.owners.get(owner)
            if running is not None:
                what = "read key" if owner.startswith("key:") else "client address"
                raise ExportInProgress(
                    f"an export for this {what} is still running; one export at a time per "
                    "client: retry when it is done",
                    retry_after_s=self._retry_after(running),
                )
        if self.building >= self.max_building or self.sending >= self.max_sending:
            raise ExportBusy(
                f"this API is already building {self.building} and sending {self.sending} "
                "exports; retry later",
                retry_after_s=self.retry_after_s,
            )
        ticket = Ticket(self, owners)
        self.building += 1
        for owner in owners:
            self.owners[owner] = ticket
        return ticket

    def _retry_after(self, running: Ticket) -> int:
        if running.deadline is None:
            return self.retry_after_s
        return max(1, math.ceil(running.deadline - self._clock()))


def send_deadline_s(size: int, base_s: float, min_bytes_per_s: int) -> float:
    """How long a client may take to read an archive of `size` bytes."""
    return base_s + size / min_bytes_per_s


def _end(archive: IO[bytes], on_end: Callable[[], None]) -> None:
    archive.close()
    on_end()


class ArchiveResponse(Response):
    """A built archive (a file positioned at its start) sent in chunks; the client must have
    taken the whole body within `deadline_s` of the start, or the response stops there
    unfinished (the server then closes the connection). The file is closed and `on_end`
    called however the response ends, and also if it is never sent (the request cancelled
    between the endpoint's return and the response's start): then when it is collected."""

    def __init__(
        self,
        archive: IO[bytes],
        name: str,
        deadline_s: float,
        on_end: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        size = archive.seek(0, 2)
        archive.seek(0)
        super().__init__(
            media_type=ZIP_MEDIA_TYPE,
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Content-Length": str(size),
            },
        )
        self._archive = archive
        self._deadline_s = deadline_s
        self._ended = weakref.finalize(self, _end, archive, on_end)
        self._clock = clock
        self.size = size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Waits for the client to take each chunk, until the deadline; returns when the body
        is sent, or unfinished when the deadline passed."""
        try:
            deadline = self._clock() + self._deadline_s
            start = {"type": "http.response.start", "status": self.status_code}
            await send({**start, "headers": self.raw_headers})
            # Read in the event loop, as it was written: a local temporary file (or memory),
            # one chunk at a time, never waiting on the client.
            while scope.get("method") != "HEAD" and (chunk := self._archive.read(SEND_CHUNK_BYTES)):
                message = {"type": "http.response.body", "body": chunk, "more_body": True}
                await asyncio.wait_for(send(message), max(0.0, deadline - self._clock()))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            log.warning(
                "export: the client did not read the %d-byte archive within %.1f s; dropped",
                self.size,
                self._deadline_s,
            )
        finally:
            self._ended()
