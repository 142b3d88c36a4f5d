"""The inner loop of applying a delta (``protocol.delta.apply_delta``), in numpy.

The protocol package is pure Python (no numpy, by contract), and its own ``unplane`` does the
byte-plane interleave with slice assignments and the XOR with Python integers: correct, and
about 0.6 s per 86 MB, most of an apply. This does both in one numpy pass, several times
faster; both roles pass it to ``apply_delta`` (the edge when it applies, the coordinator when it
checks a delta it made).
"""

from __future__ import annotations

import numpy as np


def unplane(planes: bytes, base: bytes | None, width: int) -> bytes:
    """The target bytes of one XOR (``base`` given) or literal record from its ``width`` byte
    planes (see ``protocol.delta.to_planes``)."""
    data = np.frombuffer(planes, dtype=np.uint8)
    if width > 1:
        # one plane into each column: measured 3x faster than a transposed copy
        rows = data.reshape(width, -1)
        out = np.empty((rows.shape[1], width), dtype=np.uint8)
        for i in range(width):
            out[:, i] = rows[i]
        data = out.reshape(-1)
    if base is None:
        return data.tobytes()
    return np.bitwise_xor(data, np.frombuffer(base, dtype=np.uint8)).tobytes()
