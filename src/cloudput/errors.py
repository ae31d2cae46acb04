"""Error classes and their exit codes (CONTRACT.md, "Exit codes").

The library raises these; only the CLI's error boundary prints them and exits.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_SOURCE = 4
EXIT_CREDENTIALS = 5
EXIT_BUCKET = 6
EXIT_RESUMABLE = 7
EXIT_INTEGRITY = 8
EXIT_JOURNAL = 9
EXIT_NOT_SUPPORTED = 10
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

# With several uploads the run's exit code is the first of this order that occurred.
EXIT_PRECEDENCE = (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_INTERNAL,
    EXIT_JOURNAL,
    EXIT_INTEGRITY,
    EXIT_CREDENTIALS,
    EXIT_CONFIG,
    EXIT_BUCKET,
    EXIT_RESUMABLE,
    EXIT_SOURCE,
    EXIT_NOT_SUPPORTED,
    EXIT_USAGE,
)


def combine_exit_codes(codes: list[int]) -> int:
    """Return the run's exit code for the per-upload codes, by CONTRACT.md's order."""
    present = {code for code in codes if code != EXIT_OK}
    for code in EXIT_PRECEDENCE:
        if code in present:
            return code
    return EXIT_INTERNAL if present else EXIT_OK


class CloudputError(Exception):
    """Base of every error cloudput reports; carries an exit code and a short code."""

    exit_code = EXIT_INTERNAL
    code = "internal"

    def __init__(
        self, message: str, *, hint: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(CloudputError):
    """Bad arguments or options, unknown upload id, unsafe key."""

    exit_code = EXIT_USAGE
    code = "usage"


class ConfigError(CloudputError):
    """Configuration invalid or incomplete."""

    exit_code = EXIT_CONFIG
    code = "config"


class SourceError(CloudputError):
    """Source missing, unreadable, a special file, or against policy."""

    exit_code = EXIT_SOURCE
    code = "source"


class SourceChangedError(SourceError):
    """The source changed since it was journaled or while it was being sent."""

    code = "source_changed"


class PolicyError(SourceError):
    """The source is against the configured policy (size, MIME type)."""

    code = "policy"


class CredentialsError(CloudputError):
    """Credentials missing, expired or refused."""

    exit_code = EXIT_CREDENTIALS
    code = "credentials"


class BucketNotFoundError(CloudputError):
    """The bucket or container does not exist."""

    exit_code = EXIT_BUCKET
    code = "bucket_not_found"


class TransientError(CloudputError):
    """A failure that a retry or a later ``resume`` may overcome (5xx, throttling, network)."""

    exit_code = EXIT_RESUMABLE
    code = "transient"


class ThrottledError(TransientError):
    """The provider asked us to slow down (429, 503 SlowDown, ServerBusy)."""

    code = "throttled"


class BadDigestError(TransientError):
    """The provider rejected a part whose bytes did not match the digest sent with it
    (S3 BadDigest, Azure Md5Mismatch): the part is re-sent, never the whole upload."""

    code = "bad_digest"


class RetriesExhaustedError(TransientError):
    """The retry budget ran out; the upload stays resumable."""

    code = "retries_exhausted"


class DeadlineError(TransientError):
    """``--max-duration`` was reached; the upload stopped at a clean checkpoint."""

    code = "max_duration"


class IntegrityError(CloudputError):
    """Size or checksum of what the provider holds differs from the source."""

    exit_code = EXIT_INTEGRITY
    code = "checksum_mismatch"


class JournalError(CloudputError):
    """The journal is corrupt, unreadable or from a newer version."""

    exit_code = EXIT_JOURNAL
    code = "journal"


class NotSupportedError(CloudputError):
    """The feature is not supported for this provider."""

    exit_code = EXIT_NOT_SUPPORTED
    code = "not_supported"


class InterruptedRunError(CloudputError):
    """SIGINT or SIGTERM stopped the run; uploads stay resumable."""

    code = "interrupted"

    def __init__(self, signal_exit_code: int):
        name = {EXIT_SIGINT: "SIGINT", EXIT_SIGTERM: "SIGTERM"}.get(
            signal_exit_code, "a signal"
        )
        super().__init__(
            f"stopped by {name}", hint="the upload is kept; `cloudput resume` it"
        )
        self.exit_code = signal_exit_code


class UploadGoneError(CloudputError):
    """The provider no longer knows the session (aborted elsewhere, expired).

    Internal: the engine reacts by starting the upload over from its first part.
    """

    exit_code = EXIT_RESUMABLE
    code = "upload_gone"


class PresignExpiredError(TransientError):
    """A presigned URL or SAS the uploader held has expired: re-sign and retry."""

    code = "url_expired"
