"""Bulk uploads: trees of files, links, globs, filters, --skip-existing, --no-clobber,
--dry-run, --max-duration then a second run, `cloudput verify`, the summary, NO_COLOR.

Every provider gets the same tree; its second run goes through a FaultProxy, so
"nothing sent" is counted at the wire. The tree holds the issue's 2,000 small files (0-2 KiB) on every provider
(about 60-130 s per provider on the emulators, both runs); `BULK_TREE_FILES=200` makes
it quicker while working on this file:

    BULK_TREE_FILES=200 .venv/bin/pytest tests/test_bulk.py -k tree_goes_up
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.backends import Backend
from tests.faultproxy import FaultProxy, Match, RecordedRequest
from tests.helpers import (
    FAST_RETRY_ENV,
    KIB,
    MIB,
    CliResult,
    records,
    run_cli,
    sha256_file,
    sha256_of,
    write_random,
)

#: Small files in the big tree (issue 6: "a tree of 2,000 small files"; see above).
TREE_FILES = int(os.environ.get("BULK_TREE_FILES", "2000"))
#: From this many files the emulators are restarted after the test instead of
#: deleting the objects one by one.
HEAVY_TREE_FILES = 500
#: Files per directory in the big tree, so it is nested.
FILES_PER_DIR = 100
#: A part size every provider accepts (S3's 5 MiB minimum, a multiple of 256 KiB).
PART_BYTES = 5 * MIB
#: Larger files of the tree: one single request just under the threshold, two
#: multipart files.
LARGE_SIZES = {"large/one.bin": PART_BYTES - 1, "large/three.bin": 2 * PART_BYTES + 7,
               "large/two.bin": PART_BYTES + 1}  # fmt: skip
#: The contract's JSON record keys (CONTRACT.md, "Output").
RECORD_KEYS = {
    "id", "name", "source", "mimeType", "size", "url", "storage_url", "uri",
    "provider", "bucket", "key", "checksum", "parts", "status", "initiated_at",
    "completed_at", "expires_at", "error",
}  # fmt: skip
WRITE_METHODS = ("PUT", "POST", "PATCH", "DELETE")
#: An SGR sequence that sets a colour (rich's bars are coloured unless NO_COLOR).
COLOUR = re.compile(r"\x1b\[[0-9;]*[34][0-9](;[0-9]+)*m|\x1b\[[0-9;]*38;")


# -- trees -------------------------------------------------------------------------


def make_tree(root: Path, count: int) -> dict[str, str]:
    """The test tree; returns {relative key: sha256} of what must be uploaded.

    Besides `count` tiny files in nested directories and the larger files: empty
    directories (one nested), a link to a file (uploaded, followed), a link to a
    directory (not followed by default), a link looping to the root, a broken link and
    a FIFO (all skipped with a warning).
    """
    expected: dict[str, str] = {}
    for number in range(count):
        key = f"d{number // FILES_PER_DIR:02d}/sub/f{number:05d}.txt"
        expected[key] = write_random(root / key, number % (2 * KIB + 1))
    for key, size_bytes in LARGE_SIZES.items():
        expected[key] = write_random(root / key, size_bytes)
    (root / "empty").mkdir()
    (root / "nested" / "empty").mkdir(parents=True)
    outside = root.parent / "outside"
    write_random(outside / "o.txt", 10)
    (root / "links").mkdir()
    (root / "links" / "to_file").symlink_to(root / "d00" / "sub" / "f00001.txt")
    expected["links/to_file"] = expected["d00/sub/f00001.txt"]
    (root / "links" / "to_dir").symlink_to(outside, target_is_directory=True)
    (root / "links" / "loop").symlink_to(root, target_is_directory=True)
    (root / "links" / "broken").symlink_to(root / "nowhere")
    os.mkfifo(root / "fifo")
    return expected


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in {**env, **FAST_RETRY_ENV}.items():
        monkeypatch.setenv(name, value)


def tree_args(tree: Path, uri: str, *extra: str) -> list[str]:
    return [
        "upload", tree, uri, "--part-size", str(PART_BYTES),
        "--multipart-threshold", str(PART_BYTES), "--json", *extra,
    ]  # fmt: skip


def writes(requests: Iterable[RecordedRequest]) -> list[RecordedRequest]:
    return [r for r in requests if r.method.upper() in WRITE_METHODS]


def assert_objects(backend: Backend, prefix: str, expected: dict[str, str]) -> None:
    assert backend.keys() == sorted(prefix + key for key in expected)
    for key, digest in expected.items():
        assert sha256_of(backend.read(prefix + key)) == digest, key


# -- the big tree ------------------------------------------------------------------


@pytest.mark.slow
@(pytest.mark.heavy if TREE_FILES >= HEAVY_TREE_FILES else pytest.mark.slow)
def test_tree_goes_up_whole_and_a_second_run_with_skip_existing_sends_nothing(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    expected = make_tree(tree, TREE_FILES)
    args = tree_args(tree, backend.uri("p/"), "--skip-existing", "--concurrency", "8")
    # The first run goes straight to the emulator (an in-process proxy would share
    # cloudput's interpreter and double its work); the second, whose writes are
    # counted, through a FaultProxy. The journal does not key records by endpoint
    # here: both runs name none (the SDKs' variables point them).
    use_env(monkeypatch, backend.env)
    first = run_cli(args)
    with FaultProxy(backend.endpoint) as proxy:
        use_env(monkeypatch, backend.routed_through(proxy.url))
        second = run_cli(args)
        sent_again = writes(proxy.requests)

    assert first.code == 0, first.stderr[-2000:]
    lines = first.json_lines()
    assert len(lines) == len(expected)
    assert all(set(line) == RECORD_KEYS for line in lines)
    assert {line["status"] for line in lines} == {"completed"}
    assert all(line["checksum"]["verified"] and line["url"] for line in lines), [
        line for line in lines if not line["checksum"]["verified"]
    ][:2]
    assert sorted(line["key"] for line in lines) == sorted("p/" + k for k in expected)
    assert_objects(backend, "p/", expected)
    for warned in ("fifo", "links/to_dir", "links/loop", "links/broken"):
        assert f"{warned}:" in first.stderr
    assert "skipping empty directory" in first.stderr
    assert second.code == 0, second.stderr[-2000:]
    assert {line["status"] for line in second.json_lines()} == {"skipped"}
    assert len(second.json_lines()) == len(expected)
    # ISO 8601 UTC strings of one format compare as times: never done before begun.
    assert all(
        line["completed_at"] >= line["initiated_at"]
        for line in first.json_lines() + second.json_lines()
    )
    assert sent_again == []


def test_following_links_to_directories_takes_them_once_and_stops_at_a_loop(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    expected = make_tree(tree, 3)
    expected["links/to_dir/o.txt"] = sha256_file(tmp_path / "outside" / "o.txt")
    use_env(monkeypatch, s3.env)

    result = run_cli(tree_args(tree, s3.uri("p/"), "--follow-symlinks"))

    assert result.code == 0, result.stderr
    assert_objects(s3, "p/", expected)
    assert "a link back to a parent (a loop)" in result.stderr


# -- skip, no-clobber, dry run --------------------------------------------------------


def test_skip_existing_trusts_the_journal_for_a_file_unchanged_in_size_and_mtime(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No re-hash of an unchanged file: same size, mtime and inode means the journaled
    MD5 is compared (documented quick check, as rsync's), so rewriting bytes in place
    behind cloudput's back with the old mtime is not noticed."""
    source = tmp_path / "f.bin"
    write_random(source, 3000)
    before = os.stat(source)
    use_env(monkeypatch, s3.env)
    assert run_cli(["upload", source, s3.uri("k"), "--skip-existing"]).code == 0
    with open(source, "r+b") as rewrite:
        rewrite.write(os.urandom(3000))
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))

    result = run_cli(["upload", source, s3.uri("k"), "--skip-existing", "--json"])

    assert result.code == 0, result.stderr
    assert result.json_lines()[0]["status"] == "skipped"


