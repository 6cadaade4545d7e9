"""Engine launch files for a plan (`moeplan plan SPEC -o DIR --backend NAME` writes them into DIR/launch/):
every pool's server command at the plan's parallel sizes, the router in front, a Kubernetes manifest for NVIDIA
Dynamo, the expert-placement files, a README.md saying what to start in which order and where each value came
from, and launch.json (the same, machine-readable: each pool's sizes and argv).

Each engine's module (sglang, vllm, trtllm) says how the plan's layout maps onto its flags; the flags are checked
against catalogs/engine_flags.yaml, the documented flags of each engine at a pinned version (tests).
"""

from __future__ import annotations

import json

from hwmodels.errors import InputError
from hwmodels.layouts import AFD_LIMIT, PREFILL_CP_ENGINES
from moeplan.launch import dynamo, sglang, trtllm, vllm
from moeplan.launch.pools import Launch, launch_of, pool_json, weights_json
from moeplan.launch.readme import readme
from planner.placement import expert_location_json
from planner.plan import Plan

ENGINES = {"sglang": sglang, "vllm": vllm, "trtllm": trtllm}


def launch_files(plan: Plan, engine: str, version: str, version_note: str, model_path: str) -> dict[str, str]:
    """name -> text of every file of the launch folder for `plan`'s recommendation on `engine` at `version`."""
    if any(pool.layout.ffn_devices for pool in plan.pools):
        raise InputError("--backend", f"the plan's decode pool is attention-FFN disaggregated (separate attention and "
                         f"expert devices): {AFD_LIMIT}, {engine} included",
                         "plan with serving.engine set (its search leaves attention-FFN disaggregation out)")
    launch = launch_of(plan, engine, version, version_note, model_path)
    if engine not in PREFILL_CP_ENGINES and any(p.context_parallel > 1 for p in launch.pools):
        raise InputError("--backend", f"the plan's prefill pool splits prompts over attention groups (context "
                         f"parallel), which {engine} has no flag for at its pinned version (catalogs/engine_flags.yaml)",
                         f"write it for sglang, or plan with serving.engine: {engine} (its search leaves context "
                         "parallelism out)")
    rendered = ENGINES[engine].files(launch)
    files = {name: text for name, (_, text) in rendered.items()}
    argvs = {str(p.role): rendered[f"{p.role}.sh"][0] for p in launch.pools}
    for p in launch.pools:
        if p.placement_file and engine == "sglang":  # vLLM and TensorRT-LLM place experts themselves
            files[p.placement_file] = json.dumps(expert_location_json(p.placement))
    files["dynamo.yaml"] = dynamo.manifest_text(launch, argvs)
    doc = {"engine": engine, "version": version, "version_note": version_note, "model_path": model_path,
           "mode": str(launch.mode), "devices": plan.devices, "weights": weights_json(launch),
           "pools": [pool_json(p) | {"argv": argvs[str(p.role)], "script": f"{p.role}.sh"} for p in launch.pools],
           "router": {"argv": rendered["router.sh"][0], "script": "router.sh"} if "router.sh" in rendered else None,
           "configs": {name: value for name, (value, _) in rendered.items() if name.endswith(".yaml")}}
    files["launch.json"] = json.dumps(doc, indent=2)
    files["README.md"] = readme(launch, doc, sorted(files))
    return files


__all__ = ["ENGINES", "Launch", "launch_files"]
