"""Local cloud emulators as child processes: moto's S3 server, GCS emulator, Azurite.

Each class starts one server on 127.0.0.1 at a port chosen at run time, waits until it
answers, and can reset, restart and stop it. It never touches real cloud accounts.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]

#: How long a server may take to answer its first request.
READY_TIMEOUT_S = 60.0
#: How long stop() waits after SIGTERM before it sends SIGKILL.
STOP_GRACE_S = 5.0
#: Lines of the server's log quoted in a start-up error.
LOG_TAIL_LINES = 40
#: Attempts at start-up, each on a fresh port (another process may grab a free port
#: between free_port() and the server's bind); only a port clash is retried.
START_ATTEMPTS = 3
_PORT_CLASH_HINTS = ("address already in use", "eaddrinuse")

#: prctl option: signal to deliver when the parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1

#: Azurite's published development account (documented by Microsoft for the emulator;
#: it is not a secret and grants access to nothing but a local Azurite).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
    "KBHBeksoGMGw=="
)

# The environment as it was when the test session began, before any fixture changed
# it; servers started later must not inherit one test's temporary HOME or credentials.
_SESSION_ENV = dict(os.environ)
_DROPPED_PREFIXES = ("AWS_", "GOOGLE_", "GCLOUD_", "AZURE_", "CLOUDPUT_", "COVERAGE_")
_DROPPED_NAMES = ("STORAGE_EMULATOR_HOST", "GCP_SERVICE_ACCOUNT_JSON")


class EmulatorUnavailableError(RuntimeError):
    """The emulator's executable (or Node.js for Azurite) is not installed."""


class EmulatorStartError(RuntimeError):
    """The emulator did not come up; the message quotes its log."""


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the test process dies,
    so a pytest killed by a timeout leaves no emulator behind."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # best effort; stop() still ends it on a normal exit


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def venv_executable(name: str) -> str:
    """Find a console script of this Python environment (next to sys.executable)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise EmulatorUnavailableError(
            f"{name} not found next to {sys.executable} nor on PATH; "
            "install the test extras: pip install -e '.[test]'"
        )
    return found


def server_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The session's starting environment without cloud settings or coverage hooks."""
    env = {
        name: value
        for name, value in _SESSION_ENV.items()
        if not name.startswith(_DROPPED_PREFIXES) and name not in _DROPPED_NAMES
    }
    env.update(extra or {})
    return env


