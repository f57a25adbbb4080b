"""RunWatch: what the runner shows of its nodes' console output (errors once per distinct message, graph state
changes, whether the graph came up) and its end-of-run summary."""

from __future__ import annotations

from carbon_ai_nodes.graph.run_watch import AUTOSTARTED, RunWatch


def line(severity: str, logger: str, message: str) -> str:
    return f"[{severity}] [1796533808.101611178] [{logger}]: {message}"


def test_a_refused_configure_retried_every_second_is_shown_once_and_counted():
    watch = RunWatch()
    refusal = "parameter sim.stop_dwell_s=-5.0: must be >= 0.0"
    shown = []
    for _ in range(5):  # the lifecycle manager retries configure; the node logs the same refusal each time
        shown += watch.feed("/truck1/sim", [line("ERROR", "truck1.sim", refusal), "a line that is not a log line"])
        shown += watch.feed("/lifecycle_manager", [
            line("INFO", "lifecycle_manager", "/truck1/sim: configure failed; retrying"),
            line("INFO", "lifecycle_manager", "/truck1/sim: alive")])
    assert shown == [f"/truck1/sim: error: {refusal}", "lifecycle_manager: /truck1/sim: configure failed; retrying"]
    assert not watch.graph_up
    assert watch.errors() == {"/truck1/sim": [refusal]}
    summary = "\n".join(watch.summary({"/truck1/sim": "stopped", "/lifecycle_manager": "stopped"}, {}))
    assert "graph: never came up" in summary
    assert f"/truck1/sim: 5 errors (first: {refusal})" in summary


def test_graph_state_changes_and_the_summary():
    watch = RunWatch()
    manager = "/lifecycle_manager"
    shown = watch.feed(manager, [line("INFO", "lifecycle_manager", m) for m in (
        "/truck1/fusion: alive", "graph active", "graph degraded: /truck1/fusion not responding; going safe",
        "graph safe; bringing it back up", "graph active")])
    assert shown == ["graph up (graph active)", "lifecycle_manager: graph active",
                     "lifecycle_manager: graph degraded: /truck1/fusion not responding; going safe",
                     "lifecycle_manager: graph safe; bringing it back up", "lifecycle_manager: graph active"]
    assert watch.graph_up
    # warnings are not shown as they come (a graph starting up has many stale inputs) but summarised
    assert watch.feed("/truck1/planner", [line("WARN", "truck1.planner", "rejecting vehicle_state: nan")] * 3) == []
    summary = watch.summary({"/truck1/fusion": "exited with 1 (boom); restart limit reached",
                             "/truck1/planner": "stopped", manager: "stopped"},
                            {"/truck1/vehicle_state": 120, "/rosout": 40, "/truck1/fusion/transition_event": 2})
    assert summary[1] == "  graph: graph active -> graph degraded -> graph safe; bringing it back up -> graph active"
    assert "  processes: 1 exited with 1 (boom); restart limit reached, 2 stopped" in summary
    assert "    /truck1/fusion: exited with 1 (boom); restart limit reached" in summary
    assert "    /truck1/planner: 3 warnings (first: rejecting vehicle_state: nan)" in summary
    assert summary[-2:] == ["  messages per topic (120 in all):", "    /truck1/vehicle_state: 120"]


def test_self_starting_nodes_and_the_composed_container_say_when_they_are_up():
    watch = RunWatch(["/truck1/fusion", "/truck1/sim", "/grid_publisher"])
    assert watch.feed("/truck1/fusion", [line("INFO", "truck1.fusion", AUTOSTARTED)]) == []
    watch.feed("/grid_publisher", [line("INFO", "grid_publisher", AUTOSTARTED)])
    assert watch.active_nodes == {"/truck1/fusion", "/grid_publisher"} and not watch.graph_up
    assert watch.feed("/truck1/sim", [line("INFO", "truck1.sim", AUTOSTARTED)]) == ["graph up (all 3 nodes active)"]
    assert watch.graph_up
    composed = RunWatch()
    assert composed.feed("composed", ["composed 9 nodes on 5 events executor threads, intra-process delivery on"]) \
        == ["graph up (composed 9 nodes on 5 events executor threads, intra-process delivery on)"]
    assert composed.graph_up
