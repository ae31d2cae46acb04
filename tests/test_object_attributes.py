"""Content type, cache control and metadata reach the object, single and multipart,
on every provider."""

from __future__ import annotations

import pytest

from cloudput.keys import parse_target
from cloudput.providers import open_provider
from cloudput.providers.base import ProviderSettings
from tests.helpers import MIB, run_cli, write_random


@pytest.mark.parametrize("size", [1000, 9 * MIB], ids=["single", "multipart"])
def test_attributes_are_kept(backend, tmp_path, monkeypatch, size):
    backend.apply_env(monkeypatch)
    source = tmp_path / "report.bin"
    write_random(source, size)
    result = run_cli(
        [
            "upload",
            str(source),
            backend.uri("r/report.bin"),
            "--content-type",
            "text/csv",
            "--cache-control",
            "max-age=60",
            "--metadata",
            "team=data",
            "--part-size",
            "5MiB",
        ]
    )
    assert result.code == 0, result.stderr
    target = parse_target(backend.uri("r/report.bin"))
    provider = open_provider(backend.name, ProviderSettings())
    try:
        remote = provider.head(target)
    finally:
        provider.close()
    assert remote is not None and remote.size_bytes == size
    assert remote.content_type == "text/csv"
    assert remote.metadata.get("team") == "data"


def test_content_type_is_guessed_from_the_name(backend, tmp_path, monkeypatch):
    backend.apply_env(monkeypatch)
    source = tmp_path / "page.html"
    source.write_text("<p>hi</p>")
    result = run_cli(["upload", str(source), backend.uri("page.html"), "--json"])
    assert result.code == 0, result.stderr
    assert result.json_lines()[0]["mimeType"] == "text/html"
