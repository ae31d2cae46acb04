"""Logging setup for the CLI and the redaction filter that keeps secrets out of logs.

The library only calls ``logging.getLogger(__name__)``; handlers are added here, by the CLI.
"""

from __future__ import annotations

import logging
import re
import sys

_SECRET_PATTERNS = [
    # Presigned S3 query parameters, SAS tokens, GCS upload session ids.
    (
        re.compile(r"(?i)(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+"),
        r"\1REDACTED",
    ),
    (
        re.compile(
            r"(?i)([?&](?:sig|se|sv|sp|st|spr|skoid|sktid|upload_id)=)[^&\s\"']+"
        ),
        r"\1REDACTED",
    ),
    (re.compile(r"(?i)(AccountKey=)[^;\s\"']+"), r"\1REDACTED"),
    (re.compile(r"(?i)(SharedAccessSignature=)[^;\s\"']+"), r"\1REDACTED"),
    # An Authorization header, also as botocore's -vvv request log prints it (bytes:
    # 'Authorization': b'AWS4-HMAC-SHA256 Credential=..., Signature=...').
    (
        re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*b?(['\"]))[^'\"\n]*\2"),
        r"\1REDACTED\2",
    ),
    (
        re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*)(?![\s'\"]|b['\"])[^'\",}\n]+"),
        r"\1REDACTED",
    ),
    (
        re.compile(
            r"(?i)(aws_secret_access_key|aws_session_token)(['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"
        ),
        r"\1\2REDACTED",
    ),  # S3 SSE-C keys, as a header (botocore's -vvv request log) or a parameter.
    (
        re.compile(
            r"(?i)(x-amz-(?:copy-source-)?server-side-encryption-customer-key|"
            r"SSECustomerKey)(['\"]?\s*[:=]\s*b?['\"]?)[^'\"\s,}]+"
        ),
        r"\1\2REDACTED",
    ),
]


def redact(text: str) -> str:
    """Replace every secret this module knows the shape of with ``REDACTED``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with secrets redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def setup_logging(verbosity: int, log_file: str | None, quiet: bool = False) -> None:
    """Send WARNING (or INFO with -v, DEBUG with -vv) to stderr, DEBUG to ``log_file``."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cloudput", False):
            root.removeHandler(handler)
            handler.close()
    level = (
        logging.WARNING
        if verbosity == 0
        else logging.INFO
        if verbosity == 1
        else logging.DEBUG
    )
    if quiet and verbosity == 0:
        level = logging.ERROR
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(level)
    stderr.setFormatter(logging.Formatter("cloudput: %(levelname)s: %(message)s"))
    _add(root, stderr)
    if log_file:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        _add(root, file_handler)
    root.setLevel(logging.DEBUG if (log_file or verbosity >= 2) else level)
    sdk_level = logging.DEBUG if verbosity >= 3 else logging.WARNING
    for name in ("botocore", "boto3", "urllib3", "azure", "google", "s3transfer"):
        logging.getLogger(name).setLevel(sdk_level)


def _add(root: logging.Logger, handler: logging.Handler) -> None:
    handler.addFilter(RedactingFilter())
    handler._cloudput = True  # type: ignore[attr-defined]
    root.addHandler(handler)
