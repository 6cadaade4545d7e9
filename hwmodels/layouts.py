"""The parallel layouts moeplan prices: one space for `moeplan check` (does the model fit) and the planner's search
(what each layout costs), so every layout either names is one the step model and the simulator can price.

On an instance of `devices` devices: attention tensor-parallel over 1, 2, 4, 8 or 16 devices inside one scale-up
domain, dividing the attention heads; the remaining devices as data-parallel attention groups, over which an MoE's
routed experts are expert-parallel; for an MoE, redundant expert slots that spread the experts evenly (the fewest,
and one more slot per device) and two-batch overlap off and on. Pipeline stages are not in the space: the step
model prices pp = 1 layouts only.
"""

from __future__ import annotations

from hwmodels.hardware import Cluster
from hwmodels.layout import Layout
from hwmodels.model_arch import ModelArch

ATTENTION_TP = (1, 2, 4, 8, 16)


def layout_space(arch: ModelArch, cluster: Cluster) -> list[Layout]:
    """Every layout of `arch` on all of `cluster`'s devices (module docstring)."""
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
