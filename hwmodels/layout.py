"""A parallel layout of one serving role (an aggregated instance, or a prefill or decode pool)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """`tp * dp * pp` devices: attention tensor-parallel over `tp`, `dp` data-parallel attention groups
    per pipeline stage, routed experts expert-parallel over the `tp * dp` devices of a stage, or, with
    `moe_tp` > 1, each expert's intermediate width split over `moe_tp` devices and the experts over the
    remaining `tp * dp / moe_tp` (TensorRT-LLM's and vLLM's MoE tensor parallelism; moe_tp = tp * dp is pure
    MoE TP, with an all-reduce in place of the all-to-all).

    redundant_experts: extra expert slots per MoE layer over the EP group (EPLB replicas of hot experts).
    two_batch_overlap: split each step into two micro-batches so one computes while the other communicates.
    cp: context parallelism of a prefill pool: each prompt's tokens split over `cp` of a stage's attention groups,
    which prefill it together (SGLang's --enable-prefill-cp); the `dp / cp` such ranks each take prompts apart.
    ffn_devices: attention-FFN disaggregation (decode pools; hwmodels.afd): the routed experts on `ffn_devices`
    devices of their own, expert-parallel over them, while the `tp * dp` attention devices hold attention, the dense
    layers, the shared experts and every sequence's KV cache (MegaScale-Infer, Step-3, xDeepServe). 0: none.
    """

    tp: int
    dp: int
    pp: int = 1
    redundant_experts: int = 0
    two_batch_overlap: bool = False
    moe_tp: int = 1
    cp: int = 1
    ffn_devices: int = 0

    def __post_init__(self):
        if min(self.tp, self.dp, self.pp, self.moe_tp, self.cp) < 1 or self.redundant_experts < 0:
            raise ValueError(f"invalid layout {self}")
        if (self.tp * self.dp) % self.moe_tp:
            raise ValueError(f"invalid layout {self}: moe_tp must divide tp x dp")
        if self.dp % self.cp:
            raise ValueError(f"invalid layout {self}: cp must divide dp")
        if self.ffn_devices < 0 or self.ffn_devices and (self.pp, self.moe_tp, self.cp, self.two_batch_overlap) != (1, 1, 1, False):
            raise ValueError(f"invalid layout {self}: attention-FFN disaggregation runs one stage, EP experts, no CP, "
                             "and its own micro-batches in place of two-batch overlap")

    @property
    def rank_devices(self) -> int:
        """The devices that prefill one prompt together (a rank): its attention TP group, times cp."""
        return self.tp * self.cp

    @property
    def attention_devices(self) -> int:
        """The devices that run attention and hold the KV cache: all of them unless attention-FFN disaggregated."""
        return self.tp * self.dp * self.pp

    @property
    def devices(self) -> int:
        return self.attention_devices + self.ffn_devices

    @property
    def batch_device(self) -> str:
        """What a batch "per device" counts per: the devices that hold sequences."""
        return "attention device" if self.ffn_devices else "device"

    @property
    def ep(self) -> int:
        return self.ffn_devices or self.tp * self.dp // self.moe_tp

    @property
    def tp_over_group(self) -> bool:
        """Attention tensor-parallel over the whole group, no attention DP: every device holds every token after the
        attention's all-reduce, so the experts take no all-to-all (their outputs are summed by one more all-reduce)."""
        return self.dp == 1 and self.tp > 1

    def name(self, is_moe: bool = True) -> str:
        parts = [f"TP{self.tp}" if self.tp > 1 or self.dp == 1 else "", f"DP{self.dp}" if self.dp > 1 else ""]
        attention = " x ".join(p for p in parts if p) + " attention"
        experts = ""
        if is_moe and (self.ep > 1 or self.ffn_devices):
            experts = f" + EP{self.ep}" + (f" (+{self.redundant_experts} redundant)" if self.redundant_experts else "")
        if is_moe and self.moe_tp > 1:
            experts += f" + MoE TP{self.moe_tp}"
        stages = ", AFD" if self.ffn_devices else ""  # the experts' EP group on devices of its own
        stages += f", PP{self.pp}" if self.pp > 1 else ""
        stages += f", CP{self.cp}" if self.cp > 1 else ""
        overlap = ", two-batch overlap" if self.two_batch_overlap else ""
        return attention + experts + stages + overlap
