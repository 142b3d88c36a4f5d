"""``python -m modelcast.cli``: how the demo, the tests and the benchmarks start a command."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
