"""Microseconds per file: unfork's native lint vs yamllint as a library.

    .venv/bin/python bench/bench_lint.py [TAXONOMY_DIR]

Defaults to ../shared/taxonomy-examples beside the clone, else the test data.
Both run in-process on the same texts; the yamllint CLI that InstructLab
starts per file adds ~90 ms of process start on top of the library figure.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from unfork.taxonomy.lint import lint_text

ROOT = Path(__file__).resolve().parent.parent


def per_file_us(fn, texts: list[str], min_seconds: float = 1.0) -> float:
    rounds, start = 0, time.perf_counter()
    while True:
        for text in texts:
            fn(text)
        rounds += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / (rounds * len(texts)) * 1e6


def main() -> None:
    if len(sys.argv) > 1:
        root = Path(sys.argv[1])
    elif (ROOT.parent / "shared" / "taxonomy-examples").is_dir():
        root = ROOT.parent / "shared" / "taxonomy-examples"
    else:
        root = ROOT / "tests" / "taxonomy" / "lint_cases"
    files = sorted(root.rglob("*.yaml"))
    texts = [f.read_text(encoding="utf-8") for f in files]
    if not texts:
        sys.exit(f"no .yaml files under {root}")
    size = sum(map(len, texts)) / len(texts)
    print(f"{len(texts)} files under {root}, {size / 1024:.1f} KiB on average")
    native = per_file_us(lint_text, texts)
    print(f"unfork lint_text       {native:10.1f} us/file")
    try:
        from yamllint import linter
        from yamllint.config import YamlLintConfig
    except ImportError:
        print("yamllint not installed: pip install yamllint to compare")
        return
    conf = YamlLintConfig("{extends: relaxed, rules: {line-length: disable}}")
    ref = per_file_us(lambda text: list(linter.run(text, conf)), texts, 2.0)
    print(f"yamllint (library)     {ref:10.1f} us/file   ({ref / native:.0f}x slower)")
    biggest = max(texts, key=len)
    print(f"largest file ({len(biggest) / 1024:.1f} KiB): {per_file_us(lint_text, [biggest]):.1f} us")


if __name__ == "__main__":
    main()
