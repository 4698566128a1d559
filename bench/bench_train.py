"""LoRA training speed and peak memory: unfork's recipe against TRL's SFTTrainer + peft, same run.

    python bench/bench_train.py                     # SmolLM2-135M-Instruct, 64 samples, 1 epoch
    python bench/bench_train.py --samples 32 --runs 1 --json out.json

Both sides train the same conversations (rendered by SmolLM2's chat template),
at the same maximum length, LoRA rank/alpha/target layers, learning rate and
effective batch, on the CPU, one epoch. Precision: unfork's ``--dtype``
(default ``auto``: bf16 on a CPU with native bf16 such as AVX-512 BF16, what a
user gets) and TRL's ``--trl-dtype`` (default fp32, as InstructLab's CPU
pipeline trains); ``--dtype fp32`` or ``--trl-dtype bf16`` compare like with like.
Each run is its own process, so its peak RSS (``ru_maxrss``) is its own: model loading included,
which is what a user's machine must hold. Runs alternate (unfork, TRL,
unfork, TRL ...) so background load hits both alike.

tokens/s counts the real (non-padding) tokens of the data, the same number
for both, divided by the time spent in the training loop: TRL's own
``train_runtime``, and the sum of unfork's step times. ``wall`` is the whole
process, start-up and model loading included.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "src" / "unfork" / "examples_data" / "documents" / "marrowvey" / "marrowvey.md"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_data(path: Path, n: int, seed: int = 0) -> None:
    """Question/answer conversations over the bundled fictional document, of varied length."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", DOC.read_text(encoding="utf-8")) if len(s) > 20]
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            start = rng.randrange(len(sentences))
            answer = " ".join(sentences[start: start + rng.randint(1, 4)])
            msgs = [{"role": "system", "content": "You answer questions about Marrowvey."},
                    {"role": "user", "content": f"Question {i}: what does the document say after "
                                                f"'{sentences[start - 1][:40]}'?"},
                    {"role": "assistant", "content": answer}]
            f.write(json.dumps({"messages": msgs, "metadata": {}}) + "\n")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_unfork(a: argparse.Namespace) -> dict:
    from unfork.config import TrainConfig
    from unfork.train.recipe import train

    # --micro-tokens 0 keeps the configured default (what a user gets)
    micro = {"micro_batch_tokens": a.micro_tokens} if a.micro_tokens else {}
    cfg = TrainConfig(method="lora", epochs=1, learning_rate=2e-4, effective_batch_size=a.batch,
                      max_seq_len=a.max_len, device="cpu", dtype=a.dtype, lora_rank=a.rank,
                      lora_alpha=2 * a.rank, lora_target_modules=TARGETS, warmup_steps=1, seed=0, **micro)
    run = train(cfg, model=a.model, data_path=a.data, output_dir=Path(a.out) / "run")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    info = json.loads((run / "training.json").read_text())
    return {"train_seconds": sum(r["seconds"] for r in steps), "steps": len(steps), "dtype": info["dtype"],
            "micro_batch_tokens": info["settings"]["micro_batch_tokens"],
            "first_loss": steps[0]["loss"], "last_loss": steps[-1]["loss"]}


def worker_trl(a: argparse.Namespace) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(a.model)
    bf16 = a.trl_dtype == "bf16"
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    micro = min(a.batch, a.trl_micro)
    args = SFTConfig(output_dir=str(Path(a.out) / "trl"), per_device_train_batch_size=micro,
                     gradient_accumulation_steps=a.batch // micro, num_train_epochs=1, learning_rate=2e-4,
                     max_length=a.max_len, logging_steps=1, save_strategy="no", report_to="none",
                     use_cpu=True, bf16=bf16, warmup_steps=1, seed=0, dataloader_num_workers=0)
    lora = LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0, target_modules=TARGETS,
                      task_type="CAUSAL_LM")
    ds = load_dataset("json", data_files=str(a.data), split="train").remove_columns("metadata")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora)
    out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"train_seconds": out.metrics["train_runtime"], "steps": trainer.state.global_step,
            "first_loss": losses[0], "last_loss": losses[-1]}


