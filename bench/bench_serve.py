"""Serving speed: `unfork model serve` against llama.cpp's llama-server started by hand.

unfork serves GGUF models by starting llama-server itself on the requested
port (no proxy), so the two should be the same speed; this measures it. For
each model, both servers run side by side with the same flags and get the
same streamed requests (fixed prompt, temperature 0), one stream and then N
concurrent streams, one server at a time, alternating for a few rounds;
medians are reported.

    .venv/bin/python bench/bench_serve.py                  # fast teacher (0.5B)
    .venv/bin/python bench/bench_serve.py --models all     # and the default teacher (1.5B)
    .venv/bin/python bench/bench_serve.py --gguf path/to/model.gguf

Metrics: TTFT = time to the first streamed token; stream tok/s = decode speed
seen by one client after its first token; total tok/s = all completion tokens
over the wall time of the batch; overhead = 1 - the median over rounds of
(unfork's total tok/s / llama-server's), each pair measured back to back;
TTFT overhead likewise. With 8 streams TTFT swings by a second or two from
batch to batch (where each prompt lands in llama.cpp's batches), so give it
8 rounds or more. Results also go to .bench/serve-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from unfork.serve import llama_cpp  # noqa: E402
from unfork.serve.ports import free_port  # noqa: E402

MODELS = {"fast": ["qwen2.5-coder-0.5b-instruct"],
          "all": ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]}
PROMPT = ("Write a Python function that parses an ISO 8601 date string without using the datetime "
          "module, then explain how it handles time zones, leap years and invalid input.")


def find_gguf(name: str) -> Path:
    for path in sorted((REPO / ".cache" / "gguf").glob(f"{name}*.gguf")):
        return path
    from unfork.models import resolve_model

    return Path(resolve_model(name).path)


def wait_health(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not become ready")


def start(mode: str, gguf: Path, port: int, parallel: int, ctx: int) -> subprocess.Popen:
    if mode == "llama-server":
        cmd = llama_cpp.llama_server_command(llama_cpp.find_llama_server(), gguf, host="127.0.0.1", port=port,
                                             alias=gguf.stem, parallel=parallel, ctx_size=ctx)
    else:
        cmd = [sys.executable, "-m", "unfork", "model", "serve", "--model", str(gguf), "--port", str(port),
               "--parallel", str(parallel), "--ctx-size", str(ctx)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_health(f"http://127.0.0.1:{port}", proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def one_stream(client, url: str, model: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
            "cache_prompt": False}
    sent = time.perf_counter()
    first = last = None
    tokens = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    last = time.perf_counter()
                    first = first or last
    return {"sent": sent, "first": first, "last": last, "tokens": tokens}


async def batch(url: str, model: str, streams: int, max_tokens: int) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=streams + 2)) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*[one_stream(client, url, model, max_tokens) for _ in range(streams)])
        wall = time.perf_counter() - t0
    total = sum(r["tokens"] for r in results)
    return {
        "ttft": statistics.median(r["first"] - r["sent"] for r in results),
        "stream_tps": statistics.median((r["tokens"] - 1) / (r["last"] - r["first"]) for r in results),
        "total_tps": total / wall,
        "tokens": total,
        # every stream had its first token before any stream finished: they decoded together
        "overlapped": max(r["first"] for r in results) < min(r["last"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", choices=sorted(MODELS), default="fast")
    parser.add_argument("--gguf", type=Path, help="benchmark this GGUF file instead")
    parser.add_argument("--streams", default="1,8", help="comma-separated concurrency levels")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--parallel", type=int, default=8, help="llama.cpp slots (-np)")
    parser.add_argument("--ctx-size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    levels = [int(x) for x in args.streams.split(",")]
    ggufs = [args.gguf] if args.gguf else [find_gguf(name) for name in MODELS[args.models]]

    rows = []
    load_start = os.getloadavg()[0]
    for gguf in ggufs:
        samples: dict[tuple[str, int], list[dict]] = {}
        # Both servers stay up (an idle llama-server costs no CPU) and their batches alternate, so a
        # change in the machine's load hits both alike.
        servers = {}
        try:
            for mode in ("llama-server", "unfork"):
                port = free_port()
                servers[mode] = (start(mode, gguf, port, args.parallel, args.ctx_size), f"http://127.0.0.1:{port}")
                asyncio.run(batch(servers[mode][1], gguf.stem, 1, 8))  # warm-up
            for rnd in range(args.rounds):
                for n in levels:
                    order = ["llama-server", "unfork"] if (rnd + n) % 2 == 0 else ["unfork", "llama-server"]
                    for mode in order:
                        r = asyncio.run(batch(servers[mode][1], gguf.stem, n, args.max_tokens))
                        samples.setdefault((mode, n), []).append(r)
                        print(f"  {gguf.stem} round {rnd + 1} {mode:12s} {n} streams: "
                              f"ttft {r['ttft']:.2f}s, stream {r['stream_tps']:.1f} tok/s, "
                              f"total {r['total_tps']:.1f} tok/s, overlapped={r['overlapped']}", flush=True)
        finally:
            for proc, _ in servers.values():
                stop(proc)
        for n in levels:
            med = {mode: {k: statistics.median(s[k] for s in samples[(mode, n)])
                          for k in ("ttft", "stream_tps", "total_tps")} for mode in ("llama-server", "unfork")}
            rows.append({"model": gguf.stem, "streams": n, **{f"{m}_{k}": v for m, d in med.items()
                                                              for k, v in d.items()},
                         "overlapped": all(s["overlapped"] for s in samples[("unfork", n)]),
                         "ratio_total_tps": med["unfork"]["total_tps"] / med["llama-server"]["total_tps"],
                         # each round's two batches ran back to back, so their ratio cancels slow drifts in load
                         "ratio_paired_total_tps": statistics.median(
                             u["total_tps"] / d["total_tps"]
                             for u, d in zip(samples[("unfork", n)], samples[("llama-server", n)], strict=True)),
                         "ratio_ttft": med["unfork"]["ttft"] / med["llama-server"]["ttft"],
                         "ratio_paired_ttft": statistics.median(
                             u["ttft"] / d["ttft"]
                             for u, d in zip(samples[("unfork", n)], samples[("llama-server", n)], strict=True))})

    print(f"\nmedians of {args.rounds} rounds, max_tokens {args.max_tokens}, -np {args.parallel}, "
          f"{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f} "
          f"(at the start {load_start:.1f})")
    head = (f"{'model':34s} {'streams':>7s} {'TTFT direct':>11s} {'TTFT unfork':>11s} "
            f"{'tok/s direct':>12s} {'tok/s unfork':>12s} {'unfork/direct':>13s} {'paired':>6s} {'overhead':>8s} "
            f"{'TTFT overhead':>13s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = r["ratio_total_tps"]
        print(f"{r['model']:34s} {r['streams']:7d} {r['llama-server_ttft']:10.2f}s {r['unfork_ttft']:10.2f}s "
              f"{r['llama-server_total_tps']:12.1f} {r['unfork_total_tps']:12.1f} {ratio:13.3f} "
              f"{r['ratio_paired_total_tps']:6.3f} {(1 - r['ratio_paired_total_tps']) * 100:7.1f}% "
              f"{(r['ratio_paired_ttft'] - 1) * 100:12.1f}%")
    for model in {r["model"] for r in rows}:
        mine = {r["streams"]: r for r in rows if r["model"] == model}
        if 1 in mine and len(mine) > 1:
            top = max(mine)
            print(f"{model}: {top} streams give {mine[top]['unfork_total_tps'] / mine[1]['unfork_total_tps']:.2f}x "
                  f"the throughput of 1 (decoded together: {mine[top]['overlapped']})")
    out = REPO / ".bench" / f"serve-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
