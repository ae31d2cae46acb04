"""No credential, session URL or signature appears in output, logs, list/show or errors.

Sentinel secrets are planted in the environment; every output is searched for them. The
raw journal may hold a GCS session URL (a bearer secret, hence 0600), and only there.
"""

from __future__ import annotations

from pathlib import Path

from cloudput.logs import redact
from tests.faultproxy import FaultProxy, Match
from tests.helpers import (
    FAST_RETRY_ENV,
    MIB,
    journal_path,
    kill_after_parts,
    only_record,
    run_cli,
    run_cloudput,
    start_cloudput,
    write_random,
)

SENTINEL_SECRET = "SENTINELsecretKEY0123456789abcdefABCDEF"
SENTINEL_TOKEN = "SENTINELsessionTOKEN9876543210zyxwvu"


def outputs(*results, files: list[Path]) -> str:
    texts = [r.stdout + r.stderr for r in results]
    texts += [path.read_text(errors="replace") for path in files if path.exists()]
    return "\n".join(texts)


def test_s3_credentials_never_appear_in_output_logs_or_journal(
    s3, tmp_path, monkeypatch
):
    s3.apply_env(monkeypatch)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SENTINEL_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SENTINEL_TOKEN)
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    write_random(small, 1000)
    write_random(big, 11 * MIB)
    log = tmp_path / "debug.log"
    uploaded = run_cli(
        [
            "upload",
            str(small),
            str(big),
            s3.uri("p/"),
            "-vv",
            "--log-file",
            str(log),
            "--part-size",
            "5MiB",
            "--json",
        ]
    )
    assert uploaded.code == 0, uploaded.stderr
    listed = run_cli(["list", "--json"])
    shown = run_cli(["show", only_record_id(), "--json"])
    missing = run_cli(
        [
            "upload",
            str(small),
            "s3://no-such-bucket-here/k",
            "-vv",
            "--log-file",
            str(log),
        ]
    )
    everything = outputs(uploaded, listed, shown, missing, files=[log])
    everything += journal_path().read_bytes().decode("latin-1")
    for secret in (SENTINEL_SECRET, SENTINEL_TOKEN):
        assert secret not in everything


def only_record_id() -> str:
    from tests.helpers import records

    return records()[-1].id


def test_gcs_session_url_stays_in_the_raw_journal_only(gcs, tmp_path):
    source = tmp_path / "big.bin"
    write_random(source, 12 * MIB)
    log = tmp_path / "debug.log"
    with FaultProxy(gcs.endpoint) as proxy:
        proxy.delay(Match(method="PUT"), 0.3, times=None)
        env = {**gcs.routed_through(proxy.url), **FAST_RETRY_ENV}
        process = start_cloudput(
            [
                "upload",
                str(source),
                gcs.uri("k"),
                "--part-size",
                "1MiB",
                "-vv",
                "--log-file",
                str(log),
            ],
            env,
        )
        killed = kill_after_parts(process, 2)
        record = only_record()
        listed = run_cloudput(["list", "--json"], env)
        shown = run_cloudput(["show", record.id, "--json"], env)
        resumed = run_cloudput(["resume", "--all", "-vv", "--log-file", str(log)], env)
    assert resumed.code == 0, resumed.stderr
    session_url = record.session.split("#")[0]
    assert "upload_id=" in session_url
    everything = outputs(killed, listed, shown, resumed, files=[log])
    upload_token = session_url.split("upload_id=")[1].split("&")[0]
    assert upload_token not in everything
    assert upload_token in journal_path().read_bytes().decode("latin-1")


def test_azure_account_key_never_appears_in_output_or_logs(
    azure, tmp_path, monkeypatch
):
    azure.apply_env(monkeypatch)
    account_key = azure.connection_string.split("AccountKey=")[1].split(";")[0]
    source = tmp_path / "f.bin"
    write_random(source, 9 * MIB)
    log = tmp_path / "debug.log"
    uploaded = run_cli(
        ["upload", str(source), azure.uri("k"), "-vv", "--log-file", str(log)]
    )
    assert uploaded.code == 0, uploaded.stderr
    missing = run_cli(["upload", str(source), "az://nocontainerhere/k", "-vv"])
    everything = outputs(uploaded, missing, run_cli(["list", "--json"]), files=[log])
    everything += journal_path().read_bytes().decode("latin-1")
    assert account_key not in everything


def test_redaction_covers_signed_urls_and_keys():
    text = (
        "PUT https://b.s3.amazonaws.com/k?partNumber=1&X-Amz-Signature=abc123&X-Amz-Credential=AK "
        "https://a.blob.core.windows.net/c/b?sv=2024&sig=SASsig%3D&se=2026 "
        "AccountKey=key==;EndpointSuffix=x Authorization: Bearer tok123 "
        "https://storage.googleapis.com/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=SESSION1"
    )
    cleaned = redact(text)
    for secret in ("abc123", "SASsig", "key==", "tok123", "SESSION1"):
        assert secret not in cleaned


def test_redaction_covers_a_sigv4_header_logged_as_bytes():
    """botocore's -vvv request log prints headers as bytes: b'AWS4-HMAC-SHA256 ...'."""
    text = (
        "{'User-Agent': b'Botocore/1.36', 'Authorization': b'AWS4-HMAC-SHA256 "
        "Credential=AKIDEXAMPLE/20261204/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=9a7cSIGNATURE'}"
    )
    cleaned = redact(text)
    assert "9a7cSIGNATURE" not in cleaned
    assert "AKIDEXAMPLE" not in cleaned
    assert "'Authorization': b'REDACTED" in cleaned


SENTINEL_SSE_C_KEY = b"SENTINELsseCkeyZYXWVUTSRQPONMLKJ"  # 32 bytes


def test_s3_sse_c_key_never_appears_even_in_sdk_debug_logs(s3, tmp_path, monkeypatch):
    """-vvv lets botocore log each request's headers; the key header is redacted."""
    import base64

    s3.apply_env(monkeypatch)
    key_file = tmp_path / "sse-c.key"
    key_file.write_bytes(SENTINEL_SSE_C_KEY)
    source = tmp_path / "big.bin"
    write_random(source, 11 * MIB)
    log = tmp_path / "debug.log"
    uploaded = run_cli(
        [
            "upload",
            str(source),
            s3.uri("enc/big.bin"),
            "--part-size",
            "5MiB",
            "--sse-c-key-file",
            str(key_file),
            "-vvv",
            "--log-file",
            str(log),
            "--json",
        ]
    )
    assert uploaded.code == 0, uploaded.stderr
    upload_id = only_record().id
    shown = run_cli(["show", upload_id, "--json"])
    listed = run_cli(["list", "--json"])
    text = outputs(uploaded, shown, listed, files=[log])
    text += journal_path().read_bytes().decode("latin-1")
    assert "x-amz-server-side-encryption-customer-key" in log.read_text()
    for form in (SENTINEL_SSE_C_KEY, base64.b64encode(SENTINEL_SSE_C_KEY)):
        assert form.decode() not in text
