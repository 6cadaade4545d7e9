"""moeplan: a hardware-aware deployment planner and simulator for serving giant MoE language models.

Notebook API (the CLI and the dashboard are thin shells over it):

    import moeplan
    report = moeplan.check("catalogs/examples/kimi-k2-h200.yaml")
    print(report.headline())
    moeplan.model_summary("kimi-k2")["active_params"]
"""

from moeplan.api import (Plan, PlanView, check, clusters, compare, compare_placements, deployment, devices, load_plan,
                         model_summary, models, plan, read_routing_counts, read_trace, simulate, sweep, validate)
from moeplan.simulation import Simulation
from moeplan.spec import Spec, example_path, load_spec, parse_spec
from moeplan.study import Sweep

__all__ = ["check", "clusters", "compare", "compare_placements", "deployment", "devices", "load_plan", "model_summary",
           "models", "plan", "read_routing_counts", "read_trace", "simulate", "sweep", "validate", "Plan", "PlanView",
           "Simulation", "Sweep", "Spec", "example_path", "load_spec", "parse_spec"]
