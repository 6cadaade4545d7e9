"""SimPy discrete-event replay of request and routing traces through a Plan; see DESIGN.md section 6.

    from sim import SimConfig, read_plan, simulate
    result = simulate(read_plan("out/plan.json", deployment), trace, SimConfig(), decode_routing, prefill_routing)
    result.to_json()["ttft_p99_s"]
"""

from sim.engine import KVPolicy, Priority, Router, SimConfig, simulate
from sim.loads import PlacementFallback, concat_routing
from sim.plan import Plan, RolePlan, plan_from_json, read_plan
from sim.results import RoleStats, SimResult

__all__ = ["KVPolicy", "PlacementFallback", "Plan", "Priority", "RoleStats", "RolePlan", "Router", "SimConfig", "SimResult",
           "concat_routing", "plan_from_json", "read_plan", "simulate"]