def run_worker(kind: str, a: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, __file__, "--worker", kind, "--out", out, "--data", str(a.data), "--model", a.model,
                "--batch", str(a.batch), "--max-len", str(a.max_len), "--rank", str(a.rank),
                "--dtype", a.dtype, "--trl-dtype", a.trl_dtype, "--micro-tokens", str(a.micro_tokens), "--trl-micro", str(a.trl_micro)]
        env = {**os.environ, "UNFORK_HOME": str(Path(out) / "home"), "TOKENIZERS_PARALLELISM": "false"}
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"{kind} run failed:\n{proc.stderr[-4000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["wall_seconds"] = wall
        return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["unfork", "trl"])
    p.add_argument("--out")
    p.add_argument("--data", type=Path)
    p.add_argument("--model", default="")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--batch", type=int, default=8, help="effective batch (samples per optimizer step)")
    p.add_argument("--trl-micro", type=int, default=4, help="TRL per-device batch (accumulation makes up the rest)")
    p.add_argument("--micro-tokens", type=int, default=0, help="unfork tokens per packed forward (0: default)")
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--dtype", default="auto", choices=["fp32", "bf16", "auto"], help="unfork's precision")
    p.add_argument("--trl-dtype", default="fp32", choices=["fp32", "bf16"],
                   help="TRL's precision (bf16: autocast mixed precision, fp32 weights)")
    p.add_argument("--runs", type=int, default=2, help="runs of each side (alternating)")
    p.add_argument("--sides", default="unfork,trl")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args()

    if a.worker:
        result = worker_unfork(a) if a.worker == "unfork" else worker_trl(a)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    sys.path.insert(0, str(REPO / "src"))
    from transformers import AutoTokenizer

    from unfork.models import ensure_hf
    from unfork.train.data import padding_waste, prepare, read_jsonl

    a.model = a.model or str(ensure_hf("smollm2-135m-instruct").path)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    a.data = tmp / "data.jsonl"
    make_data(a.data, a.samples)
    prep = prepare(read_jsonl(a.data), AutoTokenizer.from_pretrained(a.model), a.max_len)
    if prep.dropped_too_long:
        sys.exit(f"{prep.dropped_too_long} samples exceed --max-len {a.max_len}: raise it")
    tokens = prep.tokens
    lengths = [len(s) for s in prep.samples]
    print(f"data: {len(lengths)} samples, {tokens:,} tokens (min {min(lengths)}, max {max(lengths)}); "
          f"padding waste of batches of {a.trl_micro}: {padding_waste(lengths, a.trl_micro):.0%}", file=sys.stderr)

    sides = a.sides.split(",")
    results: dict[str, list[dict]] = {s: [] for s in sides}
    for i in range(a.runs):
        for side in sides:
            r = run_worker(side, a)
            r["tokens_per_s"] = tokens / r["train_seconds"]
            results[side].append(r)
            print(f"run {i + 1} {side}: {r['tokens_per_s']:.0f} tok/s, {r['peak_rss_mb']:.0f} MB peak, "
                  f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}, {r['wall_seconds']:.0f} s wall",
                  file=sys.stderr)

    summary = {s: {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
                   "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
                   "wall_seconds": statistics.median(r["wall_seconds"] for r in rs),
                   "steps": rs[0]["steps"], "first_loss": rs[0]["first_loss"], "last_loss": rs[0]["last_loss"]}
               for s, rs in results.items()}
    print(f"\nLoRA r={a.rank} on {Path(a.model).name}, {len(lengths)} samples / {tokens:,} tokens, "
          f"max length {a.max_len}, effective batch {a.batch}, 1 epoch, CPU ({os.cpu_count()} cores), "
          f"unfork --dtype {a.dtype}, TRL {a.trl_dtype}, median of {a.runs}")
    print(f"{'':8} {'tokens/s':>9} {'peak RSS':>10} {'wall':>7} {'steps':>6} {'loss first -> last':>20}")
    for s, m in summary.items():
        print(f"{s:8} {m['tokens_per_s']:9.0f} {m['peak_rss_mb']:8.0f} MB {m['wall_seconds']:6.0f}s {m['steps']:6d} "
              f"{m['first_loss']:9.3f} -> {m['last_loss']:.3f}")
    if "unfork" in summary and "trl" in summary:
        u, t = summary["unfork"], summary["trl"]
        print(f"unfork / TRL: {u['tokens_per_s'] / t['tokens_per_s']:.2f}x tokens/s, "
              f"{u['peak_rss_mb'] / t['peak_rss_mb']:.2f}x peak memory")
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "tokens": tokens,
                                      "runs": results, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
