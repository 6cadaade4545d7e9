"""The autotuner's choices go to a file of this session, not the user's cache (the compiled kernels
do stay in the user's cache: building them takes seconds)."""

import pytest

from kernels_ref import autotune


@pytest.fixture(autouse=True, scope="session")
def tuning_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tuning") / "tuning.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(autotune, "cache_path", lambda: path)
        autotune.forget()
        yield path
    autotune.forget()
