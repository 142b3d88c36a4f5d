"""The inner loop of applying a delta (``protocol.delta.apply_delta``), in numpy.

The protocol package is pure Python (no numpy, by contract), and its own ``unplane`` does the
byte-plane interleave with slice assignments and the XOR with Python integers: correct, and
about 0.6 s per 86 MB, most of an apply. This does both in one numpy pass, several times
faster; both roles pass it to ``apply_delta`` (the edge when it applies, the coordinator when it
checks a delta it made).
"""

from __future__ import annotations

import numpy as np


def unplane(planes: bytes, base: bytes | None, width: int) -> bytes | memoryview:
    """The target bytes of one XOR (``base`` given) or literal record from its ``width`` byte
    planes (see ``protocol.delta.to_planes``): a view of one array, interleaved and XORed in
    place (a new array for the XOR and a ``tobytes`` copy made it 3x slower: 4.7 ms per 4 MB
    against 1.6, most of it the first touch of fresh memory)."""
    data = np.frombuffer(planes, dtype=np.uint8)
    if width > 1:
        # one plane into each column: measured 3x faster than a transposed copy
        rows = data.reshape(width, -1)
        out = np.empty((rows.shape[1], width), dtype=np.uint8)
        for i in range(width):
            out[:, i] = rows[i]
        data = out.reshape(-1)
    elif base is None:
        return planes  # one plane: the bytes themselves
    else:
        data = data.copy()  # the planes' buffer is read-only
    if base is not None:
        np.bitwise_xor(data, np.frombuffer(base, dtype=np.uint8), out=data)
    return data.data
