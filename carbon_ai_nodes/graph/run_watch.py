"""What a running node graph says about itself, read from its processes' console output (no ROS).

``carbon-ai run`` starts every node as a process whose output goes to a file; :class:`RunWatch` reads those
lines as they come and decides what the person at the console must see: each node's errors (once per distinct
message: a lifecycle manager retrying ``configure`` every second makes the node log the same refusal every
second), the lifecycle manager's graph state changes, and whether the graph came up at all. At the end it
gives a short summary: graph states, faults seen per node, messages per topic.

Lines are ROS 2's default console format, ``[ERROR] [1700000000.123] [truck1.sim]: message``.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Mapping

_LINE = re.compile(r"^\[(DEBUG|INFO|WARN|ERROR|FATAL)\] \[[0-9.]+\] \[([^\]]*)\]: (.*)$")
# Lines of the lifecycle manager (graph/supervisor.py events) and of the composed container that say the graph
# came up.
GRAPH_UP = re.compile(r"^(graph active|composed \d+ nodes)")
MANAGER_EVENT = re.compile(r"^(graph |.*: (configure|activate|deactivate|cleanup) failed)")
PLUMBING_TOPICS = ("/rosout", "/parameter_events", "/transition_event")  # ROS's own, left out of the summary
AUTOSTARTED = "configured and active (autostart)"  # what a self-starting node logs once it is up (node_base)


@dataclasses.dataclass
class NodeFaults:
    """Errors and warnings one node logged: counts and the first of each distinct message."""

    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    warnings: Counter[str] = dataclasses.field(default_factory=Counter)


class RunWatch:
    """Reads node console lines; returns what to show now; remembers what to summarise at the end."""

    def __init__(self, self_starting: Iterable[str] = ()) -> None:
        """``self_starting``: the nodes (``/truck1/sim``) that configure themselves, without a lifecycle manager
        or a composed container to say when the graph is up: it is up once each has said it is active."""
        self.graph_up = False
        self.self_starting = set(self_starting)
        self.active_nodes: set[str] = set()  # self-starting nodes that said they are up
        self.graph_events: list[str] = []
        self.faults: dict[str, NodeFaults] = {}

    def feed(self, label: str, lines: Iterable[str]) -> list[str]:
        """Lines printed by process ``label`` (``/truck1/sim``, ``/lifecycle_manager``, ``composed``); returns
        the console lines to show for them: a node's new error, a graph state change."""
        show = []
        for line in lines:
            m = _LINE.match(line.strip())
            if m is None:  # a plain print: the composed container's start-up line is one
                if GRAPH_UP.match(line) and not self.graph_up:
                    self.graph_up = True
                    show.append(f"graph up ({line.strip()})")
                continue
            severity, logger, message = m.groups()
            node = "/" + logger.replace(".", "/") if logger else label
            if message == AUTOSTARTED:
                self.active_nodes.add(node)
                if self.self_starting and self.self_starting <= self.active_nodes and not self.graph_up:
                    self.graph_up = True
                    show.append(f"graph up (all {len(self.self_starting)} nodes active)")
            if GRAPH_UP.match(message):
                if not self.graph_up:
                    show.append(f"graph up ({message})")
                self.graph_up = True
            if label.endswith("lifecycle_manager") and MANAGER_EVENT.match(message):
                # graph state changes each time; a retried transition's failure once
                if message.startswith("graph ") or message not in self.graph_events:
                    show.append(f"lifecycle_manager: {message}")
                self.graph_events.append(message)
            elif severity in ("ERROR", "FATAL", "WARN"):
                faults = self.faults.setdefault(node, NodeFaults())
                seen = faults.errors if severity != "WARN" else faults.warnings
                if severity != "WARN" and message not in seen:
                    show.append(f"{node}: {severity.lower()}: {message}")
                seen[message] += 1
        return show

    def errors(self) -> dict[str, list[str]]:
        """Distinct error messages per node so far."""
        return {node: list(f.errors) for node, f in self.faults.items() if f.errors}

    def summary(self, processes: Mapping[str, str], topic_counts: Mapping[str, int]) -> list[str]:
        """The end-of-run summary: graph states, each process's end state (``processes``: label -> state), faults
        per node (count and first message), messages received per topic."""
        lines = ["summary:"]
        lines.append("  graph: " + (" -> ".join(e.split(":")[0] for e in self.graph_events if e.startswith("graph"))
                                    or ("up" if self.graph_up else "never came up")))
        states = Counter(processes.values())
        lines.append("  processes: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        lines += [f"    {label}: {state}" for label, state in sorted(processes.items()) if state != "stopped"]
        faulty = {n: f for n, f in sorted(self.faults.items()) if f.errors or f.warnings}
        lines.append(f"  faults: {'none' if not faulty else f'{len(faulty)} node(s)'}")
        for node, f in faulty.items():
            parts = []
            for kind, seen in (("error", f.errors), ("warning", f.warnings)):
                if seen:
                    total = sum(seen.values())
                    parts.append(f"{total} {kind}{'s' if total > 1 else ''} (first: {next(iter(seen))})")
            lines.append(f"    {node}: " + "; ".join(parts))
        counts = {t: n for t, n in topic_counts.items() if not t.endswith(PLUMBING_TOPICS)}
        if counts:
            lines.append(f"  messages per topic ({sum(counts.values())} in all):")
            lines += [f"    {topic}: {count}" for topic, count in sorted(counts.items())]
        return lines
