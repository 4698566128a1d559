"""Synthetic data generation speed: accepted samples per minute and teacher utilization.

    python bench/bench_generate.py                      # default teacher, example taxonomy, full pipeline
    python bench/bench_generate.py --pipeline simple --num-samples 10 --concurrency 4
    python bench/bench_generate.py --model qwen2.5-coder-0.5b-instruct
    python bench/bench_generate.py --ilab               # also InstructLab's `ilab data generate --pipeline simple`

One llama.cpp server (``running_server``, ``--parallel`` = concurrency) serves
every phase of the run:

1. peak: ``concurrency`` identical-length requests at once, each forced to
   generate ``--peak-tokens`` tokens: the most completion tokens per second
   this server gives at this concurrency (best of two rounds);
2. unfork: ``unfork data generate`` (in process, fresh cache) on a fresh copy
   of the bundled example taxonomy against that server;
3. (``--ilab``, when ``.bench/ilab-venv`` exists) ``ilab data generate
   --pipeline simple`` against the same server and taxonomy.

Utilization = completion tokens/s the server delivered while generating ÷ the
peak. Prints a table and one JSON object (``--json PATH`` writes it too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


async def peak(url: str, key: str, model: str, concurrency: int, tokens: int) -> dict:
    from unfork.client import ClientSettings, OpenAIClient

    client = OpenAIClient(ClientSettings(url, api_key=key, max_concurrency=concurrency), model=model)
    msgs = [{"role": "user", "content": "Tell a long story about a lighthouse keeper and the sea."}]
    best = {}
    try:
        await client.chat(msgs, max_tokens=8)  # load the model's pages before timing
        for _ in range(2):
            t0 = time.perf_counter()
            results = await asyncio.gather(*(client.chat(msgs, max_tokens=tokens, temperature=0.8, seed=i,
                                                         ignore_eos=True) for i in range(concurrency)))
            wall = time.perf_counter() - t0
            done = sum(r.usage.completion_tokens for r in results)
            if not best or done / wall > best["completion_tokens_per_s"]:
                best = {"completion_tokens_per_s": round(done / wall, 2), "tokens": done, "seconds": round(wall, 2)}
    finally:
        await client.aclose()
    return best


def run_unfork(url: str, key: str, model: str, args: argparse.Namespace, work: Path) -> dict:
    from unfork.sdg.run import GenerateRequest, generate_dataset
    from unfork.taxonomy.examples import prepare_example_taxonomy

    taxonomy = prepare_example_taxonomy(work / "taxonomy-unfork")
    os.environ["UNFORK_HOME"] = str(work / "home")  # fresh SDG cache: nothing replayed
    req = GenerateRequest(taxonomy=taxonomy, base="empty", pipeline=args.pipeline, num_samples=args.num_samples,
                          max_concurrency=args.concurrency, endpoint_urls=[url], model=model, api_key=key,
                          output_dir=work / "unfork-out", seed=args.seed)
    t0 = time.perf_counter()
    out, manifest = generate_dataset(req, show_progress=False, echo=lambda *_: None)
    wall = time.perf_counter() - t0
    accepted = sum(leaf["accepted"] for leaf in manifest["leaves"])
    teacher = manifest["stats"]["teacher"]
    return {"accepted": accepted, "seconds": round(wall, 1),
            "accepted_per_min": round(accepted / wall * 60, 2),
            "completion_tokens": teacher.get("completion_tokens", 0),
            "completion_tokens_per_s": round(teacher.get("completion_tokens", 0) / wall, 2),
            "requests": teacher.get("requests", 0),
            "per_leaf": {leaf["leaf"]: {"accepted": leaf["accepted"], "rejected": leaf["rejected"],
                                        "top_rejections": dict(list(leaf["rejected_by_reason"].items())[:3])}
                         for leaf in manifest["leaves"]},
            "dataset": str(out)}


def run_ilab(url: str, key: str, model: str, args: argparse.Namespace, work: Path) -> dict:
    """InstructLab 0.26 ``ilab data generate --pipeline simple`` against the same server, if installed."""
    ilab = REPO / ".bench" / "ilab-venv" / "bin" / "ilab"
    if not ilab.exists():
        return {"skipped": f"{ilab} not found (see ../shared/baselines/ilab/README.md)"}
    from unfork.taxonomy.examples import prepare_example_taxonomy

    taxonomy = prepare_example_taxonomy(work / "taxonomy-ilab")
    home = work / "ilab-home"
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_DATA_HOME": str(home / "data"), "XDG_CACHE_HOME": str(home / "cache"),
           "PATH": f"{ilab.parent}:{os.environ.get('PATH', '')}", "OPENAI_API_KEY": key}
    subprocess.run([str(ilab), "config", "init", "--non-interactive"], env=env, capture_output=True)
    out = work / "ilab-out"
    argv = [str(ilab), "data", "generate", "--pipeline", "simple", "--taxonomy-path", str(taxonomy),
            "--taxonomy-base", "empty", "--endpoint-url", url, "--api-key", key, "--model", model,
            "--output-dir", str(out), "--sdg-scale-factor", str(args.num_samples)]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        return {"failed": proc.returncode, "seconds": round(wall, 1), "log_tail": (proc.stdout + proc.stderr)[-1500:]}
    accepted = sum(1 for f in out.rglob("messages_*.jsonl") for _ in f.open())
    return {"accepted": accepted, "seconds": round(wall, 1), "accepted_per_min": round(accepted / wall * 60, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="teacher (default: models.teacher from the config)")
    ap.add_argument("--pipeline", default="full")
    ap.add_argument("--num-samples", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--peak-tokens", type=int, default=96)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ilab", action="store_true", help="also run InstructLab's ilab data generate --pipeline simple")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (datasets, journals) for a look")
    args = ap.parse_args()

    from unfork.config import load_config
    from unfork.serve.launch import running_server

    cfg = load_config()
    teacher = args.model or cfg.models.teacher
    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    report: dict = {"teacher": teacher, "pipeline": args.pipeline, "num_samples_per_leaf": args.num_samples,
                    "concurrency": args.concurrency, "cpus": os.cpu_count()}
    try:
        with running_server(teacher, parallel=args.concurrency, ctx_size=args.concurrency * 2048, cfg=cfg) as ep:
            report["peak"] = asyncio.run(peak(ep.base_url, ep.api_key, ep.model, args.concurrency, args.peak_tokens))
            report["unfork"] = run_unfork(ep.base_url, ep.api_key, ep.model, args, work)
            if args.ilab:
                report["ilab"] = run_ilab(ep.base_url, ep.api_key, ep.model, args, work)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    u, p = report["unfork"], report["peak"]
    report["utilization"] = round(u["completion_tokens_per_s"] / p["completion_tokens_per_s"], 3)
    ilab = report.get("ilab", {})
    if ilab.get("accepted_per_min"):
        report["speedup_vs_ilab"] = round(u["accepted_per_min"] / ilab["accepted_per_min"], 2)
    print(f"teacher {teacher}, {args.concurrency} parallel, pipeline {args.pipeline}, "
          f"{args.num_samples} samples per leaf")
    print(f"  peak:   {p['completion_tokens_per_s']:.1f} completion tok/s")
    print(f"  unfork: {u['accepted']} accepted in {u['seconds']:.0f} s = {u['accepted_per_min']:.1f} samples/min, "
          f"{u['completion_tokens_per_s']:.1f} tok/s, utilization {report['utilization']:.0%}")
    if ilab:
        print(f"  ilab:   {ilab}")
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
