"""Taxonomy validation speed: files per second on a varied corpus, and `--help` time.

Builds a corpus of qna.yaml files like real contributions (skills and knowledge,
versions 1-3, freeform and grounded, block scalars, long contexts; sizes like
the public InstructLab taxonomy's: skills 1-5 KB, knowledge 8-14 KB), about a
third of them broken in the ways contributors break them (lint problems,
missing fields, too few examples, wrong types, YAML syntax errors). Then it
times `unfork taxonomy validate` over the whole corpus in one call, and
InstructLab's own validator (instructlab-schema's TaxonomyParser, which runs
yamllint per file) on a sample of the same corpus, in the same run.

    .venv/bin/python bench/bench_validate.py [--files 2500] [--baseline-files 100]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

WORDS = ("the a of island harbor lantern festival copper river stone council winter fleet market song "
         "ferry tide north light glass mill bridge archive storm quiet signal summit valley orchard "
         "engine ledger harvest weaver compass meadow beacon").split()


def words(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def block(rng: random.Random, text: str, indent: int) -> str:
    style = rng.choice(["|", ">", "plain"])
    pad = " " * indent
    if style == "plain" and len(text) < 70:
        return " " + text
    lines = textwrap.wrap(text, 72) or [text]
    return f" {style if style != 'plain' else '|'}\n" + "\n".join(pad + line for line in lines)


def skill_text(rng: random.Random, version: int) -> str:
    grounded = rng.random() < 0.3
    out = [] if version == 1 else [f"version: {version}"]
    out += [f"task_description: {words(rng, 5, 12)}", f"created_by: user{rng.randint(1, 999)}", "seed_examples:"]
    for i in range(rng.randint(5, 9)):
        first = True
        if grounded:
            out.append("  - context:" + block(rng, words(rng, 30, 120), 6))
            first = False
        out.append(("  - " if first else "    ") + "question:" + block(rng, words(rng, 6, 25) + f" ({i})", 6))
        out.append("    answer:" + block(rng, words(rng, 8, 70), 6))
    return "\n".join(out) + "\n"


def knowledge_text(rng: random.Random) -> str:
    out = ["version: 3", f"domain: {rng.choice(['history', 'geography', 'chemistry', 'music'])}",
           f"created_by: user{rng.randint(1, 999)}", "seed_examples:"]
    for i in range(5):
        out.append("  - context:" + block(rng, words(rng, 80, 250), 6))
        out.append("    questions_and_answers:")
        for j in range(3):
            out.append("      - question:" + block(rng, words(rng, 6, 20) + f" ({i}.{j})", 10))
            out.append("        answer:" + block(rng, words(rng, 5, 40), 10))
    out += [f"document_outline: {words(rng, 8, 20)}", "document:",
            "  repo: https://github.com/example/docs", f"  commit: {rng.getrandbits(160):040x}",
            "  patterns:", "    - docs/*.md"]
    return "\n".join(out) + "\n"


BREAKAGES = [
    lambda t, r: t.replace("\n", "   \n", 1),                                  # trailing spaces
    lambda t, r: t.rstrip("\n"),                                                # no final newline
    lambda t, r: t.replace("created_by", "createdby", 1),                       # unknown + missing key
    lambda t, r: t.replace("  - ", "   - ", 1),                                 # indentation
    lambda t, r: t.replace("answer:", "answer: [unclosed", 1),                  # syntax error
    lambda t, r: t.replace("version: 3", "version: 2", 1),                      # wrong version
    lambda t, r: t + "\n\n\n",                                                  # extra blank lines
    lambda t, r: t.replace("seed_examples:", "seed_examples:\n  - question: 42\n    answer: 7", 1),
]


def build_corpus(root: Path, n: int, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.2:  # the public taxonomy is mostly skills; knowledge leaves are the large ones
            folder, text = "knowledge", knowledge_text(rng)
        else:
            folder, text = "compositional_skills", skill_text(rng, rng.choice([1, 2, 3, 3, 3]))
        if rng.random() < 0.33:
            text = rng.choice(BREAKAGES)(text, rng)
        path = root / folder / f"area{i % 40}" / f"leaf{i}" / "qna.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(path)
    return paths


def unfork_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "unfork"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "unfork"]


def time_ours(root: Path, repeats: int) -> tuple[float, dict]:
    best, counts = float("inf"), {}
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run([*unfork_cmd(), "taxonomy", "validate", "--taxonomy-path", str(root), "--format", "json"],
                              capture_output=True, text=True)
        best = min(best, time.perf_counter() - start)
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        counts = {"files": len(rows), "with_errors": sum(1 for r in rows if r["errors"])}
    return best, counts


def time_instructlab(paths: list[Path]) -> float | None:
    try:
        from instructlab.schema.taxonomy import TaxonomyParser
    except ImportError:
        return None
    import logging

    logging.disable(logging.CRITICAL)
    # ilab finds yamllint on PATH; put the venv's first so lint really runs (it is skipped silently otherwise)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    if not shutil.which("yamllint"):
        return None
    parser = TaxonomyParser(schema_version=0, message_format="logging", yamllint_strict=True)
    start = time.perf_counter()
    for p in paths:
        with contextlib.suppress(Exception):  # a YAML syntax error ends InstructLab's run with an exception
            parser.parse(p)
    return (time.perf_counter() - start) / len(paths)


def time_help(repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([*unfork_cmd(), "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2500)
    ap.add_argument("--baseline-files", type=int, default=100, help="files for InstructLab's validator (slow)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "taxonomy"
        paths = build_corpus(root, args.files)
        size = sum(p.stat().st_size for p in paths)
        ours, counts = time_ours(root, args.repeats)
        sample = paths[:: max(1, len(paths) // max(1, args.baseline_files))][: args.baseline_files]
        theirs = time_instructlab(sample) if sample else None
    help_s = time_help()
    print(f"corpus: {len(paths)} files, {size / 1e6:.1f} MB (average {size / len(paths) / 1e3:.1f} KB), "
          f"{counts.get('with_errors')} with errors (cores: {os.cpu_count()}, load average before: "
          f"{os.getloadavg()[0]:.1f})")
    print(f"unfork taxonomy validate: {ours:.2f} s for {counts.get('files')} files "
          f"= {counts.get('files', 0) / ours:,.0f} files/s ({ours / max(1, counts.get('files', 1)) * 1e3:.2f} ms/file, "
          f"whole command incl. start-up; target < 3 s)")
    if theirs is not None:
        print(f"instructlab-schema TaxonomyParser (yamllint per file): {theirs * 1e3:.1f} ms/file on {len(sample)} "
              f"files = {1 / theirs:,.1f} files/s; unfork is {theirs * counts['files'] / ours:,.0f}x faster")
    print(f"unfork --help: {help_s * 1e3:.0f} ms (median of 7; target < 200 ms)")


if __name__ == "__main__":
    main()
