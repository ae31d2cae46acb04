"""docs/plumbing.md's curl examples run against each emulator, so the doc cannot rot.

The shell blocks marked `# plumbing-example: NAME` are taken from the doc as written;
only the bucket name is replaced. They run in bash with the emulator's environment and
the `cloudput` of this virtualenv first on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import MIB, process_env

DOC = Path(__file__).resolve().parents[1] / "docs" / "plumbing.md"
BLOCK = re.compile(r"```sh\n# plumbing-example: (\S+)\n(.*?)```", re.DOTALL)
#: The names the doc uses for a bucket and a container.
DOC_BUCKETS = ("my-bucket", "my-container")
#: Larger than the multipart threshold (8 MiB) so every example goes in parts.
FILE_BYTES = 11 * MIB
#: The doc's examples by the backend fixture's names.
EXAMPLES = {"s3": "s3", "gcs": "gcs", "azure": "azure"}


def doc_examples() -> dict[str, str]:
    return dict(BLOCK.findall(DOC.read_text()))


def test_the_doc_has_an_example_per_provider():
    assert set(doc_examples()) == {"common", *EXAMPLES.values()}


def test_the_curl_example_uploads_the_file(backend, tmp_path):
    for tool in ("bash", "curl", "jq"):
        if shutil.which(tool) is None:
            if os.environ.get("CI"):
                pytest.fail(f"{tool} is needed to run docs/plumbing.md's examples")
            pytest.skip(f"{tool} is not installed: docs/plumbing.md's examples need it")
    examples = doc_examples()
    script = examples["common"] + examples[EXAMPLES[backend.name]]
    for name in DOC_BUCKETS:
        script = script.replace(name, backend.bucket)
    data = os.urandom(FILE_BYTES)
    (tmp_path / "clip.mp4").write_bytes(data)
    env = process_env(backend.env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["status"] == "completed"
    assert record["size"] == FILE_BYTES
    assert backend.read("videos/clip.mp4") == data
