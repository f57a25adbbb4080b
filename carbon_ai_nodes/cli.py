"""The ``carbon-ai`` command. Each subcommand lives in ``carbon_ai_nodes/commands/<name>.py`` and exposes
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Command modules keep their top-level
imports light (heavy ones go inside ``run``) so ``carbon-ai --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from carbon_ai_nodes import __version__
from carbon_ai_nodes.common.errors import CarbonAIError
from carbon_ai_nodes.graph.stop_signals import StopSignals, dump_stacks_on_sigusr1

# Subcommand name -> module under carbon_ai_nodes.commands, in the order --help lists them.
SUBCOMMANDS = {
    "demo": "demo",
    "run": "run",
    "estimate": "estimate",
    "plan": "plan",
    "schedule": "schedule",
    "uplink-receive": "uplink_receive",
    "report": "report",
    "model": "model",
    "bench": "bench",
    "params": "params",
    "doctor": "doctor",
}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (and exit status 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every subcommand whose module is present."""
    parser = _Parser(prog="carbon-ai", description="carbon_ai: on-machine CO2 reduction for vehicles and machinery.")
    parser.add_argument("--version", action="version", version=f"carbon-ai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(f"carbon_ai_nodes.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"carbon_ai_nodes.commands.{module_name}":
                continue  # not part of this build
            raise
        cmd = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``carbon-ai``; returns the exit status (2 = usage error, 1 = failure)."""
    args = build_parser().parse_args(argv)
    dump_stacks_on_sigusr1()  # `kill -USR1` shows where a command that does not stop is
    try:
        with StopSignals():  # SIGTERM and SIGHUP stop a command as Ctrl-C does
            return int(args.run(args) or 0)
    except CarbonAIError as exc:
        print(f"carbon-ai {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"carbon-ai {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
