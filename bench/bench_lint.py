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


def per_file_us(fn, texts: list[str], repeats: int = 30) -> float:
    """Best of `repeats` passes over all texts: the least disturbed by other load."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for text in texts:
            fn(text)
        best = min(best, time.perf_counter() - start)
    return best / len(texts) * 1e6


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
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    parse = per_file_us(lambda text: yaml.compose(text, Loader=loader), texts)
    print(f"for scale: yaml.compose with {loader.__name__}: {parse:.1f} us/file")
    try:
        from yamllint import linter
        from yamllint.config import YamlLintConfig
    except ImportError:
        print("yamllint not installed: pip install yamllint to compare")
        return
    conf = YamlLintConfig("{extends: relaxed, rules: {line-length: disable}}")
    ref = per_file_us(lambda text: list(linter.run(text, conf)), texts, 5)
    print(f"yamllint (library)     {ref:10.1f} us/file   ({ref / native:.0f}x slower)")
    biggest = max(texts, key=len)
    print(f"largest file ({len(biggest) / 1024:.1f} KiB): {per_file_us(lint_text, [biggest], 200):.1f} us")


if __name__ == "__main__":
    main()
