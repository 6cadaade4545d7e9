"""What every engine's launch files say, read off a plan once: per pool, its instances, parallel sizes, batch and
chunk, in the units engines take them (an engine's rank is one attention group of `attention_tp` devices; with
`pipeline_stages` > 1 an instance is that many stages of devices / pipeline_stages each, and a rank's batch is one
micro-batch, hwmodels.pipeline).

Sizes follow plan.json exactly (tests/test_launch_files.py compares them). Per-rank and per-instance figures:
- a decode or aggregated rank runs `batch_per_device x attention_tp` sequences (its devices share them);
- an instance runs `batch_per_device x devices` (SGLang's --max-running-requests is the instance's, split over
  its DP ranks);
- a prefill step takes `chunk_tokens_per_device` prompt tokens per device: `x attention_tp` per rank,
  `x devices` per instance (SGLang's --chunked-prefill-size is the instance's, divided over DP ranks);
- context parallel (`context_parallel` > 1, prefill pools): a rank is that many attention groups prefilling each
  prompt together, so an instance has attention_dp / context_parallel ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwmodels.precision import default_plan
from hwmodels.roles import Role
from planner.placement import Placement
from planner.plan import Mode, Plan

ONLINE_FP8 = ("fp8", "fp8_tensor")  # the plan's formats an fp8 load-time quantisation stands for
UNQUANTISED = ("bf16", "fp16", "fp32")
LINEAR_PARTS = ("routed_experts", "shared_experts", "dense_mlp", "attention")
ONLINE_FP8_ENGINES = ("sglang", "vllm")  # TensorRT-LLM's PyTorch flow loads pre-quantised (ModelOpt) checkpoints
BASE_PORT = 30000  # SGLang's default server port: a pool's first instance; its instances count up from it (pools 10 apart)
ROUTER_PORT = 8000  # the front end's (TensorRT-LLM's disaggregated server defaults to 8000)


@dataclass(frozen=True, eq=False)
class PoolLaunch:
    role: Role
    instances: int
    devices: int  # per instance
    nodes: int  # per instance (1: the instance is one node or part of one)
    devices_per_node: int  # that the instance uses on each of its nodes
    attention_tp: int
    attention_dp: int
    expert_parallel: int
    moe_tp: int
    redundant_experts: int
    two_batch_overlap: bool
    batch_per_device: int | None  # None for a prefill pool
    chunk_tokens_per_device: int
    kv_free_fraction: float  # the KV cache's share of the memory left after weights and workspace (TensorRT-LLM)
    placement: Placement | None
    port: int
    draft_tokens: int = 0  # MTP speculative decoding's drafts per step (0: none)
    pipeline_stages: int = 1  # each of devices / pipeline_stages devices: attention_dp ranks, EP expert_parallel
    context_parallel: int = 1  # a prefill rank: this many attention groups prefilling each prompt together

    @property
    def stage_devices(self) -> int:
        """The devices of one pipeline stage (the instance's, without stages): the engines' TP world size."""
        return self.devices // self.pipeline_stages

    @property
    def sequences_per_rank(self) -> int | None:
        return None if self.batch_per_device is None else self.batch_per_device * self.attention_tp

    @property
    def sequences_per_instance(self) -> int | None:
        return None if self.batch_per_device is None else self.batch_per_device * self.devices

    @property
    def chunk_tokens_per_rank(self) -> int:
        return self.chunk_tokens_per_device * self.attention_tp * self.context_parallel

    @property
    def chunk_tokens_per_instance(self) -> int:
        return self.chunk_tokens_per_device * self.devices

    @property
    def placement_file(self) -> str | None:
        return None if self.placement is None else f"expert_location_{self.role}.json"


@dataclass(frozen=True, eq=False)
class Launch:
    engine: str
    version: str  # the engine version the files are written for
    version_note: str  # where that version came from
    model_path: str  # the HuggingFace repository (or the config.json's folder) the servers load
    is_moe: bool
    num_experts: int
    mode: Mode
    hbm_utilization: float
    kv_cache_fp8: bool
    context_tokens: int | None  # the longest context the workload brings (None: the model's own)
    input_tokens: int  # the workload's mean prompt
    pools: tuple[PoolLaunch, ...]  # prefill first when disaggregated
    deployment_name: str
    # (part, the plan's format, the checkpoint's) where the spec's precision differs from the config.json's
    requantized: tuple[tuple[str, str, str], ...] = ()
    linear_parts: tuple[str, ...] = ()  # the linear parts the model has (online fp8 covers all of them or none)

    @property
    def online_fp8(self) -> bool:
        """The plan prices every linear layer in fp8 that the checkpoint ships unquantised: what SGLang's and vLLM's
        `--quantization fp8` does as they load it (weights to fp8 with per-tensor scales, every linear layer)."""
        planned = {part: (to, shipped) for part, to, shipped in self.requantized}
        return bool(planned) and all(to in ONLINE_FP8 and shipped in UNQUANTISED for to, shipped in planned.values()) \
            and len(planned) == len(self.linear_parts)



def launch_of(plan: Plan, engine: str, version: str, version_note: str, model_path: str) -> Launch:
    """The launch facts of `plan`'s recommendation (module docstring)."""
    d = plan.deployment
    pools = []
    for i, pool in enumerate(plan.pools):
        layout, option = pool.layout, pool.option
        cluster = d.cluster_of(pool.role)
        per_node = min(pool.instance_devices, cluster.unit.devices_per_node)
        mem = option.perf.memory
        left = cluster.device.hbm_bytes - mem.weight_bytes - mem.workspace_bytes
        pools.append(PoolLaunch(
            role=pool.role, instances=pool.instances, devices=pool.instance_devices,
            nodes=pool.instance_devices // per_node, devices_per_node=per_node, attention_tp=layout.tp,
            attention_dp=layout.dp, expert_parallel=layout.ep, moe_tp=layout.moe_tp,
            redundant_experts=layout.redundant_experts, two_batch_overlap=layout.two_batch_overlap,
            batch_per_device=pool.batch_per_device, chunk_tokens_per_device=pool.chunk_tokens_per_device,
            kv_free_fraction=max(0.01, min(1.0, mem.kv_capacity_bytes / left)) if left > 0 else 0.01,
            placement=pool.placement, port=BASE_PORT + 10 * i,
            draft_tokens=option.speculation.draft_tokens if option.speculation else 0, pipeline_stages=layout.pp,
            context_parallel=layout.cp))
    w = d.workload
    context = w.max_input_tokens + w.output_tokens if w.max_input_tokens else None
    moe = d.model.moe
    parts = _linear_parts(d.model)
    shipped = default_plan(d.model.quantization_config, d.model.torch_dtype).weights
    requantized = tuple((part, d.precision.weights[part].name, shipped[part].name) for part in parts
                        if d.precision.weights[part].name != shipped[part].name)
    return Launch(engine, version, version_note, model_path, d.model.is_moe, moe.num_experts if moe else 0,
                  plan.recommendation.mode, d.serving.hbm_utilization, d.precision.kv_cache.name == "fp8", context,
                  w.input_tokens, tuple(pools), d.name, requantized, parts)


def _linear_parts(arch) -> tuple[str, ...]:
    """The weight parts (hwmodels.precision) of linear layers the model has."""
    has = {"routed_experts": arch.is_moe, "shared_experts": bool(arch.moe and arch.moe.shared_intermediate_size),
           "dense_mlp": arch.num_dense_layers > 0, "attention": True}
    return tuple(part for part in LINEAR_PARTS if has[part])


def pool_json(p: PoolLaunch) -> dict:
    """A pool's sizes as launch.json states them (the keys tests compare with plan.json)."""
    return {"role": str(p.role), "instances": p.instances, "instance_devices": p.devices, "nodes_per_instance": p.nodes,
            "attention_tp": p.attention_tp, "attention_dp": p.attention_dp, "expert_parallel": p.expert_parallel,
            "moe_tp": p.moe_tp, "redundant_experts": p.redundant_experts, "two_batch_overlap": p.two_batch_overlap,
            "batch_per_device": p.batch_per_device, "chunk_tokens_per_device": p.chunk_tokens_per_device,
            "mtp_draft_tokens": p.draft_tokens, "pipeline_stages": p.pipeline_stages,
            "context_parallel": p.context_parallel, "port": p.port}


def weights_json(launch: Launch) -> dict:
    """What launch.json says of the weight formats: the parts the plan prices in another format than the
    checkpoint ships, and the load-time quantisation the files ask for (None: MODEL must already be in them)."""
    return {"requantized": [{"part": part, "planned": to, "checkpoint": shipped} for part, to, shipped in launch.requantized],
            "load_time_quantization": "fp8" if launch.online_fp8 and launch.engine in ONLINE_FP8_ENGINES else None}

