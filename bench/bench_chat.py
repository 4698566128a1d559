"""How much time does ``unfork model chat -qq`` add to the model's own?

    python bench/bench_chat.py                         # against an instant fake server: pure overhead
    python bench/bench_chat.py --endpoint-url URL      # against a running server (e.g. llama-server)
    python bench/bench_chat.py --serve MODEL           # start MODEL with running_server, then as above

Each run launches the real ``unfork`` console script as a user would. Against
a real server every ``-qq`` run is paired with the same request sent directly
from this process on a warm connection (the model's own time), and the
overhead is the median of the differences. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
UNFORK = str(Path(sys.executable).with_name("unfork"))
QUESTION = "In one sentence, what is the capital of France?"


def timed(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system) and stdout of one child process."""
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    wall = time.perf_counter() - t0
    after = os.times()
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, proc.stdout


def direct(url: str, key: str | None, model: str, max_tokens: int) -> tuple[float, str]:
    """The same streamed request on a fresh stdlib connection: the server's (the model's) own time."""
    parts = urlsplit(url)
    body = json.dumps({"model": model, "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                                    {"role": "user", "content": QUESTION}],
                       "temperature": 0.0, "max_tokens": max_tokens, "stream": True, "seed": 1})
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    conn.request("POST", parts.path.rstrip("/") + "/chat/completions", body, headers)
    resp = conn.getresponse()
    text = []
    for raw in resp:
        line = raw.decode().strip()
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            chunk = json.loads(line[5:])
            for ch in chunk.get("choices") or []:
                text.append((ch.get("delta") or {}).get("content") or "")
    conn.close()
    return time.perf_counter() - t0, "".join(text)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def bench(url: str, key: str | None, model: str, runs: int, max_tokens: int, fake: bool) -> dict:
    qq = [UNFORK, "model", "chat", "--endpoint-url", url, "-m", model, "-qq", QUESTION,
          "--temperature", "0", "--max-tokens", str(max_tokens)]
    if key:
        qq += ["--api-key", key]
    timed(qq)  # warm the file cache and .pyc files
    python = [timed([sys.executable, "-c", "pass"]) for _ in range(runs)]
    version = [timed([UNFORK, "--version"]) for _ in range(runs)]
    rows = []
    for i in range(runs):
        # Alternate which goes first, so a server's prompt cache favours neither.
        if i % 2:
            wall, cpu, out = timed(qq)
            own, _ = direct(url, key, model, max_tokens)
        else:
            own, _ = direct(url, key, model, max_tokens)
            wall, cpu, out = timed(qq)
        rows.append((wall, cpu, own, out))
    result = {
        "endpoint": "instant fake server" if fake else url,
        "runs": runs,
        "python_startup_s": summary([w for w, _, _ in python]),
        "unfork_version_s": summary([w for w, _, _ in version]),
        "qq_wall_s": summary([r[0] for r in rows]),
        "qq_cpu_s": summary([r[1] for r in rows]),
        "model_own_s": summary([r[2] for r in rows]),
        "qq_overhead_s": summary([r[0] - r[2] for r in rows]),
        "answer": rows[-1][3].strip()[:200],
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--endpoint-url", help="a running OpenAI-compatible server")
    ap.add_argument("--api-key")
    ap.add_argument("--model", default=None, help="model name for --endpoint-url (default: its first)")
    ap.add_argument("--serve", metavar="MODEL", help="start this model with running_server and measure it")
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()

    with contextlib.ExitStack() as stack:
        if args.serve:
            from unfork.serve.launch import running_server

            t0 = time.perf_counter()
            ep = stack.enter_context(running_server(args.serve, parallel=1))
            print(f"server up in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            url, key, model, fake = ep.base_url, ep.api_key, ep.model, False
        elif args.endpoint_url:
            from unfork.client import SyncClient, normalize_base_url

            url, key, fake = normalize_base_url(args.endpoint_url), args.api_key, False
            model = args.model or SyncClient(url).list_models()[0].id
        else:
            from tests.client.fake_openai import FakeOpenAI, Reply

            srv = stack.enter_context(FakeOpenAI(default=Reply(text="Paris is the capital of France.")))
            url, key, model, fake = srv.url, None, srv.model, True
        print(json.dumps(bench(url, key, model, args.runs, args.max_tokens, fake), indent=2))


if __name__ == "__main__":
    main()
