"""A short structure-aware fuzz run over real archives (the long run: ``python -m benchmarks.fuzz_archives``)."""

from __future__ import annotations

import os

from benchmarks.fuzz_archives import run

MUTANTS = int(os.environ.get("AEZIP_FUZZ_MUTANTS", "150"))


def test_mutated_archives_are_refused_cleanly_or_restored_exactly() -> None:
    result = run(MUTANTS, seed=7, time_limit=20.0)
    assert result.failures == [], "\n".join(result.failures[:5])
    assert result.mutants == MUTANTS
    assert result.refused > MUTANTS // 4 and result.accepted > 0  # both outcomes are reached
