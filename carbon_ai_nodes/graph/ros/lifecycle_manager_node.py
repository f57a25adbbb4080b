"""lifecycle_manager: configures and activates the carbon_ai nodes of a graph in dependency order, supervises them
through their /diagnostics heartbeat, and takes the graph down safely (actuator bridges first) when one dies,
bringing it back once the node returns (``respawn`` in the launch file restarts the process).

The decisions live in graph/supervisor.py; this node only feeds it heartbeats and calls the nodes'
``<node>/change_state`` services. The managed nodes run with ``autostart:=false``. They remain plain ROS 2
lifecycle nodes, so Nav2's lifecycle manager can drive them instead (with ``bond_timeout: 0.0``).
"""

from __future__ import annotations

import sys

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.client import Client

from carbon_ai_nodes.graph.supervisor import LifecycleManagerParams, Request, Supervisor
from carbon_ai_nodes.ros import qos
from carbon_ai_nodes.ros.node_base import CarbonNode, configured, run_node

_TRANSITIONS = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
                "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP}


class LifecycleManager(CarbonNode[LifecycleManagerParams]):
    """Drives the managed nodes' lifecycle from the Supervisor's requests."""

    def __init__(self) -> None:
        super().__init__("lifecycle_manager", LifecycleManagerParams)
        self.supervisor: Supervisor | None = None
        self._change_state_clients: dict[str, Client] = {}

    @property
    def _sup(self) -> Supervisor:
        """The supervisor configure built (the callbacks run only while configured)."""
        return configured(self.supervisor, "lifecycle_manager supervisor")

    def configure(self, params: LifecycleManagerParams) -> None:
        self.supervisor = Supervisor(params.node_names, params.heartbeat_timeout_s, params.transition_timeout_s,
                                     params.bring_up)
        self._change_state_clients = {
            n: self.create_client(ChangeState, f"{n}/change_state") for n in params.node_names}
        self.subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos.diagnostics())
        self.timer(params.check_period_s, self._step, name="supervise")

    def cleanup(self) -> None:
        for client in self._change_state_clients.values():
            self.destroy_client(client)
        self._change_state_clients.clear()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        now = self.now_s()
        for status in msg.status:
            state = next((kv.value for kv in status.values if kv.key == "lifecycle_state"), "")
            self._sup.heartbeat(status.hardware_id, now, state)

    def _step(self) -> None:
        sup = self._sup
        for request in sup.step(self.now_s()):
            self._call(request)
        for event in sup.events:
            self.get_logger().info(event)
        sup.events.clear()

    def _call(self, request: Request) -> None:
        client = self._change_state_clients[request.node]
        if not client.service_is_ready():
            self._sup.transition_done(request.node, request.transition, False)
            return
        future = client.call_async(ChangeState.Request(transition=Transition(id=_TRANSITIONS[request.transition])))

        def done(f, r=request) -> None:
            ok = f.exception() is None and f.result().success
            self._sup.transition_done(r.node, r.transition, ok, now_s=self.now_s())

        future.add_done_callback(done)

    def diagnostics_values(self) -> dict[str, str]:
        if self.supervisor is None:
            return {}
        values = {"graph_state": self.supervisor.graph_state}
        values.update({f"node.{n}": s.state for n, s in self.supervisor.nodes.items()})
        return values


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ros2 run carbon_ai_nodes lifecycle_manager``."""
    sys.exit(run_node(LifecycleManager, args))


if __name__ == "__main__":
    main()
