"""Token dispatch and combine within a device.

# T = tokens, K = top-k, E = experts, D = hidden; a "slot" is one (token, k) pair, a "row" is a
# position in the expert-sorted buffer that the grouped GEMM reads (contiguous layout).
dispatch copies each token to one row per chosen expert, grouped by expert and, within an
expert, in token order; combine sums each token's K expert outputs weighted by its gates.
On a CPU each is one native call (native_cpu's glue: a counting sort, a row gather, a fused
weighted sum) where PyTorch took several passes and temporaries; elsewhere PyTorch operations.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels_ref import native_cpu

COMBINE_CHUNK_TOKENS = 256


@dataclass(frozen=True)
class DispatchPlan:
    token_of_row: torch.Tensor  # [T * K] int64: the token each expert-sorted row copies
    row_of_slot: torch.Tensor  # [T, K] int64: the row that (token, k) went to
    counts: torch.Tensor  # [E] int64: rows per expert (zero for an empty expert)
    offsets: torch.Tensor  # [E + 1] int64: expert e owns rows offsets[e]:offsets[e + 1]


def plan_dispatch(topk_ids: torch.Tensor, num_experts: int) -> DispatchPlan:
    """topk_ids: [T, K] expert of each slot -> the permutation and the group sizes."""
    tokens, top_k = topk_ids.shape
    glue = native_cpu.library("glue") if topk_ids.device.type == "cpu" else None
    if glue is not None:
        ids = topk_ids.to(torch.int64).contiguous()
        token_of_row, row_of_slot = torch.empty(tokens * top_k, dtype=torch.int64), torch.empty(tokens, top_k, dtype=torch.int64)
        counts, offsets = torch.empty(num_experts, dtype=torch.int64), torch.empty(num_experts + 1, dtype=torch.int64)
        status = glue.plan_dispatch(ids.data_ptr(), tokens, top_k, num_experts, token_of_row.data_ptr(),
                                    row_of_slot.data_ptr(), counts.data_ptr(), offsets.data_ptr())
        assert status == 0, "an expert id is out of range"
        return DispatchPlan(token_of_row, row_of_slot, counts, offsets)
    flat = topk_ids.reshape(-1)  # [T * K], slot = token * K + k
    assert flat.numel() == 0 or 0 <= int(flat.min()) <= int(flat.max()) < num_experts
    # 1. Sort slots by expert; stable, so each expert's rows keep token order.
    slot_of_row = torch.argsort(flat, stable=True)
    # 2. Invert the permutation: slot -> row.
    row_of_slot = torch.empty_like(slot_of_row)
    row_of_slot[slot_of_row] = torch.arange(flat.numel(), device=flat.device)
    # 3. Group sizes and their prefix sums.
    counts = torch.bincount(flat, minlength=num_experts)
    return DispatchPlan(
        token_of_row=slot_of_row // top_k,
        row_of_slot=row_of_slot.view(tokens, top_k),
        counts=counts,
        offsets=F.pad(counts.cumsum(0), (1, 0)),
    )


def dispatch(x: torch.Tensor, plan: DispatchPlan) -> torch.Tensor:
    """x: [T, ...] (activations, fp8 codes or their scales) -> [T * K, ...] in expert order."""
    glue = native_cpu.library("glue") if x.device.type == "cpu" else None
    if glue is not None:
        x = x.contiguous()
        out = torch.empty((plan.token_of_row.numel(), *x.shape[1:]), dtype=x.dtype)
        row_bytes = x[0].numel() * x.element_size() if x.shape[0] else 0
        token_of_row = plan.token_of_row.contiguous()
        glue.gather_rows(x.data_ptr(), row_bytes, token_of_row.data_ptr(), out.shape[0], out.data_ptr(),
                         native_cpu.glue_threads(out.shape[0] * row_bytes))
        return out
    if x.dtype == torch.float8_e4m3fn:  # index kernels do not cover fp8; its bytes suffice
        return x.view(torch.uint8).index_select(0, plan.token_of_row).view(x.dtype)
    return x.index_select(0, plan.token_of_row)  # several times faster than x[index] on a CPU


def combine(
    y: torch.Tensor, plan: DispatchPlan, topk_weights: torch.Tensor, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """y: [T * K, D] expert outputs in row order, topk_weights: [T, K] gates
    -> [T, D] = sum over k of topk_weights[t, k] * y[row_of_slot[t, k]], summed in fp32."""
    tokens, top_k = plan.row_of_slot.shape
    glue = native_cpu.library("glue") if y.device.type == "cpu" and y.dtype in (torch.bfloat16, torch.float32) else None
    if glue is not None:
        y, weights, row_of_slot = y.contiguous(), topk_weights.float().contiguous(), plan.row_of_slot.contiguous()
        out = torch.empty(tokens, y.shape[1], dtype=torch.float32)
        glue.combine_rows(y.data_ptr(), int(y.dtype == torch.bfloat16), row_of_slot.data_ptr(), weights.data_ptr(),
                          tokens, top_k, y.shape[1], out.data_ptr(),
                          native_cpu.glue_threads(2 * tokens * top_k * y.shape[1]), None)
        return out.to(out_dtype or y.dtype)
    out = torch.empty(tokens, y.shape[1], dtype=torch.float32, device=y.device)
    # Chunks of tokens and one k at a time keep the temporaries small: on a CPU a fresh
    # multi-megabyte buffer costs page faults that took longer than the arithmetic.
    for t0 in range(0, tokens, COMBINE_CHUNK_TOKENS):
        chunk = slice(t0, t0 + COMBINE_CHUNK_TOKENS)
        acc = out[chunk].zero_()
        for k in range(top_k):
            gates = topk_weights[chunk, k, None].float()
            acc.add_(y.index_select(0, plan.row_of_slot[chunk, k]).float().mul_(gates))
    return out.to(out_dtype or y.dtype)
