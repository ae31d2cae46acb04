"""RangeBody: a part read from the source in bounded reads, checked once per MiB."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloudput.engine import sources
from cloudput.engine.sources import RANGE_READ_BYTES, RangeBody, SourceReader
from cloudput.errors import SourceChangedError

MIB = 1024 * 1024


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(4 * MIB + 7)
    path = tmp_path / "src.bin"
    path.write_bytes(data)
    return path, data


def count_stats(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = os.stat

    def counted(*args: object, **kwargs: object) -> os.stat_result:
        calls[0] += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sources.os, "stat", counted)
    return calls


@pytest.mark.parametrize("how", ["small reads", "read all", "one large read"])
def test_a_range_is_read_with_one_source_check_per_mib(
    source: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    path, data = source
    reader = SourceReader(str(path), sources.fingerprint(str(path)))
    body = RangeBody(reader, MIB + 3, 3 * MIB)
    calls = count_stats(monkeypatch)

    with body.open() as stream:
        if how == "small reads":
            got = b"".join(iter(lambda: stream.read(8192), b""))
        elif how == "read all":
            got = stream.read()
        else:
            got = stream.read(3 * MIB)

    assert got == data[MIB + 3 : 4 * MIB + 3]
    assert calls[0] == 3 * MIB // RANGE_READ_BYTES
    reader.close()


def test_a_reader_seeks_within_its_range(source: tuple[Path, bytes]) -> None:
    path, data = source
    with SourceReader(str(path), sources.fingerprint(str(path))) as reader:
        body = RangeBody(reader, MIB, 2 * MIB)
        with body.open() as stream:
            stream.seek(MIB + 5)
            assert stream.read() == data[2 * MIB + 5 : 3 * MIB]
        with body.open() as stream:  # a fresh reader starts at the range's start
            assert stream.read(4) == data[MIB : MIB + 4]


def test_a_source_changed_while_streaming_is_noticed(
    source: tuple[Path, bytes],
) -> None:
    path, _ = source
    with SourceReader(str(path), sources.fingerprint(str(path))) as reader:
        stream = RangeBody(reader, 0, 3 * MIB).open()
        stream.read(10)
        with path.open("ab") as grown:
            grown.write(b"more")
        with pytest.raises(SourceChangedError):
            stream.read()
