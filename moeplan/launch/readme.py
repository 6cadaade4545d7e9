"""launch/README.md: what to start, in which order, and where every value in the files came from."""

from __future__ import annotations

from moeplan.launch.pools import Launch, PoolLaunch, weights_json
from planner.plan import Mode

_NAMES = {"sglang": "SGLang", "vllm": "vLLM", "trtllm": "TensorRT-LLM"}


def _pool_lines(p: PoolLaunch) -> list[str]:
    nodes = f"{p.nodes} nodes of {p.devices_per_node}" if p.nodes > 1 else f"{p.devices} device{'s' * (p.devices > 1)}"
    lines = [f"- **{p.role}**: {p.instances} instance(s) x {p.devices} devices ({nodes} each); attention TP{p.attention_tp} "
             f"x DP{p.attention_dp}, experts EP{p.expert_parallel}" + (f" x MoE TP{p.moe_tp}" if p.moe_tp > 1 else "")
             + (f", {p.redundant_experts} redundant expert slots" if p.redundant_experts else "")
             + (", two-batch overlap" if p.two_batch_overlap else "")
             + (f"; {p.pipeline_stages} pipeline stages of {p.stage_devices} devices, each with that layout"
                if p.pipeline_stages > 1 else "")
             + (f"; context parallel: each prompt prefilled by {p.context_parallel} attention groups together "
                f"({p.attention_tp * p.context_parallel} devices per rank)" if p.context_parallel > 1 else "")]
    if p.batch_per_device is not None:
        lines.append(f"  - {p.batch_per_device} sequences per device: {p.sequences_per_rank} per attention rank, "
                     f"{p.sequences_per_instance} per instance (plan.json `batch_per_device`)")
    lines.append(f"  - {p.chunk_tokens_per_device} prompt tokens per device per step: {p.chunk_tokens_per_rank} per rank, "
                 f"{p.chunk_tokens_per_instance} per instance")
    if p.placement_file:
        lines.append(f"  - expert placement: `{p.placement_file}` (the plan's; SGLang's --init-expert-location)")
    return lines


def _weight_lines(launch: Launch) -> list[str]:
    """The weight formats: the checkpoint's as it ships, or what the plan priced instead and how the files get it."""
    if not launch.requantized:
        return ["- the weight formats: the checkpoint's own (its config.json), as the plan priced them;"]
    parts = ", ".join(f"{part} in {to} (the checkpoint: {shipped})" for part, to, shipped in launch.requantized)
    if weights_json(launch)["load_time_quantization"]:
        blocks = any(to == "fp8" for _, to, _ in launch.requantized)
        how = ("the server quantises every linear layer to fp8 as it loads the checkpoint (`--quantization fp8`: "
               "per-tensor scales" + (", where the plan priced 128 x 128 blocks" if blocks else "") + ")")
    elif launch.online_fp8:
        how = ("TensorRT-LLM does not quantise at load: set `MODEL` to a checkpoint already in fp8 (NVIDIA's ModelOpt "
               "FP8 checkpoints, nvidia/*-FP8)")
    else:
        how = ("no engine flag quantises a checkpoint to those formats as it loads: set `MODEL` to a checkpoint already "
               "in them (e.g. NVIDIA's ModelOpt NVFP4 or FP8 checkpoints), or the servers load other weights than the "
               "plan priced, and may not fit")
    return [f"- the weight formats: the spec's precision prices {parts}; {how};"]


def readme(launch: Launch, doc: dict, names: list[str]) -> str:
    engine = _NAMES[launch.engine]
    disaggregated = launch.mode == Mode.DISAGGREGATED
    order = [f"{i + 1}. `{p.role}.sh`: every instance of the {p.role} pool" for i, p in enumerate(launch.pools)]
    if doc["router"]:
        order.append(f"{len(order) + 1}. `router.sh`: the router, last, once every instance answers on its port")
    elif launch.engine == "vllm":
        order.append(f"{len(order) + 1}. a router: vLLM has none for {'prefill/decode pools' if disaggregated else 'several instances'}; "
                     "`dynamo.yaml` puts NVIDIA Dynamo's frontend in front (or use llm-d's scheduler)")
    parts = [
        f"# Launch files: {launch.deployment_name} on {engine} {launch.version}",
        "",
        f"Written by `moeplan plan -o` for the plan's recommendation ({launch.mode}, {doc['devices']} devices). "
        f"Engine version: {launch.version} ({launch.version_note}). Model: `{launch.model_path}` (set `MODEL` to a "
        "local copy to load from disk). Every parallel size here is plan.json's; `launch.json` holds the same "
        "as data (each pool's sizes and argv).",
        "",
        "## Pools",
        *[line for p in launch.pools for line in _pool_lines(p)],
        "",
        "## Start, in this order",
        *order,
        "",
        "Each script takes its settings from the environment: `MODEL`, `PORT` (instance i of a pool listens on the "
        "pool's first port + i), and for an instance over several nodes `NODE_RANK` and `HEAD_ADDR` (its node 0)"
        + (", `HOSTS` for mpirun" if launch.engine == "trtllm" else "") + ". The router's `*_HOST` variables are each "
        "instance's node 0 address.",
        "",
        "On Kubernetes with NVIDIA Dynamo instead: replace `DYNAMO_RELEASE` in `dynamo.yaml` with the Dynamo release "
        "to run, then `kubectl create configmap NAME-launch --from-file=launch/` (the name is in the file's first line) "
        "and `kubectl apply -f launch/dynamo.yaml`.",
        "",
        "## Where the values come from",
        "- parallel sizes, redundant slots, two-batch overlap, batch and chunk: the plan's recommendation (plan.json);",
        "- the share of GPU memory for weights and KV cache: the spec's serving.hbm_utilization"
        + (" (TensorRT-LLM's free_gpu_memory_fraction is the KV cache's share of what the weights leave: the plan's "
           "KV bytes over that)" if launch.engine == "trtllm" else "") + ";",
        "- the KV cache format: the spec's precision.kv_cache; the context length: the workload's longest prompt plus "
        "its output (left to the model's own when the workload gives no longest prompt);",
        *_weight_lines(launch),
        f"- the all-to-all backend, the KV transfer and how sizes map onto {engine}'s flags: moeplan/launch/"
        f"{launch.engine}.py's docstring, with its sources;",
        "- the flags exist at the pinned version moeplan checks them against: catalogs/engine_flags.yaml (tests).",
        "",
        "## Files",
        *[f"- `{n}`" for n in [*names, "README.md"]],
        "",
    ]
    return "\n".join(parts)
