"""What the readers read (hwmodels.ingest.source): a path, bytes or an in-memory folder, one file never read
past its size limit, folders listed and their files reached the same way on disk and in memory."""

import pytest

from hwmodels.errors import InputError
from hwmodels.ingest.source import IN_MEMORY_NAME, MAX_FILE_BYTES, Source
from hwmodels.units import GiB


def test_paths_bytes_and_mappings_read_the_same(tmp_path):
    (tmp_path / "a.json").write_bytes(b"\xef\xbb\xbf{}")  # a byte-order mark is dropped from text
    on_disk = Source.of(tmp_path / "a.json")
    in_memory = Source.of(b"\xef\xbb\xbf{}", name="a.json")
    assert on_disk.name == str(tmp_path / "a.json") and in_memory.name == "a.json"
    for source in (on_disk, in_memory, Source.of(str(tmp_path / "a.json"))):
        assert source.read_text("x") == "{}" and source.suffix == ".json" and source.filename == "a.json"
        assert source.is_file() and not source.is_dir() and source.max_bytes == MAX_FILE_BYTES == 2 * GiB
    assert Source.of(b"{}").name == IN_MEMORY_NAME
    assert Source.of(on_disk) is on_disk and Source.of(on_disk, max_bytes=10).max_bytes == 10


def test_folders_on_disk_and_in_memory_list_and_reach_their_files(tmp_path):
    files = {"rank0.safetensors": b"0", "rank1.safetensors": b"1", "meta_info.json": b"{}"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    for folder, prefix in ((Source.of(tmp_path), f"{tmp_path}/"), (Source.of(files, name="stats"), "stats/")):
        assert folder.is_dir() and folder.list("rank*.safetensors") == ["rank0.safetensors", "rank1.safetensors"]
        rank = folder.child("rank1.safetensors")
        assert rank.name == prefix + "rank1.safetensors" and rank.read_bytes() == b"1"
        assert rank.sibling("meta_info.json").read_bytes() == b"{}" and rank.sibling(rank.filename) is rank
        with pytest.raises(InputError, match=f"{prefix}missing.json: cannot read meta"):
            folder.child("missing.json").read_bytes("meta")
        with pytest.raises(InputError, match="cannot read"):
            folder.read_bytes()
    assert Source.of(tmp_path / "meta_info.json").sibling("rank0.safetensors").read_bytes() == b"0"


def test_one_file_in_memory_has_no_siblings():
    with pytest.raises(InputError) as err:
        Source.of(b"0,1.0", name="chunk-0-trace.csv").sibling("chunk-0-dataset.json")
    assert str(err.value).startswith("chunk-0-trace.csv: ") and "chunk-0-dataset.json" in str(err.value)


class _CountingFile:
    """Stands in for an open file: records how many bytes were asked for."""

    def __init__(self, size: int):
        self.size, self.asked = size, []

    def read(self, n: int) -> bytes:
        self.asked.append(n)
        return bytes(min(n, self.size))

    def fileno(self) -> int:
        return 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_file_over_the_limit_is_one_error_and_is_not_read_past_it(tmp_path, monkeypatch):
    path = tmp_path / "big.jsonl"
    path.write_bytes(bytes(3 * 2**20))
    with pytest.raises(InputError) as err:
        Source.of(path, max_bytes=2**20).read_text("request trace")
    message = str(err.value)
    assert message == (f"{path}: is 3,145,728 bytes, over the 1 MiB limit for one file; fix: use the moeplan "
                       "command on the full file (it reads files up to 2 GiB)")
    with pytest.raises(InputError, match=r"^upload.csv: is 11 bytes, over the 10 bytes limit"):
        Source.of(bytes(11), name="upload.csv", max_bytes=10).read_bytes()
    assert Source.of(bytes(10), max_bytes=10).read_bytes() == bytes(10)
    opened = _CountingFile(10 * 2**30)  # a 10 GiB file: only limit + 1 bytes are asked for
    monkeypatch.setattr(type(path), "open", lambda self, mode: opened)
    monkeypatch.setattr("os.fstat", lambda fd: type("Stat", (), {"st_size": 10 * 2**30})())
    with pytest.raises(InputError, match="10,737,418,240 bytes"):
        Source.of(path, max_bytes=2**20).read_bytes()
    assert opened.asked == [2**20 + 1]


@pytest.mark.parametrize("source, options, problem", [
    (3.5, {}, "is a float"),
    ({"a.json": "text"}, {}, "not file name: bytes"),
    (b"", {"max_bytes": 0}, "max_bytes"),
])
def test_bad_sources_are_one_error(source, options, problem):
    with pytest.raises(InputError, match=problem):
        Source.of(source, **options)


def test_missing_files_name_themselves(tmp_path):
    with pytest.raises(InputError, match=f"^{tmp_path}/none.csv: cannot read request trace: .*No such file"):
        Source.of(tmp_path / "none.csv").read_text("request trace")
    assert Source.of(tmp_path / "none").list() == [] and not Source.of(tmp_path / "none").is_dir()
