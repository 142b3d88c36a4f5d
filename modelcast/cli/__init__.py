"""The ``modelcast`` command. Every setting is a flag, and most have an environment variable.

One module per command group, each with its ``add_commands(sub)`` beside its handlers:
``keys``, ``services`` (coordinator, edge), ``releases`` (release, deploy), ``rollouts``
(rollout, rollback), ``fleet`` (config, acceptance, variants, status), ``telemetry``,
``broker`` (broker, creds), ``models`` (models build, quantize, embed), ``demo`` and
``simulate`` (virtual devices, ``modelcast.simulate``). Beside
them: ``common`` (the parser class, the table of shared flags and their environment variables),
``parsing`` (what operators type), ``exits`` (errors to exit codes) and ``entry`` (the parser
and ``main``).

Exit codes: 0 success; 1 the operation failed (a check, a file, the registry said no);
2 bad usage (argparse); 130 interrupted.

Handlers import what they need when they run: building the parser loads none of
``coordinator``, ``edge_node``, ``broker_admin``, ``testkit`` or the model tooling, so the
command starts fast and ``modelcast edge`` loads only what a device runs.
"""

from __future__ import annotations

from .entry import build_parser, main
from .exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]
