"""The autotuner's choices go to a file of this session, not the user's cache (the compiled kernels
do stay in the user's cache: building them takes seconds)."""

import pytest

from kernels_ref import autotune, native_cpu


@pytest.fixture(autouse=True, scope="session")
def tuning_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tuning") / "tuning.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(autotune, "cache_path", lambda: path)
        autotune.forget()
        yield path
    autotune.forget()


@pytest.fixture(params=["default", "avx2", "none"])
def native_glue(request, monkeypatch):
    """The native glue kernels built at each ISA level (default: this CPU's best; avx2 and none: the portable C the
    other builds run), skipped without a C compiler."""
    if request.param != "default":
        monkeypatch.setenv(native_cpu.ISA_ENV, request.param)
    if native_cpu.library("glue") is None:
        pytest.skip("no C compiler")
    return request.param
