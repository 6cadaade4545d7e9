"""The parallel layouts moeplan prices: one space for `moeplan check` (does the model fit) and the planner's search
(what each layout costs), so every layout either names is one the step model and the simulator can price.

On an instance of `devices` devices: attention tensor-parallel over 1, 2, 4, 8 or 16 devices inside one scale-up
domain, dividing the attention heads; the remaining devices as data-parallel attention groups, over which an MoE's
routed experts are expert-parallel; for an MoE, redundant expert slots that spread the experts evenly (the fewest,
and one more slot per device) and two-batch overlap off and on. Pipeline stages are not in the space: the step
model prices pp = 1 layouts only.

A serving engine runs only the layouts its flags can say (`expressible`): TensorRT-LLM's attention is either
data-parallel over every rank (`enable_attention_dp`) or tensor-parallel over all of them, so TP x DP attention
is left out of its space; vLLM's experts are either expert-parallel over all of an instance's ranks
(`--enable-expert-parallel`) or tensor-parallel over them; SGLang's `--tp-size`, `--dp-size` and `--ep-size` say
any of these layouts.
"""

from __future__ import annotations

from hwmodels.hardware import Cluster
from hwmodels.layout import Layout
from hwmodels.model_arch import ModelArch

ATTENTION_TP = (1, 2, 4, 8, 16)


def expressible(layout: Layout, engine: str | None) -> bool:
    """Whether `engine` (sglang, trtllm, vllm; None: any) can run `layout` (module docstring)."""
    if engine == "trtllm":
        return layout.tp == 1 or layout.dp == 1
    if engine == "vllm":
        return layout.moe_tp in (1, layout.tp * layout.dp)
    return True


LIMITS = {"trtllm": "TensorRT-LLM's attention is DP over every rank or TP over all of them: no TP x DP attention",
          "vllm": "vLLM's experts are EP or MoE TP over all of an instance's ranks: no mixed MoE TP x EP"}


def layout_space(arch: ModelArch, cluster: Cluster, engine: str | None = None) -> list[Layout]:
    """Every layout of `arch` on all of `cluster`'s devices that `engine` can run (module docstring)."""
    return [x for x in _all_layouts(arch, cluster) if expressible(x, engine)]


def _all_layouts(arch: ModelArch, cluster: Cluster) -> list[Layout]:
    devices = cluster.num_devices
    domain = cluster.scaleup_domain_devices
    out = []
    for tp in (t for t in ATTENTION_TP if devices % t == 0 and t <= domain and arch.attention.num_heads % t == 0):
        if not arch.is_moe:
            out.append(Layout(tp=tp, dp=devices // tp))
            continue
        fewest = -arch.moe.num_experts % devices
        for redundant in sorted({fewest, fewest + devices}):
            for overlap in (False, True):
                out.append(Layout(tp=tp, dp=devices // tp, redundant_experts=redundant, two_batch_overlap=overlap))
    return out
