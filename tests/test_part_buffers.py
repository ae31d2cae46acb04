"""Parts read once into reused buffers: the pool's bound, the buffer's reader, and an
upload on every provider reading each byte of its source once."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import pytest

from cloudput.engine import sources
from cloudput.engine.sources import BufferBody, PartBuffers
from tests.backends import Backend
from tests.helpers import MIB, run_cli, sha256_of, write_random


def test_a_given_back_buffer_is_taken_again() -> None:
    buffers = PartBuffers()
    first = buffers.take(MIB)
    buffers.give(first)

    again = buffers.take(MIB // 2)

    assert again is first


def test_a_buffer_starts_on_a_page_and_holds_a_part_of_any_size() -> None:
    """Page-aligned: the kernel copies file pages into misaligned memory (where a
    bytearray's bytes start) at a quarter of the speed (docs/performance.md)."""
    buffers = PartBuffers()
    for size in (0, 1, 5 * MIB + 3):
        buffer = buffers.take(size)
        address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
        assert address % mmap.PAGESIZE == 0
        assert len(buffer) >= size
        view = memoryview(buffer)[:size]
        view[:] = b"\xab" * size  # writable, as preadv needs
        assert bytes(view) == b"\xab" * size
        view.release()
        buffers.give(buffer)


def test_a_free_buffer_too_small_is_let_go_before_a_larger_one_is_made() -> None:
    buffers = PartBuffers()
    small = buffers.take(MIB)
    buffers.give(small)

    large = buffers.take(2 * MIB)
    buffers.give(large)

    assert len(large) == 2 * MIB
    assert buffers.take(MIB) is large  # the small one is gone, not kept beside it
    assert buffers.take(MIB) is not small


def test_buffers_alive_never_outnumber_those_taken_at_once() -> None:
    buffers = PartBuffers()
    for round_size in (MIB, 2 * MIB, MIB, 3 * MIB):
        taken = [buffers.take(round_size) for _ in range(3)]
        for buffer in taken:
            buffers.give(buffer)

        assert len(buffers._free) == 3


def test_a_buffer_body_reads_as_its_bytes_and_seeks() -> None:
    data = os.urandom(3 * MIB + 5)
    body = BufferBody(memoryview(bytearray(data)))

    with body.open() as stream:
        head = bytes(stream.read(7))
        stream.seek(MIB)
        rest = bytes(stream.read())
    with body.open() as stream:  # a fresh reader starts at the start
        whole = b"".join(bytes(chunk) for chunk in iter(lambda: stream.read(MIB), b""))

    assert body.size_bytes == len(data)
    assert head == data[:7]
    assert rest == data[MIB:]
    assert whole == data


def count_source_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes read from sources, by every read call the engine's reader makes."""
    counted: list[int] = []
    real_pread, real_preadv = os.pread, os.preadv

    def pread(fd: int, size: int, offset: int) -> bytes:
        data = real_pread(fd, size, offset)
        counted.append(len(data))
        return data

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        count = real_preadv(fd, buffers, offset)
        counted.append(count)
        return count

    monkeypatch.setattr(sources.os, "pread", pread)
    monkeypatch.setattr(sources.os, "preadv", preadv)
    return counted


def test_an_upload_in_parts_reads_each_byte_of_its_source_once(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "parts.bin"
    digest = write_random(source, 12 * MIB + 3)
    backend.apply_env(monkeypatch)
    counted = count_source_reads(monkeypatch)

    result = run_cli(
        ["upload", source, backend.uri("parts.bin"), "--part-size", "5MiB", "--quiet"]
    )

    assert result.code == 0, result.stderr
    assert sha256_of(backend.read("parts.bin")) == digest
    assert sum(counted) == source.stat().st_size


def test_a_single_request_upload_reads_its_source_once(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "one.bin"
    digest = write_random(source, 300_000)
    backend.apply_env(monkeypatch)
    counted = count_source_reads(monkeypatch)

    result = run_cli(["upload", source, backend.uri("one.bin"), "--quiet"])

    assert result.code == 0, result.stderr
    assert sha256_of(backend.read("one.bin")) == digest
    assert sum(counted) == source.stat().st_size
