"""The main job's stage times and scores: ``unfork run`` on the example taxonomy, from a cold SDG cache.

    .venv/bin/python bench/bench_run.py                    # run it and report
    .venv/bin/python bench/bench_run.py --from RUN_FOLDER  # report a finished run (its run.json)

The target (issue #6): the whole job within 20 minutes on a 2-core CPU once
dependencies and models are installed, and a knowledge score of the trained
student at least 30 points above the base model's. Models already downloaded
and converted are used as they are; generation starts from an empty cache (a
fresh UNFORK_HOME with links to the downloaded models), so nothing is replayed.
Results go to .bench/run-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

TARGET_MINUTES = 20
TARGET_GAIN = 30


def fresh_home(models: Path) -> Path:
    """An UNFORK_HOME whose models folder points at the downloaded models (and nothing else is cached)."""
    home = Path(tempfile.mkdtemp(prefix="bench-run-"))
    (home / "cache").mkdir()
    (home / "cache" / "models").symlink_to(models)
    return home


def run_job(out: Path) -> float:
    from unfork.paths import get_paths

    env = {**os.environ, "UNFORK_HOME": str(fresh_home(get_paths().models_dir))}
    t0 = time.perf_counter()
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "unfork"), "run", "--output-dir", str(out)], env=env)
    if proc.returncode:
        sys.exit(f"unfork run failed with exit code {proc.returncode}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="source", type=Path, default=None, help="report this finished run folder")
    args = ap.parse_args()
    out = args.source or Path(tempfile.mkdtemp(prefix="bench-run-out-")) / "run"
    wall = None if args.source else run_job(out)
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    stages = run["stage_seconds"]
    total = wall or sum(stages.values())
    knowledge = run.get("scores", {}).get("knowledge", {})
    report = {"run": str(out), "settings": run.get("settings"), "stage_seconds": stages,
              "wall_seconds": round(total, 1), "scores": run.get("scores"), "data": run.get("dataset", {}).get("files"),
              "within_20_min": total <= TARGET_MINUTES * 60,
              "knowledge_gain_points": knowledge.get("delta"),
              "gain_at_least_30": (knowledge.get("delta") or 0) >= TARGET_GAIN, "cpus": os.cpu_count()}
    print("stage times:")
    for name, sec in stages.items():
        print(f"  {name:<10} {sec / 60:5.1f} min")
    print(f"  {'total':<10} {total / 60:5.1f} min (target: {TARGET_MINUTES})")
    for bench, o in (run.get("scores") or {}).items():
        print(f"  {bench:<10} base {o['base']} -> trained {o['trained']} ({o['delta']:+}) on {o['n']} questions")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (REPO / ".bench").mkdir(exist_ok=True)
    (REPO / ".bench" / f"run-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
