"""Before/after table of ``bench/ab_commits.sh``: throughput of two commits, same machine.

    .venv/bin/python bench/ab_report.py [bench/results/ab]

Per configuration it keeps each side's best round (other jobs only ever slow a run down)
and gives after / before of tokens per CPU second (CPU time measures the work done on a
shared machine; wall-clock figures are beside it). Writes ``report.json`` in the folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common import REPO, write_json_atomic


def figures(folder: Path, side: str) -> dict[str, dict[str, list[float]]]:
    """config -> {"cpu": [tokens per CPU second per round], "wall": [tokens per second]}."""
    out: dict[str, dict[str, list[float]]] = {}
    for path in sorted(folder.glob(f"{side}-train-*.json")):
        for name, c in json.loads(path.read_text())["configs"].items():
            entry = out.setdefault(f"train {name}", {"cpu": [], "wall": []})
            entry["cpu"].append(c["tokens_per_cpu_s"])
            entry["wall"].append(c["tokens_per_s"])
    for path in sorted(folder.glob(f"{side}-alpha-*.json")):
        results = json.loads(path.read_text())["results"]
        for batch, configs in results.items():
            for alpha, c in configs.items():
                entry = out.setdefault(f"generate {batch} alpha={alpha}", {"cpu": [], "wall": []})
                tokens = c["tokens_per_cpu_s"] * c["best_cpu_seconds"]
                entry["cpu"].append(c["tokens_per_cpu_s"])
                entry["wall"].append(tokens / min(c["wall_seconds"]))
    return out


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "bench" / "results" / "ab"
    before, after = figures(folder, "before"), figures(folder, "after")
    rows = {}
    print("| configuration | before tok/CPU-s | after tok/CPU-s | after/before (CPU) | (wall) |")
    print("|---|---:|---:|---:|---:|")
    for name in sorted(set(before) & set(after)):
        b, a = before[name], after[name]
        cpu = max(a["cpu"]) / max(b["cpu"])
        wall = max(a["wall"]) / max(b["wall"])
        rows[name] = {
            "before": b,
            "after": a,
            "ratio_cpu": round(cpu, 3),
            "ratio_wall": round(wall, 3),
        }
        print(f"| {name} | {max(b['cpu']):.2f} | {max(a['cpu']):.2f} | {cpu:.3f} | {wall:.3f} |")
    commits = {s: (folder / f"{s}.commit").read_text().strip() for s in ("before", "after")}
    write_json_atomic(folder / "report.json", {"commits": commits, "configurations": rows})


if __name__ == "__main__":
    main()
