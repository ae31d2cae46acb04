"""PNG plots of one benchmark report (run with the tools venv, which has matplotlib).

`python benchmarks/plots.py benchmarks/results/quick.json` writes quick-*.png beside it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: Figures drawn per (provider, workload) panel: key in the summary row, axis label.
METRICS = (
    ("mib_per_s", "throughput MiB/s (higher is better)"),
    ("cpu_s_per_gib", "client CPU s per GiB (lower is better)"),
    ("max_rss_mib", "peak RSS MiB"),
)


def bars(report: dict[str, Any], out: Path) -> None:
    panels = sorted({(r["provider"], r["workload"]) for r in report["summary"]})
    if not panels:
        return
    figure, axes = plt.subplots(
        len(METRICS),
        len(panels),
        figsize=(4 * len(panels), 3.2 * len(METRICS)),
        squeeze=False,
    )
    for column, (provider, workload) in enumerate(panels):
        rows = [
            r
            for r in report["summary"]
            if (r["provider"], r["workload"]) == (provider, workload)
        ]
        names = [r["tool"] for r in rows]
        for line, (key, label) in enumerate(METRICS):
            axis = axes[line][column]
            colours = [
                "tab:green"
                if n == "cloudput"
                else "tab:gray"
                if n == "curl"
                else "tab:blue"
                for n in names
            ]
            axis.bar(names, [r[key] for r in rows], color=colours)
            axis.set_title(f"{provider} / {workload}", fontsize=9)
            axis.set_ylabel(label, fontsize=8)
            axis.tick_params(axis="x", labelrotation=45, labelsize=7)
    figure.suptitle(f"cloudput vs peers ({report['mode']}, {report['started_at']})")
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    plt.close(figure)


def sweep(report: dict[str, Any], out: Path) -> None:
    runs = [r for r in report.get("sweep", []) if r["verified"]]
    if not runs:
        return
    cells: dict[tuple[int, int], list[float]] = {}
    for run in runs:
        words = run["tool"].split()
        part_mib = int(words[2].removesuffix("MiB"))
        concurrency = int(words[4])
        mib_s = run["total_bytes"] / 1048576 / run["wall_s"]
        cells.setdefault((part_mib, concurrency), []).append(mib_s)
    parts = sorted({p for p, _ in cells})
    concs = sorted({c for _, c in cells})
    grid = [[max(cells.get((p, c), [0.0])) for c in concs] for p in parts]
    figure, axis = plt.subplots(figsize=(6, 4.5))
    image = axis.imshow(grid, cmap="viridis", origin="lower")
    axis.set_xticks(range(len(concs)), [str(c) for c in concs])
    axis.set_yticks(range(len(parts)), [f"{p} MiB" for p in parts])
    axis.set_xlabel("concurrency")
    axis.set_ylabel("part size")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            axis.text(
                j,
                i,
                f"{value:.0f}",
                ha="center",
                va="center",
                color="white",
                fontsize=8,
            )
    figure.colorbar(image, label="MiB/s")
    axis.set_title("cloudput on S3 (moto): part size x concurrency")
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    plt.close(figure)


def main(path: str) -> int:
    json_path = Path(path)
    report = json.loads(json_path.read_text())
    stem = json_path.with_suffix("")
    bars(report, Path(f"{stem}-tools.png"))
    sweep(report, Path(f"{stem}-sweep.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
