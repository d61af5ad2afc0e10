"""The slots of statements over raw events (ingest/stats_run.py): taken, refused, given back."""

from __future__ import annotations

import pytest

from ingest.stats_plan_parts import Statement
from ingest.stats_run import RawReads, RawReadsBusy, is_raw


def test_slots_are_refused_past_the_limit_and_given_back() -> None:
    reads = RawReads(2, 1000)
    with reads.slot(), reads.slot():
        assert reads.running == 2
        with pytest.raises(RawReadsBusy, match="2 of 2"), reads.slot():
            pass
        assert reads.running == 2
    assert reads.running == 0
    with reads.slot():
        assert reads.running == 1


def test_a_slot_is_given_back_when_its_statement_fails() -> None:
    reads = RawReads(1, 0)
    with pytest.raises(RuntimeError), reads.slot():
        raise RuntimeError
    assert reads.running == 0


@pytest.mark.parametrize(
    ("form", "raw"),
    [("raw totals", True), ("raw series", True), ("raw ranking", True),
     ("raw props ranking", True),  # the props branch's raw form
     ("totals", False), ("context ranking", False), ("filtered series", False)],
)  # fmt: skip
def test_raw_forms(form: str, raw: bool) -> None:
    assert is_raw(Statement(form, ())) is raw  # type: ignore[arg-type]
