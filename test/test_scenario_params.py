"""Every parameter a shipped scenario gives a node (its ``params:``, each vehicle's, and ``baseline_params``) is one
that node declares: ROS ignores an undeclared one, so a scenario naming it would configure nothing while the
runner printed ``ignoring parameter ...`` on every run."""

from __future__ import annotations

import pytest

from carbon_ai_nodes.commands.params import all_param_sets
from carbon_ai_nodes.graph.runner import ROS_OWN_PARAMS, GraphRunner
from carbon_ai_nodes.graph.scenario import graph, list_scenarios, load_scenario

SETS = all_param_sets()


def declared(module: str) -> set[str]:
    """Names the node ``module`` declares (its own ParamSet and the per-node base set)."""
    return {s.name for s in (*SETS[module].specs(), *SETS["node"].specs())} | set(ROS_OWN_PARAMS)


@pytest.mark.parametrize("path", list_scenarios(), ids=lambda p: p.stem)
def test_every_parameter_a_scenario_sets_is_declared_by_its_node(path, tmp_path):
    scenario = load_scenario(path)
    given = [(spec.name, spec.params) for spec in scenario.nodes]
    given += list(scenario.baseline_params.items())
    given += [(module, params) for v in scenario.vehicles for module, params in v.params.items()]
    undeclared = [f"{module}.{name}" for module, params in given for name in params
                  if module not in SETS or name not in declared(module)]
    assert undeclared == []
    for baseline in (False, True):  # what each node is actually given, substitutions and sim isolation included
        for launch in graph(scenario, tmp_path, baseline=baseline):
            assert set(launch.params) <= declared(launch.module), launch.label


@pytest.mark.parametrize("path", list_scenarios(), ids=lambda p: p.stem)
@pytest.mark.parametrize("baseline", [False, True], ids=["optimised", "baseline"])
def test_the_runner_ignores_no_parameter_of_a_shipped_scenario(path, baseline, tmp_path):
    # what start() prints an "ignoring parameter" line for; the constructor starts no process
    runner = GraphRunner(load_scenario(path), tmp_path, baseline=baseline, log=lambda _: None)
    assert runner.ignored_params == set()
    assert len(runner.launches) > len(load_scenario(path).vehicles)  # the graph was expanded, not empty
