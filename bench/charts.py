"""``python -m bench.charts [--json FILE] [--out DIR]``: the two charts of docs/BENCHMARKS.md,
drawn from a result of ``python -m bench`` that holds the sweeps (a full run, or
``--only chunk_sweep,cut_sweep``).

* ``bench-chunk-size.png``: delivery throughput of modelcast and of plain paho against the chunk
  size, and their ratio;
* ``bench-cuts.png``: bytes that crossed the edge's link over the model size, against how often
  the link is cut.

matplotlib is an optional dependency: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_JSON = Path("bench/out/full.json")
DEFAULT_OUT = Path("docs")
CHUNK_PNG = "bench-chunk-size.png"
CUTS_PNG = "bench-cuts.png"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            "bench.charts needs matplotlib: pip install -e '.[bench]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def chunk_chart(sweep: dict[str, Any], path: Path, stamp: str) -> None:
    plt = _pyplot()
    points = sweep["points"]
    kib = [p["chunk_size"] // 1024 for p in points]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    top.plot(kib, [p["raw_mb_s"] for p in points], "o--", color="#888888", label="plain paho")
    top.plot(kib, [p["modelcast_mb_s"] for p in points], "o-", color="#1f6fb4", label="modelcast")
    top.set_ylabel("throughput (MB/s)")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    top.legend(loc="lower right")
    top.set_title(
        f"Delivery of a {sweep['size_mb']:.0f} MB model to one edge, by chunk size\n"
        "(modelcast: signed, verified, written, whole-file sha256; paho: bytes through, unread)",
        fontsize=10,
    )
    ratios = [p["ratio"] for p in points]
    bottom.plot(kib, ratios, "o-", color="#2a9d5c")
    for x, y in zip(kib, ratios, strict=True):
        bottom.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center")
    bottom.axhline(0.6, color="#c0392b", linestyle=":", label="target 0.6")
    bottom.set_ylabel("modelcast / paho")
    bottom.set_ylim(0, max(1.05, max(ratios) + 0.15))
    bottom.set_xscale("log", base=2)
    bottom.set_xticks(kib)
    bottom.set_xticklabels([str(k) for k in kib])
    bottom.set_xlabel("chunk size (KiB)")
    bottom.grid(alpha=0.3)
    bottom.legend(loc="lower right")
    fig.text(0.99, 0.005, stamp, ha="right", va="bottom", fontsize=7, color="#666666")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cuts_chart(sweep: dict[str, Any], path: Path, stamp: str) -> None:
    plt = _pyplot()
    points = sweep["points"]
    labels = [p["label"] for p in points]
    ratios = [p["ratio"] for p in points]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    bars = ax.bar(labels, ratios, color="#1f6fb4", width=0.55)
    for bar, p in zip(bars, points, strict=True):
        ax.annotate(
            f"{p['ratio']:.3f}\n{p['cuts']} cuts, {p['seconds']:.0f} s",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=8,
        )
    ax.axhline(1.0, color="#444444", linewidth=0.8)
    ax.axhline(1.3, color="#c0392b", linestyle=":", label="target 1.3")
    ax.set_ylim(0, max(1.5, max(ratios) + 0.25))
    ax.set_xlabel("the link is cut every ... (each connection lives a random time in the range)")
    ax.set_ylabel("bytes on the link / model size")
    rate = sweep["rate_bytes_per_s"] / (1 << 20)
    ax.set_title(
        f"Bytes on an edge's link for a {sweep['size_mb']:.0f} MB model over a "
        f"{rate:.0f} MiB/s link\n(fault proxy, both directions; reconnect after 0.2-1 s)",
        fontsize=10,
    )
    ax.legend(loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.text(0.99, 0.005, stamp, ha="right", va="bottom", fontsize=7, color="#666666")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.charts", description=__doc__)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="a python -m bench result")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the PNGs")
    args = parser.parse_args(argv)
    doc = json.loads(args.json.read_text())
    details = doc.get("details", {})
    machine = doc.get("machine", {})
    stamp = (
        f"{doc.get('started', '?')}, {machine.get('nproc', '?')} cores "
        f"({machine.get('cpu', '?')}), {machine.get('mosquitto', '?')}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    wrote = []
    if "chunk_sweep" in details:
        chunk_chart(details["chunk_sweep"], args.out / CHUNK_PNG, stamp)
        wrote.append(CHUNK_PNG)
    if "cut_sweep" in details:
        cuts_chart(details["cut_sweep"], args.out / CUTS_PNG, stamp)
        wrote.append(CUTS_PNG)
    if not wrote:
        print(
            f"{args.json} has no chunk_sweep or cut_sweep: run python -m bench (full) or "
            "--only chunk_sweep,cut_sweep",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {', '.join(str(args.out / w) for w in wrote)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
