"""Shared fixtures: a clean environment, the three emulators, and a bucket per test.

Fixture names are a contract for every test module: `clean_env` (autouse),
`moto_server`, `moto_auth_server`, `gcs_emulator`, `azurite`, `backend` (parametrized
s3/gcs/azure) and the single-provider `s3`, `gcs`, `azure`. Tests marked `heavy` get
their emulator restarted afterwards, which gives its memory back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import BACKEND_CLASSES, DUMMY_AWS_ENV, Backend
from tests.emulators import (
    Azurite,
    Emulator,
    EmulatorUnavailableError,
    GcsEmulator,
    MotoServer,
)

PROVIDERS = ["s3", "gcs", "azure"]
_CLOUD_PREFIXES = (
    "AWS_",
    "GOOGLE_",
    "GCLOUD_",
    "CLOUDSDK_",
    "AZURE_",
    "CLOUDPUT_",
)
_CLOUD_NAMES = (
    "STORAGE_EMULATOR_HOST",
    "GCP_SERVICE_ACCOUNT_JSON",
    "GCE_METADATA_HOST",
    "GCE_METADATA_IP",
    "IDENTITY_ENDPOINT",
    "MSI_ENDPOINT",
)
_EMULATOR_FIXTURE = {"s3": "moto_server", "gcs": "gcs_emulator", "azure": "azurite"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide the user's cloud settings and home; give dummy AWS keys and a tmp journal.

    Returns the journal path, also set as CLOUDPUT_JOURNAL. COVERAGE_* variables are
    kept so cloudput processes started by tests are measured.
    """
    for name in list(os.environ):
        if name.startswith(_CLOUD_PREFIXES) or name in _CLOUD_NAMES:
            monkeypatch.delenv(name)
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_GCE_CHECK", "True")

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_CACHE_HOME", ".cache"),
    ):
        monkeypatch.setenv(name, str(home / sub))

    journal = tmp_path / "journal" / "cloudput.sqlite3"
    monkeypatch.setenv("CLOUDPUT_JOURNAL", str(journal))
    return journal


def _unavailable(reason: str) -> None:
    """Missing tools skip a developer's run with the reason; in CI they fail it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the Azure tests must run)", pytrace=False)
    pytest.skip(reason)


def _run(emulator: Emulator) -> Iterator[Emulator]:
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Emulator]:
    """moto's S3 server, accepting any credentials."""
    yield from _run(MotoServer())


@pytest.fixture(scope="session")
def moto_auth_server() -> Iterator[Emulator]:
    """A second moto server with authentication on: dummy credentials are refused."""
    yield from _run(MotoServer(auth=True))


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Emulator]:
    """gcp-storage-emulator, in memory."""
    yield from _run(GcsEmulator())


@pytest.fixture(scope="session")
def azurite() -> Iterator[Emulator]:
    """Azurite's blob service; skips (fails in CI) when Node.js or Azurite is absent."""
    try:
        emulator = Azurite()
    except EmulatorUnavailableError as exc:
        _unavailable(str(exc))
        raise  # unreachable: _unavailable always raises
    yield from _run(emulator)


def _make_backend(request: pytest.FixtureRequest, name: str) -> Iterator[Backend]:
    emulator: Emulator = request.getfixturevalue(_EMULATOR_FIXTURE[name])
    backend = BACKEND_CLASSES[name](emulator)
    backend.create_bucket()
    yield backend
    _tidy_after(request, backend)


def _tidy_after(request: pytest.FixtureRequest, backend: Backend) -> None:
    """Free what the test stored; restart a crashed emulator, or one after `heavy`."""
    emulator = backend.emulator
    if not emulator.is_running:
        emulator.start()
        return
    if request.node.get_closest_marker("heavy") is not None:
        if isinstance(emulator, GcsEmulator):
            emulator.reset()  # its wipe frees the in-memory store; no restart needed
        else:
            emulator.restart()
        return
    try:
        backend.delete_bucket()
    except Exception:  # noqa: BLE001 - best effort; the next test has its own bucket
        pass


@pytest.fixture(params=PROVIDERS, ids=PROVIDERS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh bucket on each provider's emulator in turn (ids s3, gcs, azure)."""
    yield from _make_backend(request, request.param)


@pytest.fixture
def s3(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh bucket on moto's S3 server."""
    yield from _make_backend(request, "s3")


@pytest.fixture
def gcs(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh bucket on the GCS emulator."""
    yield from _make_backend(request, "gcs")


@pytest.fixture
def azure(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh container on Azurite."""
    yield from _make_backend(request, "azure")