def http_status(port: int, method: str, path: str, timeout_s: float = 2.0) -> int:
    """Send one bodiless request to 127.0.0.1:port and return the status code."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        connection.request(method, path, headers={"Content-Length": "0"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


class Emulator:
    """One emulator process; subclasses give its command line and readiness probe."""

    name = "emulator"

    def __init__(self) -> None:
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix=f"cloudput-{self.name}-"))
        self.log_path = self._workdir / "server.log"

    # -- what subclasses provide -------------------------------------------------

    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return server_environment()

    def is_ready(self, port: int) -> bool:
        """True once the server answers; any HTTP answer counts unless overridden."""
        http_status(port, "GET", "/")
        return True

    # -- lifecycle -----------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Base URL of the running server, e.g. http://127.0.0.1:54321."""
        if self.port is None:
            raise RuntimeError(f"{self.name} is not running")
        return f"http://{HOST}:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, port: int | None = None) -> None:
        """Start the server (on `port` if given and free) and wait until it answers."""
        if self.is_running:
            return
        last_error: EmulatorStartError | None = None
        for attempt in range(START_ATTEMPTS):
            chosen = port if (port is not None and attempt == 0) else free_port()
            try:
                self._start_once(chosen)
                return
            except EmulatorStartError as exc:
                last_error = exc
                if not any(hint in str(exc).lower() for hint in _PORT_CLASH_HINTS):
                    break
        assert last_error is not None
        raise last_error

    def _start_once(self, port: int) -> None:
        log = self.log_path.open("ab")
        log.write(f"\n--- starting {self.name} on port {port} ---\n".encode())
        log.flush()
        self._process = subprocess.Popen(
            self.command(port),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self._workdir,
            env=self.environment(),
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.port = port
        self._wait_until_ready(port)

    def _wait_until_ready(self, port: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                code = self._process.returncode
                self._forget()
                raise EmulatorStartError(
                    f"{self.name} exited with code {code} while starting on port "
                    f"{port}; log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if self.is_ready(port):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise EmulatorStartError(
            f"{self.name} did not answer on port {port} within {READY_TIMEOUT_S:.0f}s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Terminate the server; kill it if it has not exited after STOP_GRACE_S."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_GRACE_S)
        self._forget()

    def _forget(self) -> None:
        self._process = None
        self.port = None

    def restart(self) -> None:
        """Stop and start again, on the same port when it is still free."""
        port = self.port
        self.stop()
        self.start(port)

    def reset(self) -> None:
        """Drop every bucket and object. By default: restart the process."""
        self.restart()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class MotoServer(Emulator):
    """moto's S3 server. With auth=True it refuses credentials it does not know.

    moto accepts any credentials unless INITIAL_NO_AUTH_ACTION_COUNT is set; at 0 every
    request is checked against moto's IAM, where the dummy keys do not exist.
    """

    name = "moto"

    def __init__(self, auth: bool = False) -> None:
        super().__init__()
        self.auth = auth

    def command(self, port: int) -> list[str]:
        return [venv_executable("moto_server"), "-H", HOST, "-p", str(port)]

    def environment(self) -> dict[str, str]:
        extra = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if self.auth else {}
        return server_environment(extra)

    def is_ready(self, port: int) -> bool:
        return http_status(port, "GET", "/moto-api/") == 200

    def reset(self) -> None:
        """Drop all state through moto's own reset endpoint (no restart)."""
        assert self.port is not None, "moto is not running"
        status = http_status(self.port, "POST", "/moto-api/reset", timeout_s=30)
        if status != 200:
            raise RuntimeError(f"moto reset answered {status}")


class GcsEmulator(Emulator):
    """gcp-storage-emulator, in memory. Single-threaded: keep chunks at 1 MiB or more.

    reset() uses the emulator's own GET /wipe, which drops buckets and objects.
    """

    name = "gcs"

    def command(self, port: int) -> list[str]:
        return [
            venv_executable("gcp-storage-emulator"),
            "start",
            "--host",
            HOST,
            "--port",
            str(port),
            "--in-memory",
        ]

    def is_ready(self, port: int) -> bool:
        return http_status(port, "GET", "/") == 200

    def reset(self) -> None:
        assert self.port is not None, "the GCS emulator is not running"
        status = http_status(self.port, "GET", "/wipe", timeout_s=30)
        if status != 200:
            raise RuntimeError(f"GCS emulator wipe answered {status}")


def azurite_executable() -> str:
    """azurite-blob from the repository's node_modules (package.json), else PATH."""
    if shutil.which("node") is None:
        raise EmulatorUnavailableError(
            "Node.js is not installed; the Azure tests need it for Azurite"
        )
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    found = shutil.which("azurite-blob")
    if found is None:
        raise EmulatorUnavailableError(
            f"azurite-blob not found in {local.parent} nor on PATH; run `npm ci` "
            "at the repository root"
        )
    return found


class Azurite(Emulator):
    """Azurite's blob service, in memory, with the development account.

    reset() restarts the process: Azurite's in-memory store does not give memory back.
    """

    name = "azurite"

    def __init__(self) -> None:
        super().__init__()
        self.executable = azurite_executable()

    def command(self, port: int) -> list[str]:
        return [
            self.executable,
            "--blobHost",
            HOST,
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--loose",
            "--disableProductStyleUrl",
            "--disableTelemetry",
        ]

    @property
    def blob_endpoint(self) -> str:
        """The dev account's blob endpoint: http://127.0.0.1:PORT/devstoreaccount1."""
        return f"{self.endpoint}/{AZURITE_ACCOUNT}"

    def connection_string(self, blob_endpoint: str | None = None) -> str:
        """A connection string for the dev account at this server (or another URL)."""
        return azurite_connection_string(blob_endpoint or self.blob_endpoint)


def azurite_connection_string(blob_endpoint: str) -> str:
    """Connection string for Azurite's development account at `blob_endpoint`."""
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={blob_endpoint};"
    )
