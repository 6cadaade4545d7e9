"""The parallel layouts moeplan prices: one space for `moeplan check` (does the model fit) and the planner's search
(what each layout costs), so every layout either names is one the step model and the simulator can price.

On an instance of `devices` devices: attention tensor-parallel over 1, 2, 4, 8 or 16 devices inside one scale-up
domain, or over all of an instance's (a pipeline stage's) up to 16 devices across domains, its all-reduce then paced
by the scale-out fabric (the engines' documented two-node recipes: SGLang's `--tp 16 --nnodes 2` for DeepSeek-V3 on
two H20 or H200 nodes, sgl-project/sglang benchmark/deepseek_v3/README.md, TensorRT-LLM's `trtllm-llmapi-launch
trtllm-serve deepseek-ai/DeepSeek-V3 ... --tp_size 16 --ep_size 4` on two nodes in its trtllm-serve docs; for
TensorRT-LLM, whose attention is DP or TP over all ranks, the only way to split a long prompt over more than one GPU
of a multi-node instance), dividing the attention heads; the remaining devices as data-parallel attention groups,
over which an MoE's routed experts are expert-parallel; for an MoE, redundant expert slots that spread the experts
evenly (the fewest, and one more slot per device: the search weighs a slot's better balance against the KV cache it
takes HBM from; or the count the user fixed, serving.redundant_experts, where the EP size divides experts + it) and
two-batch overlap off and on. Pipeline stages (hwmodels.pipeline): pp in (2, 4) where each stage is whole nodes (at
least one) and the instance spans more than one scale-up domain, the layouts above on each stage's devices. PP wins
two ways: a stage of one scale-up domain keeps its attention and all-to-all on the scale-up links, only the
stage-to-stage activations crossing the scale-out fabric; and a device holds 1 / pp of the layers, so its attention
weights (replicated by DP attention) and each sequence's KV cache shrink by pp and more sequences fit (the routed
experts per device stay as many: a stage's EP group is 1 / pp of the devices). Inside one scale-up domain the
all-to-all is on the scale-up links already, and splitting a node would put a stage's all-to-all on fewer devices
while its transfers stay on them too, so neither is in the space.

A serving engine runs only the layouts its flags can say (`expressible`): TensorRT-LLM's attention is either
data-parallel over every rank (`enable_attention_dp`) or tensor-parallel over all of them, so TP x DP attention
is left out of its space; vLLM's experts are either expert-parallel over all of an instance's ranks
(`--enable-expert-parallel`) or tensor-parallel over them; SGLang's `--tp-size`, `--dp-size` and `--ep-size` say
any of these layouts. Each engine takes pipeline stages (`--pp-size`, `--pipeline-parallel-size`,
`pipeline_parallel_size`); SGLang's with any stage layout (its PP composes with DP attention and EP, lmsys.org
2026-01-15), vLLM's and TensorRT-LLM's only with TP attention inside a stage (dp = 1): the pipeline-parallel recipes
they document run TP x PP, and neither says its data-parallel attention runs under PP, so the space leaves it out.
Context parallelism (a prefill pool's prompts split over cp attention groups, cp > 1) only where the engine's pinned
flags say prefill CP: SGLang's --enable-prefill-cp; vLLM's is under development upstream and TensorRT-LLM's context
parallelism serves decode (Helix).

Attention-FFN disaggregation (hwmodels.afd; decode pools, planner.search): an MoE instance's devices split into
attention devices and FFN devices (`_disaggregated_layouts`). No engine's pinned flags say it, so the space holds it
only when asked (`afd`), which the search does where the user named no engine.
"""

from __future__ import annotations

from hwmodels.hardware import Cluster
from hwmodels.layout import Layout
from hwmodels.model_arch import ModelArch

ATTENTION_TP = (1, 2, 4, 8, 16)
PIPELINE_STAGES = (1, 2, 4)


PREFILL_CP_ENGINES = (None, "sglang")  # the engines whose pinned flags say prefill CP (catalogs/engine_flags.yaml)


def expressible(layout: Layout, engine: str | None) -> bool:
    """Whether `engine` (sglang, trtllm, vllm; None: any) can run `layout` (module docstring)."""
    if layout.ffn_devices:
        return engine is None
    if layout.cp > 1 and engine not in PREFILL_CP_ENGINES:
        return False
    if engine in ("trtllm", "vllm") and layout.pp > 1 and layout.dp > 1:
        return False
    if engine == "trtllm":
        return layout.tp == 1 or layout.dp == 1
    if engine == "vllm":
        return layout.moe_tp in (1, layout.tp * layout.dp)
    return True


