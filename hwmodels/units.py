"""SI unit constants. Internally everything is SI (bytes, seconds, FLOP); convert only at the edges."""

KB = 1e3
MB = 1e6
GB = 1e9
TB = 1e12
KiB = 2**10
MiB = 2**20
GiB = 2**30
TiB = 2**40

ms = 1e-3
us = 1e-6
ns = 1e-9

TFLOPS = 1e12  # FLOP/s
Gbps = 1e9 / 8  # bytes/s in one gigabit per second


def format_bytes(n_bytes: float) -> str:
    """Human form in SI decimal units (what datasheets and this project's messages use)."""
    for unit, size in (("TB", TB), ("GB", GB), ("MB", MB), ("KB", KB)):
        if abs(n_bytes) >= size:
            return f"{n_bytes / size:.3g} {unit}" if abs(n_bytes) < 100 * size else f"{n_bytes / size:.0f} {unit}"
    return f"{n_bytes:.0f} B"


def format_count(n: float) -> str:
    """1.03e12 -> '1.03 T', 32.9e9 -> '32.9 B'."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f}"
