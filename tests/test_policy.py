"""Policy: maximum size and allowed content types, from flags and [policy]; exit 4
before anything is journaled or sent."""

from __future__ import annotations

import pytest

from cloudput.engine.policy import Policy
from cloudput.errors import PolicyError
from tests.faultproxy import FaultProxy
from tests.helpers import records, run_cli, run_cloudput, write_random


def test_policy_allows_matching_types_and_sizes():
    policy = Policy(max_size_bytes=10, allowed_types=("image/*", "text/plain"))
    policy.check("a.png", 10, "image/png")
    policy.check("a.txt", 1, "text/plain; charset=utf-8")


@pytest.mark.parametrize(
    "size, mime, fragment",
    [(11, "image/png", "maximum"), (1, "application/pdf", "not allow")],
)
def test_policy_refuses_with_the_rule_named(size, mime, fragment):
    with pytest.raises(PolicyError, match=fragment):
        Policy(max_size_bytes=10, allowed_types=("image/*",)).check("f", size, mime)


def test_too_large_file_is_exit_4_and_nothing_is_sent(s3, tmp_path):
    source = tmp_path / "big.bin"
    write_random(source, 2048)
    with FaultProxy(s3.endpoint) as proxy:
        env = s3.routed_through(proxy.url)
        result = run_cloudput(
            ["upload", str(source), s3.uri("k"), "--max-size", "1KiB"], env
        )
        assert result.code == 4
        assert "maximum" in result.stdout + result.stderr
        # The flag set the limit, so raising it in [policy] would not help.
        assert "raise --max-size" in result.stdout + result.stderr
        assert not [r for r in proxy.requests if r.method in ("PUT", "POST")]
    assert records() == []
    assert s3.read("k") is None


def test_policy_from_config_file_refuses_a_type_and_uploads_the_rest(
    s3, tmp_path, monkeypatch
):
    s3.apply_env(monkeypatch)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ok.png").write_bytes(b"png")
    (tmp_path / "d" / "no.pdf").write_bytes(b"pdf")
    config = tmp_path / "c.toml"
    config.write_text('[policy]\nallowed_types = ["image/*"]\n')
    result = run_cli(
        ["upload", str(tmp_path / "d"), s3.uri("p/"), "--config", str(config)]
    )
    assert result.code == 4
    assert s3.read("p/ok.png") == b"png"
    assert s3.read("p/no.pdf") is None


def test_bad_policy_in_config_is_exit_3(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[policy]\nallowed_types = "images"\n')
    assert run_cli(["list", "--config", str(config)]).code == 3


def test_policy_hint_names_where_the_rule_was_set():
    flagged = Policy(max_size_bytes=1, max_size_from="--max-size")
    with pytest.raises(PolicyError) as size_error:
        flagged.check("f", 2, "text/plain")
    assert size_error.value.hint == "raise --max-size or leave the file out"
    filed = Policy(allowed_types=("image/*",))
    with pytest.raises(PolicyError) as type_error:
        filed.check("f", 1, "text/plain")
    assert "allowed_types in [policy]" in str(type_error.value.hint)


def test_a_bad_allow_type_flag_names_the_value_not_a_list(tmp_path):
    source = tmp_path / "f.txt"
    source.write_text("x")
    result = run_cli(["upload", source, "s3://b/k", "--allow-type", "nonsense"])
    assert result.code == 2
    assert "--allow-type 'nonsense':" in result.stderr
    assert "['nonsense']" not in result.stderr
