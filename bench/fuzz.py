"""Fuzz unfork's readers of user and contribution files with many more inputs than the test suite does.

Runs the properties of tests/fuzz (qna.yaml through `unfork taxonomy validate`,
config file and UNFORK_* values through `unfork config show`, training JSONL
through the data reader, pipeline folders through load_pipeline) in this one
process, in batches with a new seed each, until each target has had its share
of the time or its number of examples. Prints, per target, the inputs tried,
how they ended, and every failure found with the input that shows it.
Run it before each release:

    .venv/bin/python bench/fuzz.py [--minutes 10] [--examples N] [--seed S] [--only qna,config]
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from tests.fuzz import properties, strategies  # noqa: E402

BATCH = 50


def _targets() -> dict[str, tuple[st.SearchStrategy, object]]:
    """Target name -> (strategy of one input as a tuple of arguments, property that returns an outcome)."""
    config_bytes = st.one_of(st.none(), strategies.config_text().map(lambda t: strategies.encode(t, "utf-8")),
                             st.binary(max_size=300))
    return {
        "qna": (st.tuples(strategies.qna_file(), st.sampled_from(["text"] * 3 + ["json", "github"]))
                .map(lambda a: (*a[0], a[1])), lambda *a: f"exit {properties.check_validate(*a)}"),
        "config": (st.tuples(config_bytes, strategies.environment),
                   lambda *a: f"exit {properties.check_config(*a)}"),
        "jsonl": (strategies.jsonl_file.map(lambda d: (d,)),
                  lambda *a: "rows" if properties.check_jsonl(*a) else "error or no rows"),
        "pipeline": (strategies.pipeline_input(),
                     lambda *a: "loaded" if properties.check_pipeline(*a) else "PipelineError"),
    }


def describe(exc: BaseException) -> str:
    """The error, where it was raised, and the (shrunk) input Hypothesis noted on it."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = next((f"{f.filename}:{f.lineno}" for f in reversed(frames) if "/src/unfork/" in f.filename),
                 f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?")
    what = re.sub(r"/tmp/unfork-fuzz-\w+/\w+", "<tmp>", traceback.format_exception_only(type(exc), exc)[0].strip())
    notes = "\n      ".join(n[:600] for n in getattr(exc, "__notes__", []))
    return f"{what[:600]}\n      at {where}\n      {notes}"


def fuzz_target(strategy, prop, seconds: float, examples: int, rng: random.Random) -> dict:
    """Batches of fresh-seeded examples until the time or the examples run out."""
    outcomes: collections.Counter = collections.Counter()
    failures: list[str] = []
    end = time.monotonic() + seconds

    def run_one(args):
        outcomes[prop(*args)] += 1

    while time.monotonic() < end and sum(outcomes.values()) < examples:
        batch = min(BATCH, examples - sum(outcomes.values()))
        test = seed(rng.getrandbits(64))(settings(max_examples=batch, deadline=None, database=None,
                                                  suppress_health_check=list(HealthCheck), print_blob=True)(
            given(strategy)(run_one)))
        tried_before = sum(outcomes.values())
        try:
            test()
        except Exception as exc:  # a failing property, shrunk by Hypothesis
            found = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
            failures += [d for d in map(describe, found) if d.split("Failing test case")[0] not in
                         {f.split("Failing test case")[0] for f in failures}]
            outcomes["failed"] += 1
        if sum(outcomes.values()) == tried_before:
            break
    return {"outcomes": outcomes, "failures": failures}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="Total time, shared equally by the targets.")
    ap.add_argument("--examples", type=int, default=10 ** 9, help="At most this many inputs per target.")
    ap.add_argument("--seed", type=int, default=None, help="Seed of the batch seeds (default: random).")
    ap.add_argument("--only", default="", help="Comma-separated targets: qna, config, jsonl, pipeline.")
    args = ap.parse_args()
    for var in [v for v in os.environ if v.startswith("UNFORK_")]:
        del os.environ[var]  # the user's settings must not decide what the properties see
    targets = _targets()
    names = [n for n in (args.only.split(",") if args.only else targets) if n]
    master = args.seed if args.seed is not None else random.randrange(2 ** 32)
    print(f"fuzzing {', '.join(names)} for {args.minutes:g} minutes in all (seed {master})", flush=True)
    rng = random.Random(master)
    total, found = 0, 0
    for name in names:
        strategy, prop = targets[name]
        start = time.monotonic()
        result = fuzz_target(strategy, prop, args.minutes * 60 / len(names), args.examples, rng)
        tried = sum(result["outcomes"].values())
        total += tried
        found += len(result["failures"])
        spent = time.monotonic() - start
        ends = ", ".join(f"{k} {v}" for k, v in sorted(result["outcomes"].items()))
        print(f"{name:9s} {tried:7d} inputs in {spent:6.1f} s ({tried / max(spent, 1e-9):6.1f}/s): {ends}; "
              f"{len(result['failures'])} failure(s)", flush=True)
        for failure in result["failures"]:
            print(f"    FAILURE: {failure}", flush=True)
    print(f"total: {total} inputs, {found} failure(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
