"""Bit rot on a device's disk, made by hand: bytes of a file flipped in place."""

from __future__ import annotations

from pathlib import Path


def flip(path: Path, offset: int, n: int = 8) -> None:
    """Invert ``n`` bytes of ``path`` at ``offset``, in place (the file keeps its size)."""
    with path.open("r+b") as f:
        f.seek(offset)
        data = f.read(n)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))
