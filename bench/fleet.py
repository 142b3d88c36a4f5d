"""``fleet_*``: modelcast at fleet scale, with simulated devices (``modelcast simulate``'s
``SimulatedFleet``) on a broker with the large-fleet profile (``broker_config/large.conf``).

- ``fleet_devices``: devices in the run (1000, quick and full);
- ``fleet_delivery_ratio``: plain paho's time to publish the model's bytes once (QoS 1, the
  release's chunk size) to N plain subscribers over as many processes (``fleet_baseline``),
  divided by modelcast's, from the deploy until every device verified the release;
- ``fleet_publish_ratio``: chunk bytes the coordinator published for that delivery (all devices
  online before the deploy) over the model size;
- ``fleet_telemetry_loss``: 1 - stored / made, N devices sampling every second for 60 s
  (quick: 20 s);
- ``fleet_dashboard_ms``: the dashboard's fleet page with all N devices, server time;
- ``fleet_status_ms``: ``modelcast status`` and ``status --json`` at N devices, the slower;
- ``fleet_rollout_stage_error``: a 5 % stage at N devices, |selected - 5 % of N| / N;
- ``fleet_coordinator_rss_mb``: this process, which runs the coordinator, at N devices (the
  harness's own share is in the details); ``fleet_broker_rss_mb``: the broker's peak RSS over a
  delivery to the N devices (its RSS with them connected and idle is in the details);
- full run only, ``fleet_idle_10k_*``: 10,000 devices connected, a sample a minute: RSS and CPU
  of the coordinator (a ``modelcast coordinator`` process), the simulator and the broker, and
  ``modelcast status`` at that size.

The simulator hashes each release's bytes once per process and compares later devices' bytes
with them (``modelcast simulate``'s default, docs/SCALE.md); ``MODELCAST_BENCH_FLEET_VERIFY_EACH=1``
makes every simulated device hash everything, as real edges do each on its own CPU.

See docs/SCALE.md for the figures and what breaks first beyond them.
"""

from __future__ import annotations

import os
from typing import Any

from broker_admin.mosquitto import BROKER_CONFIG_DIR
from modelcast.simulate.fdlimit import raise_soft_limit
from testkit.local_broker import LocalBroker

from .common import MB, Bench, BenchError
from .fleet_phases import Rig, delivery_phase, idle_phase, telemetry_phase

LARGE_CONF = BROKER_CONFIG_DIR / "large.conf"
DEVICES = 1000
IDLE_DEVICES = 10_000
#: overrides DEVICES (and IDLE_DEVICES, ten times it), e.g. for a smoke test or a push to the limit
DEVICES_ENV = "MODELCAST_BENCH_FLEET_DEVICES"
#: set (to anything but 0): every simulated device hashes every chunk and its whole file, as a
#: real edge does on its own CPU; unset, each simulator process hashes a release's bytes once
#: and compares later devices' bytes with them (``modelcast simulate --verify-each``)
VERIFY_EACH_ENV = "MODELCAST_BENCH_FLEET_VERIFY_EACH"


def verify_each() -> bool:
    return os.environ.get(VERIFY_EACH_ENV, "") not in ("", "0")


def devices() -> int:
    text = os.environ.get(DEVICES_ENV, "")
    if not text:
        return DEVICES
    if not text.isdigit() or int(text) < 1:
        raise BenchError(f"{DEVICES_ENV}={text!r}: a number of devices >= 1")
    return int(text)


def processes() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def run(b: Bench) -> dict[str, Any]:
    size = b.size(2, 8)
    n, p, each = devices(), processes(), verify_each()
    raise_soft_limit()  # the broker, started below, inherits it: one descriptor per client
    mode = "every device hashes" if each else "hashed once per simulator process"
    b.progress(f"fleet: {n} devices on {p} processes, {size / MB:.0f} MB releases, {mode}")
    with LocalBroker(extra_conf=LARGE_CONF.read_text(), workdir=b.dir("broker-fleet")) as broker:
        assert broker.pid is not None
        rig = Rig(b, broker.url, broker.pid, n, p, each)
        delivery = delivery_phase(rig, size)
        telemetry = telemetry_phase(rig, b.pick(20.0, 60.0))
    idle = None
    if not b.quick:  # on a broker of its own: its memory is the idle fleet's, not a delivery's
        with LocalBroker(extra_conf=LARGE_CONF.read_text(), workdir=b.dir("broker-idle")) as broker:
            assert broker.pid is not None
            rig = Rig(b, broker.url, broker.pid, n, p, each)
            idle = idle_phase(rig, IDLE_DEVICES if n == DEVICES else 10 * n, 60.0)
    status = delivery["status_ms"]
    out: dict[str, Any] = {
        "fleet_devices": n,
        "fleet_delivery_ratio": round(delivery["baseline_s"] / delivery["modelcast_s"], 3),
        "fleet_publish_ratio": delivery["publish_ratio"],
        "fleet_telemetry_loss": telemetry["loss"],
        "fleet_status_ms": max(status.values()),
        "fleet_dashboard_ms": delivery["dashboard"]["page_ms"],
        "fleet_rollout_stage_error": delivery["stage"]["error_fraction"],
        "fleet_coordinator_rss_mb": delivery["rss"]["coordinator_process_mb"],
        "fleet_broker_rss_mb": delivery["broker_peak_mb"],
    }
    if idle is not None:
        out.update(
            {
                f"fleet_idle_10k_{who}_{what}": idle[key][who]
                for who in ("coordinator", "simulator", "broker")
                for what, key in (("rss_mb", "rss_mb"), ("cpu_pct", "cpu_pct"))
            }
        )
        out["fleet_idle_10k_status_ms"] = max(idle["status_ms"].values())
    out["fleet"] = {
        "devices": n,
        "processes": p,
        "broker_profile": "broker_config/large.conf",
        "verification": mode,
        "delivery": delivery,
        "telemetry": telemetry,
        "idle": idle,
    }
    return out
