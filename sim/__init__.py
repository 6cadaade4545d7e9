"""SimPy discrete-event replay of request and routing traces through a Plan; see DESIGN.md section 6.

    from sim import SimConfig, simulate
    result = simulate(plan, trace, SimConfig(), decode_routing, prefill_routing)   # plan: a planner.plan.Plan
    result.to_json()["ttft_p99_s"]
"""

from sim.config import KVPolicy, Priority, Router, SimConfig
from sim.engine import simulate
from sim.loads import PlacementFallback, concat_routing
from sim.results import RoleStats, SimResult

__all__ = ["KVPolicy", "PlacementFallback", "Priority", "RoleStats", "Router", "SimConfig", "SimResult", "concat_routing",
           "simulate"]
