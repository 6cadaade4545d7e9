"""Pipeline stages of a layout (`Layout.pp` > 1): which layers each stage holds and how stage times make a step.

Partition (`stage_layers`): the serving engines split the decoder layers by count, not by time: num_layers // pp
per stage, the remainder one layer each to the stages before the last, from the second-to-last backwards (the first
holds the embedding and the last the LM head, final norm and sampling). vLLM `vllm/distributed/utils.py
get_pp_indices` (`VLLM_PP_LAYER_PARTITION` overrides it); SGLang loads its layers with the same function
(`sglang/srt/distributed/utils.py`); Kimi K2's 61 layers split [31, 30] over PP2 and [15, 15, 16, 15] over PP4.
Each stage is a tp x dp (x moe_tp / ep) group of its own: its attention and expert all-to-all stay inside it. The
embedding runs on the first stage (with a multimodal model's vision encoder), the LM head on the last (with the MTP
module, which shares it).

Between stages each device sends its rows' hidden state and residual (two [rows, D] activations in the combine
dtype: vLLM's `IntermediateTensors` and SGLang's `PPProxyTensors` of DeepSeek-V2/V3 hold `hidden_states` and
`residual`; a TP group splits them over its ranks, `send_tensor_dict(all_gather_group=tp_group)`) point to point to
its peer of the next stage (hwmodels.collectives.send_recv_cost: NVLink inside a scale-up domain, the NIC across).

A step (`PipelineTimes`): the engines keep pp micro-batches in flight (SGLang's `event_loop_pp` runs `pp_size`
micro-batches, `running_mbs`; vLLM's pipeline-parallel scheduler one batch per virtual engine; TensorRT-LLM's PP
executor as many), each a tp x dp group's batch. A micro-batch passes every stage in turn, so one token of a sequence
(decode) or one chunk (prefill) takes `latency_s` = the stage times + the transfers between them (decode: and the
sampled token ids back to the first stage); the slowest stage takes pp micro-batches per round, so every
micro-batch comes round again after

    cycle_s = max(latency_s, pp x max(stage_s))

which is the decode step a sequence sees (its TPOT), and pp micro-batches complete per cycle, one per slowest stage
time when the stages are even. A layout of pp stages holding B sequences per device thus has pp micro-batches of B
rows on each stage device: `StepContext.step` at tokens_per_device = B returns time_s = cycle_s, so the tokens per
device per second stay B / time_s as at pp = 1. The queueing (planner.tpot, planner.search) and the simulator
take such a decode instance as dp x pp ranks of B x tp sequences each, one per micro-batch of each DP attention
group, each stepping once a cycle (SGLang keeps a request in the micro-batch it joined). Prefill: a prompt's chunks follow one another through the stages
(SGLang's chunked pipeline parallelism, lmsys.org 2026-01-15), so one prompt of n chunks alone takes
latency_s + (n - 1) x interval_s, interval_s the slowest stage (`prompt_s`).
"""

from __future__ import annotations

from dataclasses import dataclass

TOKEN_ID_BYTES = 8  # the sampled token ids the last stage returns to the first (int64), per sequence


def stage_layers(num_layers: int, pp: int) -> list[range]:
    """Layer ranges of each pipeline stage, as the engines split them (module docstring): [pp] ranges."""
    assert pp >= 1, pp
    sizes = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        sizes[-i] += 1
    out, start = [], 0
    for n in sizes:
        out.append(range(start, start + n))
        start += n
    return out


@dataclass(frozen=True)
class PipelineTimes:
    """The stages of one step: each stage's time for one micro-batch, the transfers after each stage."""

    stage_s: tuple[float, ...]  # [pp]: layers, plus the embedding on the first and the LM head on the last
    transfer_s: tuple[float, ...]  # stage i -> i + 1 activations (decode: and the last stage's token ids back)

    @property
    def pp(self) -> int:
        return len(self.stage_s)

    @property
    def latency_s(self) -> float:
        """One micro-batch through every stage: the stage times plus the transfers."""
        return sum(self.stage_s) + sum(self.transfer_s)

    @property
    def interval_s(self) -> float:
        """The slowest stage: the gap between micro-batches (or a prompt's chunks) leaving the pipeline."""
        return max(self.stage_s)

    @property
    def cycle_s(self) -> float:
        """The time until a micro-batch comes round again: max(latency, pp x slowest stage)."""
        return max(self.latency_s, self.pp * self.interval_s)

    def prompt_s(self, chunks: float) -> float:
        """One prompt of `chunks` chunks prefilled alone, its chunks pipelined over the stages."""
        return self.latency_s + max(chunks - 1.0, 0.0) * self.interval_s
