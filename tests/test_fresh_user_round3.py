"""Faults a fresh user met in round 3: the progress bars on a real terminal (several
files), and what the CLI prints around them.
"""

from __future__ import annotations

import io
import os
import pty
import subprocess
import time
import tracemalloc
from pathlib import Path

import pytest

from cloudput.cli.render import PlainProgress
from tests.backends import Backend
from tests.faultproxy import FaultProxy, Match
from tests.helpers import (
    KIB,
    MIB,
    cloudput_command,
    kill_after_parts,
    only_record,
    process_env,
    records,
    run_cli,
    start_cloudput,
    write_random,
)


def run_on_terminal(
    args: list[str], env: dict[str, str], timeout_s: float = 120.0
) -> tuple[int, str, str]:
    """Run cloudput with stderr on a pseudo-terminal (so rich draws its bars) and
    stdout on a pipe, as a user at a terminal piping results to a file; return the
    exit code, stdout and what the terminal showed."""
    main_fd, side_fd = pty.openpty()
    process = subprocess.Popen(
        cloudput_command(args),
        env=process_env({**env, "COLUMNS": "120", "TERM": "xterm"}),
        stdout=subprocess.PIPE,
        stderr=side_fd,
        text=True,
    )
    os.close(side_fd)
    shown = bytearray()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    stdout, _ = process.communicate(timeout=timeout_s)
    return process.returncode, stdout, shown.decode("utf-8", "replace")


def test_several_files_on_a_terminal_all_report_uploaded(
    backend: Backend, tmp_path: Path
) -> None:
    """Was: the second file to finish on a terminal crashed the run (IndexError in
    the progress bars, exit 1, no result lines), after its upload had completed."""
    site = tmp_path / "site"
    write_random(site / "a.bin", 6 * MIB)
    for name in ("b.txt", "c/d.txt", "c/e.txt"):
        write_random(site / name, 3 * KIB)
    code, stdout, shown = run_on_terminal(
        ["upload", site, backend.uri("t/"), "--bwlimit", "12MiB"], backend.env
    )
    assert "internal error" not in shown
    assert code == 0, shown
    assert sorted(stdout.splitlines()) == sorted(
        f"uploaded {site / name} -> {backend.uri('t/' + name)}"
        for name in ("a.bin", "b.txt", "c/d.txt", "c/e.txt")
    )
    assert "4 files: 4 uploaded" in shown
    # the bars' rate is in the binary units of their sizes and of the summary
    assert "MiB/s" in shown
    assert " MB/s" not in shown and " kB/s" not in shown
    for name in ("a.bin", "b.txt", "c/d.txt", "c/e.txt"):
        assert backend.read("t/" + name) == (site / name).read_bytes()


def test_resume_all_without_a_journal_is_nothing_to_do_and_makes_none(
    clean_env: Path,
) -> None:
    """Was: `resume --all` made an empty journal (and exit 9 where it could not,
    e.g. a read-only home), unlike `list` and `abort --all-failed`."""
    done = run_cli(["resume", "--all"])
    assert done.code == 0
    assert done.stderr == "cloudput: nothing to resume (no journal yet)\n"
    assert not clean_env.exists() and not clean_env.parent.exists()


def test_resume_of_an_id_without_a_journal_names_the_missing_journal(
    clean_env: Path,
) -> None:
    """Was: an empty journal made, then `unknown upload id` (or exit 9 on a read-only
    directory); `show`, `verify` and `abort` of an id say the journal is not there."""
    done = run_cli(["resume", "0123456789ab"])
    assert done.code == 2
    assert f"no journal at {clean_env}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not clean_env.exists()


