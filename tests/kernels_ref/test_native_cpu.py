"""Which native kernels a machine gets: the ISA level from the CPU's flags, capped by KERNELS_REF_ISA."""

import pytest

from kernels_ref import native_cpu


def test_the_cap_only_lowers_the_level(monkeypatch):
    detected = native_cpu.isa_level()
    assert detected in native_cpu.LEVELS
    for cap in native_cpu.LEVELS:
        monkeypatch.setenv(native_cpu.ISA_ENV, cap)
        assert native_cpu.isa_level() == native_cpu.LEVELS[min(native_cpu.LEVELS.index(cap), native_cpu.LEVELS.index(detected))]
    monkeypatch.setenv(native_cpu.ISA_ENV, "avx9000")
    with pytest.raises(ValueError, match="KERNELS_REF_ISA"):
        native_cpu.isa_level()


def test_flags_accumulate_by_level_and_libraries_need_theirs(monkeypatch):
    assert native_cpu.compile_flags("none") == []
    assert set(native_cpu.compile_flags("avx2")) < set(native_cpu.compile_flags("amx"))
    monkeypatch.setenv(native_cpu.ISA_ENV, "none")
    assert native_cpu.library("gemm_avx512") is None and native_cpu.library("gemm_amx") is None


def test_flags_come_from_cpuinfo():
    flags = native_cpu.cpu_flags()
    assert isinstance(flags, frozenset)
    if native_cpu.isa_level() == "amx":
        assert {"amx_bf16", "avx512_bf16"} <= flags


@pytest.mark.parametrize("offset", [0, 3])  # a whole-line destination (streamed) and one that is not
def test_touch_bytes_reads_its_input_and_writes_every_output_byte(native_glue, offset):
    # the floor benchmarks/bench_cold_floor.py times: the input summed as 8-byte words, the output set to its low byte
    import torch

    src = torch.arange(1000, dtype=torch.uint8)
    dst = torch.zeros(300 + 128, dtype=torch.uint8)
    start = dst.data_ptr() + (-dst.data_ptr() % 64) + offset
    total = native_cpu.library("glue").touch_bytes(src.data_ptr(), 1000, start, 300, None)
    expected = int(src[:1000 // 8 * 8].numpy().view("<u8").sum(dtype="uint64"))
    assert total == expected
    written = dst[start - dst.data_ptr():][:300]
    assert torch.equal(written, torch.full((300,), expected & 0xFF, dtype=torch.uint8))
    assert int(dst.sum()) == 300 * (expected & 0xFF)  # nothing outside the 300 bytes
