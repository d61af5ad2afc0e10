"""Narrowing a rejected batch down to the events the database refuses, by bisection.

Pure logic: the probe is injected. A probe writes a subset of the batch's rows (in the
consumer, inside a savepoint of the batch's transaction) and either keeps it and answers
None, or leaves nothing behind and answers why it was refused. A refused subset of one row
is a culprit; a refused larger subset is split in halves, each probed in turn.

Every row is written by exactly one successful probe, or named a culprit. With k culprits
among n rows, a pass makes at most 1 + 2·k·⌈log2 n⌉ probes: one event cannot hold a
partition still for longer than that.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

Refusal = TypeVar("Refusal")


async def bisect(
    rows: Sequence[int],
    probe: Callable[[list[int]], Awaitable[Refusal | None]],
) -> list[tuple[int, Refusal]]:
    """Probes `rows` (indices into the batch), splitting refused subsets until single rows.

    Waits for every probe in turn (they share one transaction). Returns the culprits in
    batch order, each with the refusal its own probe got; whatever a probe raises (the
    database went away) propagates and ends the pass.
    """
    culprits: list[tuple[int, Refusal]] = []
    pending: list[list[int]] = [list(rows)] if rows else []
    while pending:
        part = pending.pop()
        refusal = await probe(part)
        if refusal is None:
            continue
        if len(part) == 1:
            culprits.append((part[0], refusal))
            continue
        middle = len(part) // 2
        # Last in, first out: the left half is probed first, so culprits come out in order.
        pending.append(part[middle:])
        pending.append(part[:middle])
    return culprits
