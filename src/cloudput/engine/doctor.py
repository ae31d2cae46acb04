"""``cloudput doctor``: is each provider configured, reachable, accepting our
credentials, holding the bucket, on time, and are the SDKs in their supported range?

Talks to providers only through their contract and plain HTTP; never imports an SDK.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from importlib import metadata
from pathlib import Path

from cloudput.errors import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_RESUMABLE,
    BucketNotFoundError,
    CloudputError,
)
from cloudput.keys import Target
from cloudput.providers.base import Provider

#: A clock this far from the server's breaks request signatures (SigV4 allows 15 min).
MAX_CLOCK_SKEW_S = 300.0
PROBE_TIMEOUT_S = 10.0
SDKS = {
    "s3": ("botocore",),
    "gcs": ("google-cloud-storage", "google-auth", "google-crc32c"),
    "azure": ("azure-storage-blob",),
}
#: Variables (or files) whose presence means the user configured the provider.
CONFIGURED_BY = {
    "s3": (
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ),
    "gcs": (
        "STORAGE_EMULATOR_HOST",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GCP_SERVICE_ACCOUNT_JSON",
    ),
    "azure": (
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_ACCOUNT_NAME",
        "AZURE_CLIENT_ID",
    ),
}
CONFIG_FILES = {
    "s3": ("~/.aws/credentials", "~/.aws/config"),
    "gcs": ("~/.config/gcloud/application_default_credentials.json",),
    "azure": (),
}


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    provider: str
    name: str
    status: str  # "ok" | "warn" | "fail" | "skip"
    detail: str
    exit_code: int = EXIT_OK


def is_configured(provider: str) -> bool:
    """True when the user's environment or files configure this provider."""
    if any(os.environ.get(name) for name in CONFIGURED_BY[provider]):
        return True
    return any(Path(path).expanduser().exists() for path in CONFIG_FILES[provider])


def check_sdks(provider: str) -> list[Check]:
    """Installed SDK versions against the ranges cloudput pins."""
    from packaging.requirements import Requirement  # only doctor needs it

    wanted = {
        Requirement(text).name.lower(): Requirement(text)
        for text in metadata.requires("cloudput") or []
        if "extra ==" not in text
    }
    checks = []
    for package in SDKS[provider]:
        requirement = wanted.get(package)
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            checks.append(
                Check(provider, f"sdk {package}", "fail", "not installed", EXIT_CONFIG)
            )
            continue
        if requirement is None or requirement.specifier.contains(
            version, prereleases=True
        ):
            spec = str(requirement.specifier) if requirement else "any"
            checks.append(
                Check(provider, f"sdk {package}", "ok", f"{version} ({spec})")
            )
        else:
            checks.append(
                Check(
                    provider,
                    f"sdk {package}",
                    "fail",
                    f"{version} is outside {requirement.specifier}",
                    EXIT_CONFIG,
                )
            )
    return checks


def check_endpoint(
    provider: str, endpoint: str, clock: Callable[[], float] = time.time
) -> list[Check]:
    """Does the endpoint answer, and how far is our clock from its Date header?"""
    import requests  # only doctor needs it; imported here to keep start-up short

    try:
        response = requests.head(
            endpoint, timeout=PROBE_TIMEOUT_S, allow_redirects=False
        )
    except requests.RequestException as exc:
        return [
            Check(
                provider,
                "endpoint",
                "fail",
                f"{endpoint} does not answer ({type(exc).__name__})",
                EXIT_RESUMABLE,
            )
        ]
    checks = [
        Check(
            provider,
            "endpoint",
            "ok",
            f"{endpoint} answers (HTTP {response.status_code})",
        )
    ]
    date = response.headers.get("Date")
    if not date:
        return [
            *checks,
            Check(provider, "clock", "skip", "the server sent no Date header"),
        ]
    skew = clock() - parsedate_to_datetime(date).timestamp()
    status = "ok" if abs(skew) <= MAX_CLOCK_SKEW_S else "fail"
    code = EXIT_OK if status == "ok" else EXIT_CONFIG
    return [
        *checks,
        Check(provider, "clock", status, f"{skew:+.0f}s from the server", code),
    ]


def check_access(
    provider_name: str, provider: Provider, bucket: str | None
) -> list[Check]:
    """Credentials accepted (one cheap authenticated call) and the bucket present."""
    probe = bucket or f"cloudput-doctor-{uuid.uuid4().hex[:12]}"
    try:
        provider.check_bucket(Target(provider_name, probe, ""))
    except BucketNotFoundError as exc:
        if bucket is None:
            return [Check(provider_name, "credentials", "ok", "accepted")]
        return [
            Check(provider_name, "credentials", "ok", "accepted"),
            Check(provider_name, "bucket", "fail", exc.message, exc.exit_code),
        ]
    except CloudputError as exc:
        return [Check(provider_name, "credentials", "fail", str(exc), exc.exit_code)]
    checks = [Check(provider_name, "credentials", "ok", "accepted")]
    if bucket is None:
        return [
            *checks,
            Check(provider_name, "bucket", "skip", "no bucket named (--bucket)"),
        ]
    return [*checks, Check(provider_name, "bucket", "ok", f"{bucket} exists")]


def diagnose(provider_name: str, provider: Provider, bucket: str | None) -> list[Check]:
    """Every check for one provider."""
    checks = check_sdks(provider_name)
    try:
        endpoint = provider.endpoint()
    except CloudputError as exc:
        return [
            *checks,
            Check(provider_name, "credentials", "fail", str(exc), exc.exit_code),
        ]
    reached = check_endpoint(provider_name, endpoint)
    checks += reached
    if any(c.name == "endpoint" and c.status == "fail" for c in reached):
        # Nothing answers there, so no request can say anything about the
        # credentials or the bucket: not checked, rather than blamed.
        return checks + _not_reached(provider_name, bucket)
    return checks + check_access(provider_name, provider, bucket)


def _not_reached(provider_name: str, bucket: str | None) -> list[Check]:
    """The access checks, skipped because the endpoint does not answer."""
    why = "not checked: the endpoint does not answer"
    checks = [Check(provider_name, "credentials", "skip", why)]
    if bucket is not None:
        checks.append(Check(provider_name, "bucket", "skip", why))
    return checks
