"""Lifecycle supervision logic (no ROS): bring a node graph up in dependency order, watch heartbeats, and take
the graph down safely (actuator bridge first) when a node dies, bringing it back up once the node returns.

The heartbeat is each node's ``/diagnostics`` report (every carbon_ai node publishes one per
``diagnostics_period_s``, carrying its lifecycle state), so no bond library is needed: Python lifecycle
nodes cannot take part in Nav2's bond heartbeat (Nav2 issue #3080), while our nodes stay drivable by Nav2's
lifecycle manager with ``bond_timeout: 0.0``.

The :class:`Supervisor` is a pure state machine: feed it heartbeats and transition results, call
:meth:`Supervisor.step` periodically, and perform the :class:`Request` s it returns (``configure``,
``activate``, ``deactivate``) through the nodes' ``change_state`` services.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import ClassVar

from carbon_ai_nodes.common.params import ParamSet, param
from carbon_ai_nodes.node_registry import NODE_ORDER

# Goes to its safe state first: nothing may keep driving the machine while its inputs are going away.
SAFETY_NODE = "actuator_bridge"
STATES = ("unknown", "unconfigured", "inactive", "active", "finalized")


def base_name(node: str) -> str:
    """``/truck1/actuator_bridge`` -> ``actuator_bridge``."""
    return node.rstrip("/").rsplit("/", 1)[-1]


def startup_order(nodes: Iterable[str]) -> list[str]:
    """Nodes sorted producers-first (NODE_ORDER), unknown names last, stable otherwise."""
    rank = {n: i for i, n in enumerate(NODE_ORDER)}
    return sorted(nodes, key=lambda n: rank.get(base_name(n), len(rank)))


def shutdown_order(nodes: Iterable[str]) -> list[str]:
    """Actuator bridges first, then the rest in reverse start-up order (consumers before producers)."""
    ordered = list(reversed(startup_order(nodes)))
    return [n for n in ordered if base_name(n) == SAFETY_NODE] + [n for n in ordered if base_name(n) != SAFETY_NODE]


@dataclasses.dataclass(frozen=True)
class LifecycleManagerParams(ParamSet):
    """Parameters of the ``lifecycle_manager`` node."""

    SECTION: ClassVar[str] = "lifecycle_manager"
    node_names: tuple[str, ...] = param((), "Fully qualified names of the managed nodes (e.g. /truck1/fusion)")
    bring_up: bool = param(True, "Configure and activate the managed nodes as soon as they are seen",
                            read_only=True)
    heartbeat_timeout_s: float = param(3.0, "A node without a /diagnostics report for this long is dead",
                                       unit="s", gt=0.0, max=600.0)
    transition_timeout_s: float = param(10.0, "A lifecycle transition call not answered in this long failed",
                                        unit="s", gt=0.0, max=600.0)
    check_period_s: float = param(0.2, "Period of the supervision step", unit="s", gt=0.0, max=10.0)

    def check(self) -> None:
        """At least one node; no duplicates."""
        if not self.node_names:
            self.fail("node_names", "list the nodes to manage, e.g. ['/truck1/fusion', '/truck1/actuator_bridge']")
        if len(set(self.node_names)) != len(self.node_names):
            self.fail("node_names", "duplicate node name")


@dataclasses.dataclass(frozen=True)
class Request:
    """A transition the manager should request: node (fully qualified) and ``configure|activate|deactivate``."""

    node: str
    transition: str


@dataclasses.dataclass
class NodeStatus:
    """What the supervisor knows of one node."""

    name: str
    state: str = "unknown"
    last_heartbeat_s: float | None = None
    pending: str = ""
    pending_since_s: float = 0.0
    failures: int = 0

    def alive(self, now_s: float, timeout_s: float) -> bool:
        """Heard from within ``timeout_s``."""
        return self.last_heartbeat_s is not None and now_s - self.last_heartbeat_s <= timeout_s


class Supervisor:
    """Dependency-ordered bring-up, heartbeat supervision and safe take-down of a node graph.

    Graph states: ``starting`` (bringing nodes up), ``active`` (all active), ``degraded`` (a node is dead or
    lost its state: the graph is taken down, actuator bridge first, and brought up again when it returns).
    """

    def __init__(self, nodes: Sequence[str], heartbeat_timeout_s: float = 3.0, transition_timeout_s: float = 10.0,
                 autostart: bool = True) -> None:
        self.order = startup_order(nodes)
        self.nodes = {n: NodeStatus(n) for n in self.order}
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.transition_timeout_s = transition_timeout_s
        self.autostart = autostart
        self.graph_state = "starting"
        self.events: list[str] = []

    # ----------------------------------------------------------------------------- inputs
    def heartbeat(self, node: str, now_s: float, lifecycle_state: str = "") -> None:
        """A /diagnostics report from ``node`` (its lifecycle state if it says)."""
        status = self.nodes.get(node)
        if status is None:
            return
        if status.last_heartbeat_s is None or not status.alive(now_s, self.heartbeat_timeout_s):
            self.events.append(f"{node}: alive")
        status.last_heartbeat_s = now_s
        if lifecycle_state in STATES and not status.pending:
            status.state = lifecycle_state

    def transition_done(self, node: str, transition: str, ok: bool, new_state: str = "",
                        now_s: float | None = None) -> None:
        """The result of a requested transition; ``now_s`` (s) when it is the node's answer (a sign of life)
        rather than a timeout."""
        status = self.nodes[node]
        status.pending = ""
        if now_s is not None:
            status.last_heartbeat_s = now_s
        if ok:
            status.state = new_state or {"configure": "inactive", "activate": "active",
                                         "deactivate": "inactive", "cleanup": "unconfigured"}[transition]
            if status.failures:
                self.events.append(f"{node}: {transition} done after {status.failures} failed attempt(s)")
            status.failures = 0
        else:
            status.failures += 1
            status.state = "unknown"  # ask again: the heartbeat will tell the real state
            if status.failures == 1:  # a state change: logged once, not at every retry
                self.events.append(f"{node}: {transition} failed; retrying")

    # ----------------------------------------------------------------------------- decisions
    def dead(self, now_s: float) -> list[str]:
        """Managed nodes not heard from within the heartbeat timeout. A node running a transition we asked for
        is busy, not dead, until the transition times out: its executor runs the transition (loading a model,
        precomputing a route) and cannot publish its heartbeat meanwhile."""
        return [n for n, s in self.nodes.items() if not s.alive(now_s, self.heartbeat_timeout_s)
                and not (s.pending and s.last_heartbeat_s is not None)]

    def step(self, now_s: float) -> list[Request]:
        """The transitions to request now (at most one outstanding per node)."""
        for s in self.nodes.values():
            if s.pending and now_s - s.pending_since_s > self.transition_timeout_s:
                self.transition_done(s.name, s.pending, False)
        dead = self.dead(now_s)
        ever_seen = all(s.last_heartbeat_s is not None for s in self.nodes.values())
        lost = [n for n in dead if self.nodes[n].last_heartbeat_s is not None]
        if lost or (self.graph_state != "starting" and dead):
            if self.graph_state != "degraded":
                self.events.append(f"graph degraded: {', '.join(lost or dead)} not responding; going safe")
            self.graph_state = "degraded"
            for n in lost:
                self.nodes[n].state = "unknown"
            return self._take_down(now_s)
        if not ever_seen or not self.autostart:
            return []
        if self.graph_state == "degraded":
            if any(s.state == "active" or s.pending for s in self.nodes.values()):
                return self._take_down(now_s)  # finish going safe before coming back up
            self.graph_state = "starting"
            self.events.append("graph safe; bringing it back up")
        requests = self._bring_up(now_s)
        if all(s.state == "active" for s in self.nodes.values()):
            if self.graph_state != "active":
                self.events.append("graph active")
            self.graph_state = "active"
        elif self.graph_state == "active":
            self.graph_state = "degraded"
            self.events.append("graph degraded: a node left the active state; going safe")
            return self._take_down(now_s)
        return requests

    def _request(self, node: str, transition: str, now_s: float) -> Request:
        status = self.nodes[node]
        status.pending, status.pending_since_s = transition, now_s
        return Request(node, transition)

    def _take_down(self, now_s: float) -> list[Request]:
        """Deactivate in shutdown order, one stage at a time: the actuator bridges first, alone."""
        for name in shutdown_order(self.nodes):
            s = self.nodes[name]
            if not s.alive(now_s, self.heartbeat_timeout_s):
                continue
            if s.pending:
                return []  # wait for the stage in progress
            if s.state == "active":
                return [self._request(name, "deactivate", now_s)]
        return []

    def _bring_up(self, now_s: float) -> list[Request]:
        """Configure everything that is unconfigured, then activate in order once predecessors are active."""
        requests = []
        for name in self.order:
            s = self.nodes[name]
            if s.pending or s.state == "unknown":
                continue
            if s.state == "unconfigured":
                requests.append(self._request(name, "configure", now_s))
        for name in self.order:
            s = self.nodes[name]
            if s.state == "active":
                continue
            if s.state == "inactive" and not s.pending:
                requests.append(self._request(name, "activate", now_s))
            break  # a node activates only after every node before it is active
        return requests
