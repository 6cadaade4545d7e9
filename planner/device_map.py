"""Where a pool's attention and KV cache sit, device by device and layer by layer: plan.json's `placement.attention`
and `placement.kv` beside the experts' maps (`placement.experts`), and the device-by-layer picture the dashboard's
Placement page draws.

An instance's devices in the layout's order: pipeline stage s holds the s-th block of devices and the layers of
the stage split (hwmodels.memory.stage_layers); inside a stage, attention data-parallel rank r holds `tp` devices in
a row, each with 1 / tp of the attention heads; with context parallelism (a prefill pool's cp > 1) cp consecutive
DP ranks prefill each prompt together (`cp_rank_of_device` names the rank they form). Every device also holds its
expert slots (placement.experts, phy2log's slot p on device p // slots_per_device), except attention-FFN
disaggregated (hwmodels.afd): the attention devices come first and hold no experts, the FFN devices after them hold
the slots (phy2log's slot p on FFN device p // slots_per_device, instance device attention_devices + that) and run no
attention, hold no KV (their stage, ranks and KV are null).

KV: each attention rank holds its own sequences, the pool's batch per device times tp; an MLA rank keeps its
sequences' whole latent cache on every one of its devices, a GQA rank splits the KV heads over them (what
hwmodels.memory's kv_bytes_per_sequence per device already says). The bytes are those sequences' caches at the
workload's context, against what the device has left after weights and workspace. A prefill pool holds the
prompts of one step: its tokens per device over the context.
"""

from __future__ import annotations

from typing import Any

from hwmodels.memory import stage_layers
from hwmodels.model_arch import ModelArch
from hwmodels.roles import Role
from planner.plan import Candidate


def attention_map(c: Candidate, arch: ModelArch) -> dict[str, Any]:
    """Per device: its pipeline stage, attention DP rank and TP rank; per layer: the stage that runs it."""
    lay, devices = c.layout, c.instance_devices
    attention = lay.attention_devices
    per_stage = attention // lay.pp
    stages = stage_layers(arch.num_layers, lay.pp)

    def of_attention(rank) -> list:
        return [rank(i) for i in range(attention)] + [None] * lay.ffn_devices
    roles = "every device runs attention and holds expert slots (no attention-FFN disaggregation)"
    if lay.ffn_devices:
        roles = (f"attention-FFN disaggregated: devices 0-{attention - 1} run attention and hold the KV cache, "
                 f"devices {attention}-{devices - 1} hold the routed experts")
    return {
        "roles": roles,
        "devices": devices,
        "role_of_device": ["attention"] * attention + ["experts"] * lay.ffn_devices if lay.ffn_devices
        else ["attention+experts"] * devices,
        "heads_per_device": arch.attention.num_heads // lay.tp,
        "stage_of_device": of_attention(lambda i: i // per_stage),
        "dp_rank_of_device": of_attention(lambda i: (i % per_stage) // lay.tp),
        "tp_rank_of_device": of_attention(lambda i: (i % per_stage) % lay.tp),
        "cp_rank_of_device": of_attention(lambda i: (i % per_stage) // lay.rank_devices),
        "stage_of_layer": [s for s, layers in enumerate(stages) for _ in layers],
    }


def kv_map(c: Candidate) -> dict[str, Any]:
    """The sequences each device's attention rank holds at the pool's batch, and their cache bytes on the device."""
    mem, lay = c.perf.memory, c.layout
    if c.role == Role.PREFILL:
        sequences = c.work_per_device * lay.tp / max(mem.context_tokens, 1)
    else:
        sequences = float(c.work_per_device * lay.tp)
    per_sequence = mem.kv_bytes_per_sequence + mem.linear_state_bytes_per_sequence
    return {
        "context_tokens": mem.context_tokens,
        "sequences_per_device": sequences,
        "bytes_per_sequence": per_sequence,
        "bytes_per_device": sequences * per_sequence,
        "capacity_bytes_per_device": mem.kv_capacity_bytes,
        "devices": lay.attention_devices,  # attention-FFN disaggregated, the FFN devices hold none
    }
