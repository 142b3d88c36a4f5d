"""Compact sets of chunk indices as sorted ``[start, count]`` runs (what requests carry)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def to_ranges(indices: Iterable[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return runs


def iter_ranges(runs: Iterable[tuple[int, int] | list[int]]) -> Iterator[int]:
    for start, count in runs:
        yield from range(start, start + count)
