"""modelcast benchmarks: ``python -m bench [--quick] [--json FILE] [--only NAME[,NAME]]``.

One module per figure (``run(bench) -> {key: value, detail_name: {...}}``); ``common`` holds the
broker, keys, fleets, edge processes and /proc readers they share; ``charts`` draws the PNGs of
docs/BENCHMARKS.md from a JSON result. See docs/BENCHMARKS.md.
"""