def test_result_lines_name_each_source_as_the_journal_does(
    s3: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: `uploaded /abs/site/a.txt` but `skipped site/a.txt` and `failed nothere`
    in the same run (as typed), so a CI log named one file two ways, and the text line
    disagreed with --json's and `list`'s source."""
    write_random(tmp_path / "site" / "a.txt", 100)
    s3.apply_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    first = run_cli(["upload", "site", s3.uri("p/")])
    assert first.stdout == f"uploaded {tmp_path}/site/a.txt -> {s3.uri('p/a.txt')}\n"

    again = run_cli(["upload", "site", "nothere", s3.uri("p/"), "--skip-existing"])
    assert again.code == 4
    assert sorted(again.stdout.splitlines()) == [
        f"failed {tmp_path}/nothere -> {s3.uri('p/nothere')}: "
        "source nothere not found (check the path)",
        f"skipped {tmp_path}/site/a.txt -> {s3.uri('p/a.txt')}",
    ]
    as_json = run_cli(
        ["upload", "site", "nothere", s3.uri("p/"), "--skip-existing", "--json"]
    )
    assert sorted(line["source"] for line in as_json.json_lines()) == [
        f"{tmp_path}/nothere",
        f"{tmp_path}/site/a.txt",
    ]


def test_unusable_google_application_credentials_is_named_not_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: `no Google credentials found (set GOOGLE_APPLICATION_CREDENTIALS ...)`
    while it was set, to a file that is not there."""
    write_random(tmp_path / "f.txt", 10)
    missing = tmp_path / "nokey.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    done = run_cli(["upload", tmp_path / "f.txt", "gs://some-bucket/k"])
    assert done.code == 5
    assert done.stderr == (
        f"cloudput: error: GOOGLE_APPLICATION_CREDENTIALS is set to '{missing}', "
        "which is not a readable credentials file (point it at a service-account "
        "key or the file `gcloud auth application-default login` writes, or unset "
        "it)\n"
    )


def test_no_google_credentials_off_gce_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: google-auth's own WARNING about the metadata server came first, so the
    error was two lines."""
    write_random(tmp_path / "f.txt", 10)
    monkeypatch.delenv("NO_GCE_CHECK", raising=False)
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    done = run_cli(["upload", tmp_path / "f.txt", "gs://some-bucket/k"])
    assert done.code == 5
    assert done.stderr.startswith("cloudput: error: no Google credentials found (")
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_closing_line_counts_the_files_a_stopped_run_never_took(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Was: `4 files: 2 uploaded, 0 skipped, 2 not done` then `11 files not started`
    for a tree of 13: the files the walk reached after --max-duration were left out
    of the closing line."""
    tree = tmp_path / "tree"
    for number in range(13):
        write_random(tree / f"f{number:02d}.txt", 50)
    args = ["upload", tree, s3.uri("p/"), "--concurrency", "1", "--max-duration", "1s"]
    with FaultProxy(s3.endpoint) as proxy:
        proxy.delay(Match(method="PUT"), 0.4, times=None)
        for name, value in s3.routed_through(proxy.url).items():
            monkeypatch.setenv(name, value)
        first = run_cli(args)

    assert first.code == 7, first.stderr
    reported = first.stdout.splitlines()
    assert len(reported) < 13  # some files were never taken: what this is about
    uploaded = sum(line.startswith("uploaded ") for line in reported)
    lines = first.stderr.splitlines()
    (closing,) = [line for line in lines if line.startswith("cloudput: 13 files: ")]
    assert closing.startswith(f"cloudput: 13 files: {uploaded} uploaded ("), (
        first.stderr
    )
    assert closing.endswith(
        f"0 skipped, {13 - uploaded} not done (max_duration: {13 - uploaded})"
    ), closing
    (not_started,) = [line for line in lines if " files not started " in line]
    assert int(not_started.split()[1]) <= 13 - uploaded


def test_doctor_in_a_ci_log_shows_each_detail_whole(
    azure: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: stdout not a terminal, rich cut the table at 80 columns, so the Azure
    endpoint read `http://127.0.0.1:PORT/devstoreac…`."""
    azure.apply_env(monkeypatch)
    done = run_cli(["doctor", "azure", "--bucket", azure.bucket])
    assert done.code == 0, done.stdout
    endpoint = next(line for line in done.stdout.splitlines() if " endpoint " in line)
    assert f"{azure.endpoint}/devstoreaccount1/ answers (HTTP " in endpoint, endpoint
    assert "…" not in done.stdout
    assert f"{azure.bucket} exists" in done.stdout


def test_a_file_name_with_brackets_is_shown_as_named_on_a_terminal(
    s3: Backend, tmp_path: Path
) -> None:
    """Was: the bars read file names as rich markup: `[red]z.txt` showed as a red
    `z.txt`, `[@click=x(]a.txt` as `a.txt`."""
    tree = tmp_path / "mk"
    write_random(tree / "[bold]z.txt", 10)
    code, stdout, shown = run_on_terminal(
        ["upload", tree, s3.uri("mk/"), "--bwlimit", "1KiB"], s3.env
    )
    assert code == 0, shown
    assert "[bold]z.txt" in shown
    assert s3.read("mk/[bold]z.txt") == (tree / "[bold]z.txt").read_bytes()


def test_cleanup_with_nothing_old_enough_says_which_age_it_looked_for(
    gcs: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: `no unfinished upload to clean up` while one was there, younger than the
    default --older-than 1d, so the user thought there was none."""
    source = tmp_path / "big.bin"
    write_random(source, 2 * MIB)
    gcs.apply_env(monkeypatch)
    process = start_cloudput(
        ["upload", source, gcs.uri("p/big.bin"), "--part-size", "256KiB",
         "--multipart-threshold", "256KiB",
         "--concurrency", "1", "--bwlimit", "256KiB"],
        gcs.env,
    )  # fmt: skip
    kill_after_parts(process, 1)
    done = run_cli(["cleanup", gcs.uri("p/")])
    assert done.code == 0
    assert done.stdout == ""
    assert done.stderr == (
        f"cloudput: no unfinished upload to clean up in {gcs.uri('p/')} "
        "(none started over 1d ago; --older-than sets the age)\n"
    )
    assert only_record().status in ("interrupted", "in_progress")


@pytest.mark.parametrize("provider", ["s3", "azure"])
def test_upload_whose_bucket_is_gone_can_be_dropped_and_is_not_sent_to_resume(
    provider: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Was: `resume --all` exit 6 with `to continue, run: cloudput resume ID` (which
    fails the same way), and `abort ID` exit 6 too (the bucket check), so a cron job's
    resume --all failed every hour with no way to drop the upload. (The GCS emulator
    refuses to delete a bucket with an open session.)"""
    backend: Backend = request.getfixturevalue(provider)
    source = tmp_path / "big.bin"
    write_random(source, 12 * MIB)
    backend.apply_env(monkeypatch)
    args = ["upload", source, backend.uri("k"), "--concurrency", "1"]
    args += ["--part-size", "5MiB", "--bwlimit", "4MiB"]
    process = start_cloudput(args, backend.env)
    kill_after_parts(process, 1)
    backend.delete_bucket()

    again = run_cli(["resume", "--all"])
    assert again.code == 6, again.stderr
    upload_id = only_record().id
    assert "to continue, run: cloudput resume" not in again.stderr
    assert again.stderr.endswith(
        "cloudput: the bucket is not there: create it, then `cloudput resume`; or "
        f"drop the uploads: cloudput abort {upload_id}\n"
    ), again.stderr

    dropped = run_cli(["abort", upload_id])
    assert dropped.code == 0, dropped.stderr
    assert dropped.stdout == f"aborted {upload_id} {backend.uri('k')}\n"
    assert only_record().status == "aborted"
    assert run_cli(["resume", "--all"]).code == 0


def test_azure_file_with_a_backslash_is_refused_not_stored_under_another_name(
    azure: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: `uploaded .../back\\slash.txt -> az://c/p/back\\slash.txt` while Azure
    (Azurite as the service) stored the blob as `p/back/slash.txt`: not the key
    reported, and the blob of another file `back/slash.txt` would be overwritten."""
    tree = tmp_path / "t"
    write_random(tree / "back\\slash.txt", 10)
    write_random(tree / "ok.txt", 10)
    azure.apply_env(monkeypatch)

    done = run_cli(["upload", tree, azure.uri("p/")])
    assert done.code == 10, done.stderr
    assert sorted(done.stdout.splitlines()) == [
        f"failed {tree}/back\\slash.txt -> {azure.uri('p/back')}\\slash.txt: "
        "blob name 'p/back\\\\slash.txt': Azure stores each '\\' of a blob name as "
        "'/' (the blob would be 'p/back/slash.txt') (rename the file, or upload it "
        "to a key without '\\')",
        f"uploaded {tree}/ok.txt -> {azure.uri('p/ok.txt')}",
    ]
    assert azure.keys() == ["p/ok.txt"]
    # Nothing journaled for it: no `resume` hint, and resume --all has nothing to do.
    assert "cloudput resume" not in done.stderr
    assert [r.key for r in records()] == ["p/ok.txt"]

    named = run_cli(["upload", tree / "ok.txt", azure.uri("p/x\\y.txt")])
    assert named.code == 10
    assert named.stderr.startswith("cloudput: error: blob name 'p/x\\\\y.txt': ")
    assert len(named.stderr.splitlines()) == 1


def test_unwritable_manifest_is_refused_before_any_upload(
    s3: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: the first upload went, then `internal error: FileNotFoundError` (exit 1)
    and the rest of the tree was left."""
    write_random(tmp_path / "site" / "a.txt", 10)
    write_random(tmp_path / "site" / "b.txt", 10)
    s3.apply_env(monkeypatch)
    manifest = tmp_path / "no-such-dir" / "m.jsonl"
    done = run_cli(["upload", tmp_path / "site", s3.uri("p/"), "--manifest", manifest])
    assert done.code == 2
    assert done.stderr == (
        f"cloudput: error: --manifest {manifest}: cannot write there (No such file or "
        "directory) (give a file in a directory that exists and is writable)\n"
    )
    assert done.stdout == ""
    assert s3.keys() == []
    assert records() == []


@pytest.mark.parametrize("option", ["--log-file", "--audit-log"])
def test_unwritable_log_file_is_one_line_not_an_internal_error(
    option: str, tmp_path: Path
) -> None:
    """Was: `cloudput: internal error: FileNotFoundError: ...` (exit 1)."""
    path = tmp_path / "no-such-dir" / "x.log"
    done = run_cli(["list", option, path])
    assert done.code == 2
    assert done.stderr == (
        f"cloudput: error: {option} {path}: cannot write there (No such file or "
        "directory) (give a file in a directory that exists and is writable)\n"
    )


def test_unwritable_audit_log_from_the_environment_is_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "no-such-dir" / "a.log"
    monkeypatch.setenv("CLOUDPUT_AUDIT_LOG", str(path))
    done = run_cli(["list"])
    assert done.code == 3
    assert done.stderr.startswith(
        f"cloudput: error: audit_log (CLOUDPUT_AUDIT_LOG or the config file) {path}: "
    )
    assert len(done.stderr.splitlines()) == 1


def test_ci_progress_keeps_no_state_per_finished_upload() -> None:
    """Was: PlainProgress (stderr not a terminal: CI) kept two dict entries per upload
    for the whole run, about 120 MiB per million files, past the memory bound of
    CONTRACT.md by itself."""
    stream = io.StringIO()
    now = [0.0]
    progress = PlainProgress(stream, interval_s=1.0, clock=lambda: now[0])
    tracemalloc.start()
    try:
        progress.upload_started("warm", "w", 10, 0)
        progress.upload_finished("warm", "completed")
        before, _ = tracemalloc.get_traced_memory()
        for number in range(50_000):
            upload_id = f"{number:012x}"
            progress.upload_started(upload_id, "f", 100, 0)
            progress.bytes_done(upload_id, 60)
            progress.upload_finished(upload_id, "completed")
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 64 * KIB, after - before
    now[0] = 10.0  # the next line is due
    progress.upload_started("last", "f", 100, 0)
    progress.bytes_done("last", 100)
    last = stream.getvalue().splitlines()[-1]
    assert last.startswith("cloudput: progress 4.8 MiB / 4.8 MiB (100%), ")
    assert last.endswith(", 50002 uploads")


@pytest.mark.parametrize("name", ["trail.", "dir./f.txt", "..."])
def test_azure_blob_name_with_a_segment_ending_in_a_dot_is_refused(
    name: str, azure: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Azure drops the dots that end a blob name or a segment (its naming rules; the
    real service stores `02.txt.` as `02.txt`), so cloudput would report an upload at
    a key that is not there. Azurite keeps them: the refusal is cloudput's own."""
    tree = tmp_path / "t"
    write_random(tree / name, 10)
    write_random(tree / "ok.txt", 10)
    azure.apply_env(monkeypatch)
    done = run_cli(["upload", tree, azure.uri("p/")])
    assert done.code == 10, done.stderr
    (failed,) = [line for line in done.stdout.splitlines() if line.startswith("failed")]
    assert f"blob name 'p/{name}': Azure drops the dots that end" in failed
    assert azure.keys() == ["p/ok.txt"]
    assert [r.key for r in records()] == ["p/ok.txt"]
