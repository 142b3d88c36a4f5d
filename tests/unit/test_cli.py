"""The command line without running a command: every (sub)command's help, the table of shared
flags and their environment variables, errors to exit codes, and what building the parser
loads."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from broker_admin.errors import BrokerAdminError
from coordinator.config import CoordinatorConfig
from coordinator.errors import CoordinatorError
from edge_node.errors import ActivationError, EdgeError
from modelcast.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    build_parser,
    fleet,
    main,
)
from modelcast.cli.common import COMMON_FLAGS, EnvFlag, load_creds, path_flag
from modelcast.cli.exits import UsageError, exit_rule
from modelcast.cli.services import TELEMETRY_INTERVAL, run_until_signal
from modelcast.errors import CommandError
from protocol import ModelcastError, ProtocolError, SequenceError
from runtime.errors import SetupError
from testkit.errors import TestkitError

REPO = Path(__file__).resolve().parents[2]


def _command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple]:
    """Every command and subcommand, as the words that name it."""
    paths = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                paths += _command_paths(child, (*path, name))
    return paths


COMMANDS = _command_paths(build_parser())


@pytest.fixture(autouse=True)
def _no_modelcast_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("MODELCAST_")]:
        monkeypatch.delenv(name)


def test_the_tree_has_every_command() -> None:
    top = {p[0] for p in COMMANDS if len(p) == 1}
    assert top == {
        *("keys", "coordinator", "edge", "release", "deploy", "rollout", "rollback", "config"),
        *("acceptance", "variants", "status", "telemetry", "broker", "creds", "models"),
        *("quantize", "prune", "embed", "demo", "dashboard", "simulate", "drift"),
    }
    assert ("rollout", "abort") in COMMANDS and ("creds", "list") in COMMANDS
    assert len(COMMANDS) == 43  # the root, 22 commands and 20 subcommands


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "modelcast")
def test_every_command_answers_help(path: tuple[str, ...], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(('modelcast', *path))}")
    assert "--help" in out


def test_env_flags_default_from_their_variable() -> None:
    db = COMMON_FLAGS["db"]
    assert db.default({}) is None and db.is_required({})
    assert db.default({"MODELCAST_DB": "/x.db"}) == Path("/x.db")
    assert not db.is_required({"MODELCAST_DB": "/x.db"})
    # an empty variable is no path, but the flag is no longer required (as before)
    assert db.default({"MODELCAST_DB": ""}) is None and not db.is_required({"MODELCAST_DB": ""})
    broker = COMMON_FLAGS["broker"]
    assert broker.default({}) == "mqtt://127.0.0.1:1883" and not broker.is_required({})
    assert broker.default({"MODELCAST_BROKER": "mqtts://h:1"}) == "mqtts://h:1"
    assert COMMON_FLAGS["fleet"].default({}) == "default"
    # eager: converted when the parser is built, an empty variable falls back
    assert TELEMETRY_INTERVAL.default({}) == 60.0
    assert TELEMETRY_INTERVAL.default({"MODELCAST_TELEMETRY_INTERVAL": ""}) == 60.0
    assert TELEMETRY_INTERVAL.default({"MODELCAST_TELEMETRY_INTERVAL": "2.5"}) == 2.5
    # lazy: the text is the default, argparse converts it (a bad value is a usage error)
    lazy = EnvFlag("--n", "a number", "N", type=float, fallback="30")
    assert lazy.default({}) == "30" and lazy.default({"N": "x"}) == "x"
    assert path_flag("--p", "a path", "P").default({"P": "a/b"}) == Path("a/b")


def test_env_flags_in_the_parser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(UsageError, match="required: --db"):
        build_parser().parse_args(["status"])
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert "coordinator SQLite database [env MODELCAST_DB]" in capsys.readouterr().out
    monkeypatch.setenv("MODELCAST_DB", str(tmp_path / "c.db"))
    monkeypatch.setenv("MODELCAST_FLEET", "plant-3")
    args = build_parser().parse_args(["status"])
    assert args.db == tmp_path / "c.db" and args.fleet == "plant-3"
    assert build_parser().parse_args(["status", "--db", "other.db"]).db == Path("other.db")
    # `broker` takes --state but does not require it, with or without the variable
    assert build_parser().parse_args(["broker"]).state is None
    monkeypatch.setenv("MODELCAST_RETENTION_DAYS", "x")
    with pytest.raises(UsageError, match="invalid float value: 'x'"):
        build_parser().parse_args(["coordinator", "--keys", "k"])


def test_creds_give_their_fleet_unless_one_was_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "d1.json"
    creds.write_text(
        json.dumps({"username": "d1", "password": "pw", "role": "device", "fleet": "plant-3"})
    )
    parser = build_parser()

    def edge_args(*extra: str) -> argparse.Namespace:
        argv = ["edge", "--data", "d", "--trust", "t", "--broker", "mqtts://h:8883", *extra]
        return parser.parse_args([*argv, "--creds", str(creds)])

    args = edge_args()
    assert load_creds(args, "device") is not None and args.fleet == "plant-3"
    with pytest.raises(SetupError, match="for fleet 'plant-3', not 'other'"):
        load_creds(edge_args("--fleet", "other"), "device")
    with pytest.raises(SetupError, match="for a device, not a integrator"):
        load_creds(edge_args(), "integrator")
    monkeypatch.setenv("MODELCAST_FLEET", "default")  # chosen, even if it is the default name
    with pytest.raises(SetupError, match="not 'default'"):
        load_creds(edge_args(), "device")
    assert load_creds(argparse.Namespace(creds=None), "device") is None


@pytest.mark.parametrize(
    "error",
    [
        ProtocolError("bad"),
        SetupError("bad"),
        CoordinatorError("bad"),
        EdgeError("bad"),
        ActivationError("bad"),
        BrokerAdminError("bad"),
        TestkitError("bad"),
        CommandError("bad"),
        ModelcastError("bad"),
        ValueError("bad"),
        FileNotFoundError("bad"),
        OSError("bad"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_error_root_fails_the_command(
    error: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    rule = exit_rule(error)
    assert rule is not None and rule.code == EXIT_FAILED

    def failing(_args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(fleet, "cmd_status", failing)
    assert main(["status", "--db", "x.db"]) == EXIT_FAILED
    assert capsys.readouterr().err == f"modelcast status: error: {error}\n"


def test_interrupt_and_bugs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def interrupted(_args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(fleet, "cmd_status", interrupted)
    assert main(["status", "--db", "x.db"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == ""

    def buggy(_args: argparse.Namespace) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(fleet, "cmd_status", buggy)
    with pytest.raises(RuntimeError, match="a bug"):  # not in the table: keeps its traceback
        main(["status", "--db", "x.db"])
    assert exit_rule(RuntimeError()) is None and exit_rule(SystemExit(0)) is None
    # a state object driven out of order is a bug too, though a ModelcastError
    assert exit_rule(SequenceError("commit before accept")) is None


def test_usage_errors_exit_2_with_argparse_text(capsys: pytest.CaptureFixture) -> None:
    assert main(["rollout", "start", "m@1", "--stages", "5,x", "--db", "d"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: modelcast rollout start [-h]")
    assert err.endswith(
        "modelcast rollout start: error: argument --stages: expected percentages like "
        "5,25,100, got '5,x'\n"
    )
    assert main(["no-such-command"]) == EXIT_USAGE
    assert "modelcast: error: argument COMMAND: invalid choice: 'no-such-command'" in (
        capsys.readouterr().err
    )
    assert main(["keys"]) == EXIT_USAGE
    assert "the following arguments are required: ACTION" in capsys.readouterr().err


def test_a_failing_command_says_why(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["status", "--db", str(tmp_path / "none.db")]) == EXIT_FAILED
    assert capsys.readouterr().err == (
        f"modelcast status: error: no coordinator database at {tmp_path / 'none.db'}\n"
    )
    assert main(["deploy", "m-1", "--db", str(tmp_path / "c.db")]) == EXIT_FAILED
    assert "expected NAME@VERSION, got 'm-1'" in capsys.readouterr().err


def test_the_coordinators_rate_limits_by_flag_and_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    base = ["coordinator", "--keys", "k", "--db", str(tmp_path / "c.db")]
    args = build_parser().parse_args(base)
    defaults = CoordinatorConfig(broker_url="mqtt://h:1", db_path=Path("c.db"), keydir=Path("k"))
    limits = ("request_rate", "request_burst", "report_rate", "report_burst")
    assert [getattr(args, n) for n in limits] == [getattr(defaults, n) for n in limits]
    monkeypatch.setenv("MODELCAST_REPORT_RATE", "7")
    monkeypatch.setenv("MODELCAST_REPORT_BURST", "70")
    args = build_parser().parse_args(base)
    assert (args.report_rate, args.report_burst) == (7.0, 70.0)
    args = build_parser().parse_args([*base, "--report-rate", "9", "--report-burst", "90"])
    assert (args.report_rate, args.report_burst) == (9.0, 90.0)
    assert main([*base, "--report-burst", "0.5"]) == EXIT_FAILED  # refused before it starts
    assert "need --report-rate > 0 and --report-burst >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, EXIT_OK), (signal.SIGINT, 130)])
def test_services_run_until_a_signal(signum: int, code: int) -> None:
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stopped = threading.Event()

    def run(stop: threading.Event) -> None:
        os.kill(os.getpid(), signum)
        if stop.wait(timeout=10):
            stopped.set()

    try:
        assert run_until_signal(run) == code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert stopped.is_set()


def test_building_the_parser_loads_no_service_or_model_code() -> None:
    """The command starts fast, and ``modelcast edge`` loads only what a device runs: the
    parser imports none of the layers or libraries its handlers import when they run."""
    code = (
        "import sys\n"
        "from modelcast.cli import build_parser\n"
        "build_parser()\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    loaded = set(out)
    assert {"modelcast", "protocol", "runtime"} <= loaded
    heavy = {"coordinator", "edge_node", "broker_admin", "testkit", "onnx", "onnxruntime"}
    assert not heavy & loaded, heavy & loaded
    assert not {"numpy", "paho", "sqlite_utils", "sqlite3"} & loaded


def test_python_dash_m_runs_the_same_main() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelcast.cli", "keys"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == EXIT_USAGE
    assert "modelcast keys: error: the following arguments are required: ACTION" in result.stderr
