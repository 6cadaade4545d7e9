"""Absorbed MLA decode against the non-absorbed form (decompressed keys and values) in fp32."""

import pytest
import torch

from kernels_ref import TOLERANCE, calc_diff, mla_decode_absorbed
from kernels_ref.generators import generate_mla_decode

# Kimi K2's head dimensions (qk_nope 128, qk_rope 64, v 128, kv_lora_rank 512), fewer heads
DIMS = {"heads": 4, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "kv_lora_rank": 512}


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, TOLERANCE["fp32"]), (torch.bfloat16, TOLERANCE["bf16"])])
@pytest.mark.parametrize("seq_lens", [[1], [37, 1, 200, 64]])
def test_absorbed_matches_decompressed_reference(dtype, tolerance, seq_lens):
    inputs, reference = generate_mla_decode(seq_lens, dtype=dtype, seed=len(seq_lens), **DIMS)
    out = mla_decode_absorbed(inputs)
    assert out.shape == (len(seq_lens), DIMS["heads"], DIMS["v_head_dim"]) and out.dtype == dtype
    assert calc_diff(out, reference) < tolerance


def test_padding_past_a_sequence_is_ignored():
    inputs, _ = generate_mla_decode([5, 9], dtype=torch.float32, **DIMS)
    before = mla_decode_absorbed(inputs)
    inputs.c_kv[0, 5:] = 1e4  # garbage in the padding of the shorter sequence
    inputs.k_rope[0, 5:] = -1e4
    assert torch.equal(mla_decode_absorbed(inputs), before)
