"""Multi-head latent attention (MLA) for decode, in the absorbed form over a compressed KV cache.

# B = sequences, H = heads, L = cache length (padded to the longest sequence),
# R = kv_lora_rank, P = qk_rope_head_dim, N = qk_nope_head_dim, V = v_head_dim
The cache holds, per token, the latent c_kv [R] and the shared rope key k_rope [P]. The
no-position part of each head's key is W_UK[h] @ c_kv and its value W_UV[h] @ c_kv, so
q_nope . k_nope = (q_nope @ W_UK[h]) . c_kv: absorbing W_UK into the query (and W_UV into the
output) reads the R + P cache elements of each token once for all heads instead of
decompressing H keys and values per token. DeepSeek-V2/V3's kv_b_proj weight [H * (N + V), R]
splits into W_UK [H, N, R] and W_UV [H, V, R].
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MlaDecodeInputs:
    q_nope: torch.Tensor  # [B, H, N]
    q_rope: torch.Tensor  # [B, H, P], rotary embedding already applied
    c_kv: torch.Tensor  # [B, L, R]
    k_rope: torch.Tensor  # [B, L, P], rotary embedding already applied
    seq_lens: torch.Tensor  # [B] int64, 1 <= seq_lens[b] <= L; positions beyond are padding
    w_uk: torch.Tensor  # [H, N, R]
    w_uv: torch.Tensor  # [H, V, R]
    softmax_scale: float


def mla_decode_absorbed(inputs: MlaDecodeInputs) -> torch.Tensor:
    """One decode step for every sequence, in the inputs' dtype with an fp32 softmax.

    Returns [B, H, V] in the dtype of q_nope.
    Six operations, each one pass: the softmax scale rides in the score GEMM's epilogue
    (baddbmm's alpha and beta) and the softmax reads the scores in their own dtype, computing in
    fp32 inside (PyTorch's CPU and CUDA softmax do); the padding mask is applied only where a
    sequence is shorter than the cache. Every extra elementwise pass over the [B, H, L] scores
    cost as much as a GEMM here, and on a shared CPU each operation can wait for a time slice.
    """
    a = inputs
    length = a.c_kv.shape[1]
    # 1. Absorb W_UK into the query: [B, H, N] x [H, N, R] -> [B, H, R].
    q_latent = torch.einsum("bhn,hnr->bhr", a.q_nope, a.w_uk)
    # 2. Scaled scores against the latent and the rope key of every cached token: [B, H, L].
    rope = a.q_rope @ a.k_rope.transpose(1, 2)
    scores = torch.baddbmm(rope, q_latent, a.c_kv.transpose(1, 2), beta=a.softmax_scale, alpha=a.softmax_scale)
    if bool((a.seq_lens < length).any()):
        padding = torch.arange(length, device=scores.device) >= a.seq_lens[:, None]  # [B, L]
        scores.masked_fill_(padding[:, None, :], float("-inf"))
    # 3. Attend in latent space, then apply W_UV per head: [B, H, R] -> [B, H, V].
    latent = torch.softmax(scores, dim=-1) @ a.c_kv
    return torch.einsum("bhr,hvr->bhv", latent, a.w_uv)


def mla_decode_reference(inputs: MlaDecodeInputs) -> torch.Tensor:
    """The same step without absorption, per sequence in fp32: decompress every cached token's
    key and value for every head, then ordinary attention. Returns [B, H, V] float32."""
    a = inputs
    outputs = []
    for b, length in enumerate(a.seq_lens.tolist()):
        c_kv, k_rope = a.c_kv[b, :length].float(), a.k_rope[b, :length].float()  # [L_b, R], [L_b, P]
        k_nope = torch.einsum("lr,hnr->hln", c_kv, a.w_uk.float())  # [H, L_b, N]
        value = torch.einsum("lr,hvr->hlv", c_kv, a.w_uv.float())  # [H, L_b, V]
        key = torch.cat([k_nope, k_rope.expand(k_nope.shape[0], -1, -1)], dim=-1)  # [H, L_b, N + P]
        query = torch.cat([a.q_nope[b].float(), a.q_rope[b].float()], dim=-1)  # [H, N + P]
        scores = torch.einsum("hd,hld->hl", query, key) * a.softmax_scale
        outputs.append(torch.einsum("hl,hlv->hv", torch.softmax(scores, dim=-1), value))
    return torch.stack(outputs)
