"""The engine settings `trtllm-bench throughput` picks for a run that names none.

Without --max_batch_size and --max_num_tokens, trtllm-bench sizes both from the checkpoint and the dataset
(NVIDIA/TensorRT-LLM: tensorrt_llm/bench/build/tuning.py `calc_engine_setting` and `finetune_setting` at
04cba882, bench/build/build.py `get_benchmark_engine_settings` at 000a01de, bench/benchmark/utils/general.py
`get_settings` at 0171265e, bench/build/dataclasses.py `ModelConfig` at 04cba882):

- the engine's size is the checkpoint's safetensors element count times the bytes of its quantisation
  (NVFP4 0.5, FP8 and FP8 block scales 1, unquantised 2); a packed 4-bit tensor counts one element per byte,
  and every scale is an element;
- the KV bytes per token are 2 x layers x max(tp, num_key_value_heads) x head_size x (FP8 KV 1, NVFP4 KV 0.5,
  else 2), with config.json's `num_key_value_heads` (absent: the attention heads) and `head_dim`
  (absent: hidden_size / heads). MLA models count as their config states: DeepSeek-V3's 128 KV heads of 56;
- the requests the KV memory holds: (tp GPUs' memory - engine) x the KV fraction / (KV per token x (isl + osl));
  max_batch_size is that, capped at 4,096 and divided by pp, rounded up (to 32 below 256 with at least 64, to
  128 below 1,024, else to 256); max_num_tokens is that batch x (1 + isl / osl), capped at 32,768, rounded up
  (to 256 below 4,096 with at least 2,048, to 512 below 8,192, else to 1,024);
- a quantisation the heuristic does not tune (MXFP4, INT4 AWQ, ...) gets BuildConfig's defaults, 2,048 and 8,192;
- chunked prefill is off unless asked for, so max_num_tokens is raised to at least isl + max_batch_size.

Under attention DP every rank admits up to max_batch_size requests (the executor's request queue caps the group
at tp x max_num_active_requests) and runs at most max_num_tokens tokens per step.

CUDA graphs (`captured_graph_batches`): the engine captures a decode graph for each of the run's
`cuda_graph_config.batch_sizes` up to min(max_batch_size, max_num_tokens) (a pure decode step's largest batch),
and with `enable_padding` a larger stated size captures that limit instead (tensorrt_llm/_torch/pyexecutor/
model_engine.py `_filter_cuda_graph_batch_sizes`). A step whose every rank only decodes runs the graph of the
smallest captured size that holds the largest rank's batch, padded with a dummy request of one token
(pyexecutor/cuda_graph_runner.py: `_round_up_to_closest` over the batch gathered from all attention-DP ranks,
`padding_dummy_request`); a step that prefills anything runs eagerly, unpadded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from hwmodels.arithmetic import weight_matrices
from hwmodels.model_arch import ModelArch
from hwmodels.precision import PrecisionPlan

GIB = 1024 ** 3
KV_FRACTION = 0.90  # trtllm-bench throughput's --kv_cache_free_gpu_mem_fraction default
DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_NUM_TOKENS = 2048, 8192  # BuildConfig's, for quantisations it does not tune
# QuantAlgo -> bytes per element (tuning.py BYTES_PER_ELEM), keyed by moeplan's scheme of the routed experts
ENGINE_BYTES_PER_ELEMENT = {"nvfp4": 0.5, "fp8": 1.0, "fp8_tensor": 1.0, "bf16": 2.0, "fp16": 2.0}
KV_BYTES_PER_ELEMENT = {"fp8": 1.0, "fp4": 0.5}  # else 2


@dataclass(frozen=True)
class BenchSettings:
    max_batch_size: int  # requests per attention rank
    max_num_tokens: int  # tokens per step per rank, decode tokens included
    rule: str  # how they were chosen, for the assumptions


def checkpoint_elements(arch: ModelArch, plan: PrecisionPlan) -> float:
    """The safetensors element count of the checkpoint in `plan`'s formats: a 4-bit tensor packs two values per
    byte-sized element, and each block scale is one element."""
    total = 0.0
    for w in weight_matrices(arch):
        s = plan.of(w.part)
        data = w.rows * w.cols * min(s.dtype.bytes_per_element, 1.0)
        scales = 0
        if s.scale_bytes:
            scales = ((math.ceil(w.rows / s.block_rows) if s.block_rows else w.rows)
                      * (math.ceil(w.cols / s.block_cols) if s.block_cols else 1))
        total += (data + scales) * w.count
    return total


# finetune_setting's rounding: (below this, up to a multiple of this, at least this)
BATCH_STEPS = ((256, 32, 64), (1024, 128, 0), (math.inf, 256, 0))
TOKEN_STEPS = ((4096, 256, 2048), (8192, 512, 0), (math.inf, 1024, 0))


def _rounded(x: float, steps: tuple) -> int:
    _, multiple, least = next(step for step in steps if x < step[0])
    return max(least, multiple * math.ceil(x / multiple))


def _finetune(requests: float, isl: int, osl: int, pp: int) -> tuple[int, int]:
    raw_bs = min(requests, 4096) / pp
    return _rounded(raw_bs, BATCH_STEPS), _rounded(min(raw_bs * (1 + isl / osl), 32768), TOKEN_STEPS)


def captured_graph_batches(stated: tuple[int, ...], max_batch_size: int, max_num_tokens: int) -> tuple[int, ...]:
    """The decode batch sizes the engine captures a CUDA graph for, with padding on (module docstring)."""
    limit = min(max_batch_size, max_num_tokens)
    kept = sorted({b for b in stated if b <= limit})
    if any(b > limit for b in stated) and (not kept or kept[-1] != limit):
        kept.append(limit)
    return tuple(kept)


def _config_int(config: Mapping[str, Any], *keys: str) -> int | None:
    return next((int(config[k]) for k in keys if isinstance(config.get(k), (int, float))), None)


def engine_settings(arch: ModelArch, config: Mapping[str, Any], plan: PrecisionPlan, device_hbm_bytes: float,
                    tp: int, pp: int, isl: int, osl: int, kv_fraction: float = KV_FRACTION) -> BenchSettings:
    """trtllm-bench's max_batch_size and max_num_tokens for `tp` x `pp` GPUs of `device_hbm_bytes` each serving
    `config` (its config.json) in `plan`'s formats, on a dataset of `isl` / `osl` tokens (module docstring)."""
    engine_bytes = ENGINE_BYTES_PER_ELEMENT.get(plan.of("routed_experts").name)
    if engine_bytes is None:
        batch, tokens = DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_NUM_TOKENS
        rule = f"{plan.of('routed_experts').name} is not a quantisation trtllm-bench's heuristic tunes: its defaults"
    else:
        heads = _config_int(config, "num_attention_heads", "n_head") or arch.attention.num_heads
        kv_heads = _config_int(config, "num_key_value_heads", "num_kv_heads") or heads
        head_size = (_config_int(config, "head_size", "head_dim", "attention_head_dim")
                     or (_config_int(config, "hidden_size", "n_embd") or arch.hidden_size) // heads)
        layers = _config_int(config, "num_hidden_layers", "n_layer") or arch.num_layers
        kv_bytes = KV_BYTES_PER_ELEMENT.get(plan.kv_cache.name, 2.0)
        kv_gib_per_token = 2 * layers * max(tp, kv_heads) * head_size * kv_bytes / GIB
        engine_gib = checkpoint_elements(arch, plan) * engine_bytes / GIB
        free_gib = device_hbm_bytes / GIB * tp * pp - engine_gib
        requests = free_gib * kv_fraction / (kv_gib_per_token * (isl + osl))
        if requests < 1:
            batch, tokens = DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_NUM_TOKENS  # trtllm-bench refuses; the run used its own
            rule = "trtllm-bench's heuristic finds no room for KV: its defaults"
        else:
            batch, tokens = _finetune(requests, isl, osl, pp)
            rule = (f"trtllm-bench's heuristic: engine {engine_gib:.0f} GiB, {requests:.0f} requests of {isl + osl} "
                    f"tokens in KV at {max(tp, kv_heads)} KV heads of {head_size}")
    tokens = max(tokens, isl + batch)  # chunked prefill off: a whole prompt must fit beside the batch
    return BenchSettings(batch, tokens, rule)