def test_skip_existing_uploads_a_file_whose_content_changed(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "f.bin"
    write_random(source, 3000)
    use_env(monkeypatch, backend.env)
    assert run_cli(["upload", source, backend.uri("k"), "--skip-existing"]).code == 0
    digest = write_random(source, 3000)

    result = run_cli(["upload", source, backend.uri("k"), "--skip-existing"])

    assert result.code == 0, result.stderr
    assert result.stdout.startswith("uploaded ")
    assert sha256_of(backend.read("k")) == digest


def test_skip_existing_skips_an_identical_object_put_by_another_tool(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No cloudput metadata and no journal: the provider's own checksum decides."""
    source = tmp_path / "f.bin"
    write_random(source, 2000)
    backend.put("k", source.read_bytes())
    use_env(monkeypatch, backend.env)

    result = run_cli(["upload", source, backend.uri("k"), "--skip-existing"])

    assert result.code == 0, result.stderr
    assert result.stdout == f"skipped {source} -> {backend.uri('k')}\n"


def test_no_clobber_leaves_an_existing_object_alone(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "f.bin"
    write_random(source, 100)
    backend.put("k", b"theirs")
    use_env(monkeypatch, backend.env)

    result = run_cli(["upload", source, backend.uri("k"), "--no-clobber", "--json"])

    assert result.code == 0, result.stderr
    assert result.json_lines()[0]["status"] == "skipped"
    assert backend.read("k") == b"theirs"
    assert [r.status for r in records()] == ["skipped"]


def test_dry_run_prints_the_plan_and_sends_no_request(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    write_random(tree / "a.txt", 10)
    write_random(tree / "big.bin", 2 * PART_BYTES + 1)
    with FaultProxy(backend.endpoint) as proxy:
        use_env(monkeypatch, backend.routed_through(proxy.url))

        result = run_cli(tree_args(tree, backend.uri("p/"), "--dry-run"))
        sent = proxy.requests

    assert result.code == 0, result.stderr
    plans = {line["key"]: line for line in result.json_lines()}
    assert plans["p/a.txt"]["strategy"] == "single"
    assert plans["p/big.bin"]["parts"] == 3
    assert plans["p/big.bin"]["part_size"] == PART_BYTES
    assert {line["status"] for line in plans.values()} == {"planned"}
    assert sent == []
    assert records() == []


# -- sources ----------------------------------------------------------------------


def test_include_and_exclude_apply_in_order_and_the_last_match_wins(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    for name in ("a.txt", "b.log", "tmp/c.txt", "tmp/keep.txt"):
        write_random(tree / name, 5)
    use_env(monkeypatch, s3.env)

    result = run_cli(
        ["upload", tree, s3.uri("p/"), "--exclude", "*", "--include", "*.txt",
         "--exclude", "tmp/*", "--include", "tmp/keep*"]
    )  # fmt: skip

    assert result.code == 0, result.stderr
    assert s3.keys() == ["p/a.txt", "p/tmp/keep.txt"]


def test_a_quoted_glob_is_expanded_by_cloudput(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("a.csv", "b.csv", "c.txt"):
        write_random(tmp_path / "in" / name, 5)
    use_env(monkeypatch, s3.env)

    result = run_cli(["upload", f"{tmp_path}/in/*.csv", s3.uri("p")])

    assert result.code == 0, result.stderr
    assert s3.keys() == ["p/a.csv", "p/b.csv"]


def test_a_glob_that_matches_nothing_is_exit_4(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_env(monkeypatch, s3.env)

    result = run_cli(["upload", f"{tmp_path}/*.none", s3.uri("p/")])

    assert result.code == 4
    assert "no file matches" in result.stdout


def test_two_directories_mapping_to_one_key_are_refused_before_any_request(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("one/x/same.txt", "one/only1.txt", "two/x/same.txt"):
        write_random(tmp_path / name, 5)
    with FaultProxy(s3.endpoint) as proxy:
        use_env(monkeypatch, s3.routed_through(proxy.url))

        result = run_cli(["upload", tmp_path / "one", tmp_path / "two", s3.uri("p/")])
        sent = proxy.requests

    assert result.code == 2
    assert "both map to s3://" in result.stderr
    assert sent == []


@pytest.mark.parametrize(
    "spellings",
    [["dir", "dir/big.bin"], ["dir/big.bin", "dir"], ["dir/big.bin", "./dir/big.bin"]],
    ids=["dir-then-file", "file-then-dir", "file-twice"],
)
def test_one_file_named_twice_for_one_key_is_sent_once(
    s3: Backend,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    spellings: list[str],
) -> None:
    """A file reached through two sources that map it to the same key is one upload
    (not two jobs sharing one record, nor a refusal): one record, one object."""
    digest = write_random(tmp_path / "dir" / "big.bin", 6 * MIB)
    write_random(tmp_path / "dir" / "other.txt", 10)
    monkeypatch.chdir(tmp_path)
    use_env(monkeypatch, s3.env)

    result = run_cli(
        ["upload", *spellings, s3.uri("p/"), "--part-size", "5MiB", "--json"]
    )

    lines = result.json_lines()
    assert result.code == 0, result.stderr
    assert sorted(line["key"] for line in lines) == sorted(
        ["p/big.bin"] + (["p/other.txt"] if "dir" in spellings else [])
    )
    assert len({line["id"] for line in lines}) == len(lines)
    assert sha256_of(s3.read("p/big.bin")) == digest
    if len(set(map(os.path.normpath, spellings))) > 1:
        assert "named twice" in result.stderr


def test_one_file_named_twice_to_a_key_without_slash_goes_under_it(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Several SOURCE arguments make the target a prefix, as `upload f g s3://b/k`
    does, even when they are one file: k/f, not k."""
    write_random(tmp_path / "f.txt", 10)
    monkeypatch.chdir(tmp_path)
    use_env(monkeypatch, s3.env)

    result = run_cli(["upload", "f.txt", "./f.txt", s3.uri("k"), "--json"])

    assert result.code == 0, result.stderr
    assert [line["key"] for line in result.json_lines()] == ["k/f.txt"]
    assert s3.keys() == ["k/f.txt"]


# -- unattended runs ---------------------------------------------------------------


def write_identity(request: RecordedRequest) -> tuple[str, str, str, str]:
    """What a write sends: method, path, query and range (one part, one object)."""
    query = "&".join(f"{k}={v}" for k, v in sorted(request.query.items()))
    return (
        request.method,
        request.path,
        query,
        request.headers.get("content-range", ""),
    )


def test_max_duration_then_the_same_command_finishes_with_nothing_sent_twice(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    expected = {"a_big.bin": write_random(tree / "a_big.bin", 3 * PART_BYTES)}
    for number in range(12):
        expected[f"f{number:02d}.txt"] = write_random(tree / f"f{number:02d}.txt", 50)
    args = tree_args(
        tree, s3.uri("p/"), "--skip-existing", "--concurrency", "2",
        "--max-duration", "1s",
    )  # fmt: skip
    with FaultProxy(s3.endpoint) as proxy:
        proxy.delay(Match(method="PUT"), 0.4, times=None)
        use_env(monkeypatch, s3.routed_through(proxy.url))

        first = run_cli(args)
        journaled = len(records())
        second = run_cli([a for a in args if a not in ("--max-duration", "1s")])
        sent = [write_identity(r) for r in writes(proxy.requests) if r.body_length]

    assert first.code == 7, first.stderr
    # Files stopped before they were journaled are counted as not started, and their
    # lines send the user to the same command: `resume` does not know them.
    not_started = [line for line in first.stdout.splitlines() if "not started" in line]
    assert all("run the same command" in line for line in not_started)
    assert not any("resume" in line for line in not_started)
    assert f"cloudput: {13 - journaled} files not started" in first.stderr
    assert second.code == 0, second.stderr
    assert_objects(s3, "p/", expected)
    assert [i for i, n in Counter(sent).items() if n > 1] == []


# -- verify ------------------------------------------------------------------------


def upload_ids(result: CliResult) -> dict[str, str]:
    return {line["key"]: line["id"] for line in result.json_lines()}


def test_verify_is_0_when_identical_and_8_once_the_object_changed(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    write_random(tree / "small.bin", 1000)
    write_random(tree / "big.bin", PART_BYTES + 10)
    use_env(monkeypatch, backend.env)
    # --skip-existing stores the whole file's MD5 with a multipart object too (an
    # Azure block blob has no whole-object checksum otherwise: docs/limitations.md).
    ids = upload_ids(run_cli(tree_args(tree, backend.uri("p/"), "--skip-existing")))

    identical = [run_cli(["verify", ids[key]]) for key in ("p/small.bin", "p/big.bin")]
    backend.put("p/small.bin", os.urandom(1000))
    changed = run_cli(["verify", ids["p/small.bin"]])

    assert [r.code for r in identical] == [0, 0], [r.stdout for r in identical]
    assert identical[0].stdout.startswith("identical ")
    assert changed.code == 8, changed.stdout
    assert changed.stdout.startswith("mismatch ")


def test_verify_without_cloudput_metadata_compares_the_provider_checksum(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A multipart object uploaded without --skip-existing: S3's multipart ETag,
    computed from the journaled part size."""
    source = tmp_path / "big.bin"
    write_random(source, 2 * PART_BYTES + 3)
    use_env(monkeypatch, s3.env)
    upload = run_cli(tree_args(source, s3.uri("k"), "--checksum", "md5"))
    upload_id = upload.json_lines()[0]["id"]

    result = run_cli(["verify", upload_id])

    assert result.code == 0, result.stdout + result.stderr
    assert "part-etags" in result.stdout


def test_verify_is_4_without_the_source_and_2_for_an_unknown_id(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "f.bin"
    write_random(source, 10)
    use_env(monkeypatch, s3.env)
    upload_id = run_cli(["upload", source, s3.uri("k"), "--json"]).json_lines()[0]["id"]
    source.unlink()

    assert run_cli(["verify", upload_id]).code == 4
    assert run_cli(["verify", "000000000000"]).code == 2


# -- output ------------------------------------------------------------------------


def test_summary_on_stderr_counts_files_bytes_and_failures_by_reason(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_random(tmp_path / "a.txt", 2048)
    use_env(monkeypatch, s3.env)

    result = run_cli(["upload", tmp_path / "a.txt", tmp_path / "gone", s3.uri("p/")])
    quiet = run_cli(["upload", tmp_path / "a.txt", s3.uri("q/"), "--quiet"])

    assert result.code == 4
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("cloudput: 2 files: 1 uploaded (2.0 KiB in ")
    assert summary.endswith(", 0 skipped, 1 not done (source: 1)"), summary
    assert quiet.stderr == ""
    # --quiet silences stderr only: results stay on stdout (CONTRACT.md, "Output").
    assert quiet.stdout.startswith("uploaded ")
    assert quiet.stdout.rstrip().endswith(f"-> {s3.uri('q/a.txt')}")


@pytest.mark.parametrize("no_color", [False, True], ids=["colour", "NO_COLOR"])
def test_no_color_turns_off_colour_on_a_terminal(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_color: bool
) -> None:
    """rich draws coloured bars on a terminal (FORCE_COLOR makes the captured stderr
    one) and none when NO_COLOR is set."""
    write_random(tmp_path / "a.bin", 100 * KIB)
    use_env(monkeypatch, s3.env)
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)

    result = run_cli(["upload", tmp_path / "a.bin", s3.uri("k")])

    assert result.code == 0, result.stderr
    assert bool(COLOUR.search(result.stderr)) is not no_color, repr(result.stderr)
