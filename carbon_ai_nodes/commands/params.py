"""Print the parameters of every node (or one) as a Markdown table: name, type, default, range, description.

The tables are generated from the same dataclasses that validate the parameters, so they cannot drift.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carbon_ai_nodes.common.params import ParamSet

HELP = "print node parameter tables (Markdown) from their declarations"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--section limits the output to one parameter set."""
    parser.add_argument("--section", help="only this section (node name), e.g. fusion")


def all_param_sets() -> dict[str, type[ParamSet]]:
    """Every ParamSet subclass defined in the pure modules of carbon_ai_nodes and node_base, by SECTION."""
    import importlib
    import pkgutil

    import carbon_ai_nodes
    from carbon_ai_nodes.common.params import ParamSet

    for info in pkgutil.walk_packages(carbon_ai_nodes.__path__, "carbon_ai_nodes."):
        parts = info.name.split(".")
        if "ros" not in parts and parts[1] not in ("commands", "cli") and not info.ispkg:
            importlib.import_module(info.name)
    found: dict[str, type[ParamSet]] = {}
    stack = list(ParamSet.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.SECTION and cls.__module__.startswith("carbon_ai_nodes."):  # not the tests' own examples
            found[cls.SECTION] = cls
    try:  # the per-node base parameters (needs rclpy; skipped where it is missing)
        from carbon_ai_nodes.ros.node_base import NodeBaseParams

        found[NodeBaseParams.SECTION] = NodeBaseParams
    except ImportError:
        pass
    return dict(sorted(found.items()))


def markdown_table(param_set: type[ParamSet]) -> str:
    """One Markdown table for a ParamSet class."""
    lines = ["| parameter | type | default | valid | description |", "|---|---|---|---|---|"]
    for s in param_set.specs():
        default = list(s.default) if s.is_array else s.default
        unit = f" ({s.unit})" if s.unit else ""
        ro = " Read-only at run time." if s.read_only else ""
        lines.append(f"| `{s.name}` | {s.kind} | `{default!r}` | {s.constraints()} | {s.description}{unit}.{ro} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the tables."""
    from carbon_ai_nodes.common.errors import ConfigError

    sets = all_param_sets()
    if args.section and args.section not in sets:
        raise ConfigError(f"no parameter section {args.section!r}; known: {', '.join(sets)}")
    for section, cls in sets.items():
        if args.section in (None, section):
            print(f"### {section}\n\n{markdown_table(cls)}\n")
    return 0
