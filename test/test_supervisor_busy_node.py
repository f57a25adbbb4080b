"""A node busy in a transition the lifecycle manager asked for is not a dead node: the start-up "graph degraded:
/truck1/carbon_inference not responding; going safe" seen in every run of the haul-truck graph came from a node
whose configure (loading its model, on a loaded machine) outlasted the heartbeat timeout, since its executor runs
the transition and cannot publish its heartbeat meanwhile."""

from __future__ import annotations

from carbon_ai_nodes.graph.supervisor import Supervisor

NODES = ["/t1/sim", "/t1/carbon_inference", "/t1/actuator_bridge"]


def test_a_node_configuring_longer_than_the_heartbeat_timeout_is_busy_not_dead():
    sup = Supervisor(NODES, heartbeat_timeout_s=5.0, transition_timeout_s=10.0)
    for n in NODES:
        sup.heartbeat(n, 0.0, "unconfigured")
    requests = sup.step(0.1)
    assert {(r.node, r.transition) for r in requests} == {(n, "configure") for n in NODES}
    for n in ("/t1/sim", "/t1/actuator_bridge"):
        sup.transition_done(n, "configure", True, now_s=0.5)
    t = 0.5
    while t < 8.0:  # carbon_inference configures for 8 s: no heartbeat from it meanwhile
        t += 0.2
        for n in ("/t1/sim", "/t1/actuator_bridge"):
            sup.heartbeat(n, t, sup.nodes[n].state)  # nodes that do what they are asked
        for r in sup.step(t):
            sup.transition_done(r.node, r.transition, True, now_s=t)
    # its answer is a sign of life: the next step must not find it silent for 8 s
    sup.transition_done("/t1/carbon_inference", "configure", True, now_s=8.0)
    sup.step(8.1)
    assert not any("degraded" in e for e in sup.events), sup.events
    assert sup.graph_state == "starting"


def test_a_node_silent_without_a_transition_in_progress_is_still_dead():
    sup = Supervisor(NODES, heartbeat_timeout_s=5.0, transition_timeout_s=10.0)
    for n in NODES:
        sup.heartbeat(n, 0.0, "active")
    sup.step(0.1)
    assert sup.graph_state == "active"
    for n in ("/t1/sim", "/t1/actuator_bridge"):
        sup.heartbeat(n, 5.5, "active")
    sup.step(5.6)
    assert sup.graph_state == "degraded"
    assert "graph degraded: /t1/carbon_inference not responding; going safe" in sup.events


def test_a_transition_that_times_out_leaves_a_silent_node_dead():
    sup = Supervisor(NODES, heartbeat_timeout_s=5.0, transition_timeout_s=10.0)
    for n in NODES:
        sup.heartbeat(n, 0.0, "unconfigured")
    sup.step(0.1)
    for n in ("/t1/sim", "/t1/actuator_bridge"):
        sup.transition_done(n, "configure", True, now_s=0.2)
    for t in (6.0, 10.05):
        for n in ("/t1/sim", "/t1/actuator_bridge"):
            sup.heartbeat(n, t, "inactive")
        sup.step(t)
    assert not any("degraded" in e for e in sup.events)
    sup.step(10.3)  # carbon_inference's configure timed out at 10.1 s and it is still silent
    assert "/t1/carbon_inference: configure failed; retrying" in sup.events
    assert any("graph degraded: /t1/carbon_inference not responding" in e for e in sup.events), sup.events


def test_a_transition_retried_every_second_is_logged_once_failing_and_once_done():
    sup = Supervisor(NODES[:1], heartbeat_timeout_s=5.0)
    for t in range(10):  # the node refuses its configuration ten times (a missing file, fixed at the 10th try)
        sup.heartbeat("/t1/sim", float(t), "unconfigured")
        for r in sup.step(t + 0.1):
            sup.transition_done(r.node, r.transition, t == 9, now_s=t + 0.2)
    assert sup.nodes["/t1/sim"].state == "inactive"
    assert [e for e in sup.events if "configure" in e] == ["/t1/sim: configure failed; retrying",
                                                           "/t1/sim: configure done after 9 failed attempt(s)"]