AFD_LIMIT = ("no engine moeplan writes launch files for serves attention-FFN disaggregation at its pinned version "
             "(catalogs/engine_flags.yaml)")
LIMITS = {"trtllm": "TensorRT-LLM's attention is DP over every rank or TP over all of them: no TP x DP attention; "
                    "pipeline stages only with TP attention; no prefill context parallelism",
          "vllm": "vLLM's experts are EP or MoE TP over all of an instance's ranks: no mixed MoE TP x EP; "
                  "pipeline stages only with TP attention; no prefill context parallelism"}


def layout_space(arch: ModelArch, cluster: Cluster, engine: str | None = None,
                 redundant_experts: int | None = None, afd: bool = False) -> list[Layout]:
    """Every layout of `arch` on all of `cluster`'s devices that `engine` can run (module docstring); with
    `redundant_experts`, an MoE's layouts hold that many redundant slots, where their EP size divides experts + it;
    with `afd`, the attention-FFN disaggregated layouts too, which no engine runs (the search asks for them where
    the user named no engine: `engine` then only says whose tables price the operators)."""
    out = [x for x in _all_layouts(arch, cluster, redundant_experts) if expressible(x, engine)]
    return out + _disaggregated_layouts(arch, cluster, redundant_experts) if afd else out


def pipeline_stages(arch: ModelArch, cluster: Cluster) -> list[int]:
    """The stage counts of the space on `cluster` (module docstring): 1, and 2 or 4 where the instance spans several
    scale-up domains and each stage is whole nodes."""
    node, devices, domain = cluster.unit.devices_per_node, cluster.num_devices, cluster.unit.scaleup_domain_devices
    return [pp for pp in PIPELINE_STAGES if pp == 1 or (devices > domain and devices % (pp * node) == 0
                                                       and pp <= arch.num_layers)]


def _all_layouts(arch: ModelArch, cluster: Cluster, redundant_experts: int | None) -> list[Layout]:
    domain = cluster.scaleup_domain_devices
    out = []
    for pp in pipeline_stages(arch, cluster):
        devices = cluster.num_devices // pp  # one stage's
        for tp in (t for t in ATTENTION_TP if devices % t == 0 and (t <= domain or t == devices)
                   and arch.attention.num_heads % t == 0):
            if not arch.is_moe:
                out.append(Layout(tp=tp, dp=devices // tp, pp=pp))
                continue
            fewest = -arch.moe.num_experts % devices
            if redundant_experts is None:
                options = sorted({fewest, fewest + devices})
            else:
                options = [redundant_experts] if (arch.moe.num_experts + redundant_experts) % devices == 0 else []
            for redundant in options:
                for overlap in (False, True):
                    out.append(Layout(tp=tp, dp=devices // tp, pp=pp, redundant_experts=redundant,
                                      two_batch_overlap=overlap))
    return out


AFD_FFN_SHARES = (1, 2, 3)  # quarters of an instance's devices that run the routed experts (hwmodels.afd)


def _disaggregated_layouts(arch: ModelArch, cluster: Cluster, redundant_experts: int | None) -> list[Layout]:
    """Attention-FFN disaggregated layouts (hwmodels.afd): a quarter, half or three quarters of the devices run the
    routed experts, whole nodes each where the instance spans nodes, the rest attention (TP inside a scale-up domain,
    DP over the rest); the fewest redundant slots and one more per FFN device, or the user's count."""
    devices, node, domain = cluster.num_devices, cluster.unit.devices_per_node, cluster.scaleup_domain_devices
    if not arch.is_moe or devices < 2 or devices % 4:
        return []
    out = []
    for share in AFD_FFN_SHARES:
        ffn = devices * share // 4
        attention = devices - ffn
        if devices > node and (ffn % node or attention % node):
            continue
        if redundant_experts is None:
            fewest = -arch.moe.num_experts % ffn
            options = sorted({fewest, fewest + ffn})
        else:
            options = [redundant_experts] if (arch.moe.num_experts + redundant_experts) % ffn == 0 else []
        for tp in (t for t in ATTENTION_TP if attention % t == 0 and t <= domain and arch.attention.num_heads % t == 0):
            out += [Layout(tp=tp, dp=attention // tp, redundant_experts=r, ffn_devices=ffn) for r in options]
    return out
