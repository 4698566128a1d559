"""Serving under load and abuse: `unfork model serve` against bad clients, on 127.0.0.1.

Starts `unfork model serve` (llama-server for the GGUF model, unfork's
transformers app for the Hugging Face folder) with an API key on a free port,
measures the RSS of its whole process tree after one warm-up request, then runs
each case with a deadline: N concurrent clients, an oversized body, malformed
JSON, a prompt past the context window, clients that hang up mid-stream, and
requests without or with a wrong key. During every abuse case a canary client
asks for a short answer, which must succeed. At the end, after a short settle,
RSS is compared with the baseline.

    .venv/bin/python bench/bench_serve_abuse.py                       # both backends, 64 clients
    .venv/bin/python bench/bench_serve_abuse.py --backend transformers --clients 16 --seconds 120

Exit status 1 when a case saw a status it should not, a canary failed or the
server died; llama-server's own answers that differ from the ideal are listed
as "known" and reported, not counted as failures.
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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from unfork.serve.ports import free_port  # noqa: E402

MODELS = Path.home() / ".cache" / "unfork" / "models"
KEY = "bench-abuse-key"
HELLO = [{"role": "user", "content": "Say hello."}]
# What llama-server answers itself (unfork passes requests straight to it), where it is not the ideal status.
# All leave the server serving: it reads bodies up to 100 MB (then says the prompt is past the context),
# answers unparsable JSON with 500, takes a negative temperature as greedy and ignores a stop that is a number.
KNOWN = {"llama-cpp": {"20 MB body": {400}, "truncated JSON": {500}, "not JSON at all": {500},
                       "message without role": {500}, "max_tokens Infinity": {500},
                       "negative temperature": {200}, "stop is a number": {200}}}


@dataclass
class Case:
    name: str
    expected: set[int]
    seen: Counter = field(default_factory=Counter)
    canary: str = "-"          # "ok", "FAILED <status>" or "-" (no canary for this case)
    note: str = ""

    def verdict(self, backend: str) -> str:
        statuses = set(self.seen)
        if statuses <= self.expected and not self.canary.startswith("FAILED"):
            return "ok"
        if statuses <= self.expected | KNOWN.get(backend, {}).get(self.name, set()) \
                and not self.canary.startswith("FAILED"):
            return "known"
        return "FAIL"


# -- the server --------------------------------------------------------------------------------

def default_model(backend: str) -> Path:
    if backend == "llama-cpp":
        return sorted((MODELS / "smollm2-135m-instruct").glob("*.gguf"))[0]
    return MODELS / "smollm2-135m-instruct-hf"


def start_serve(backend: str, model: Path, port: int, ctx: int, parallel: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "unfork", "model", "serve", "--model", str(model), "--backend", backend,
           "--host", "127.0.0.1", "--port", str(port), "--api-key", KEY, "--ctx-size", str(ctx),
           "--parallel", str(parallel), "--startup-timeout", "300", "--verbose"]
    log = open(REPO / ".bench" / f"serve-abuse-{backend}.log", "w")  # noqa: SIM115 (lives as long as the server)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see .bench/serve-abuse-*.log")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("the server did not become ready")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


# -- clients -----------------------------------------------------------------------------------

def auth(key: str | None = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def post(http, path: str, *, body=None, raw: bytes | None = None, key: str | None = KEY) -> int | str:
    import httpx

    try:
        if raw is not None:
            r = await http.post(path, content=raw, headers={**auth(key), "Content-Type": "application/json"})
        else:
            r = await http.post(path, json=body, headers=auth(key))
        return r.status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def chat(http, max_tokens: int = 8) -> tuple[int | str, float]:
    started = time.monotonic()
    status = await post(http, "/v1/chat/completions",
                        body={"messages": HELLO, "max_tokens": max_tokens, "temperature": 0})
    return status, time.monotonic() - started


async def with_canary(http, case: Case, work) -> None:
    """Run ``work`` (a coroutine giving statuses) while one ordinary client asks for a short answer."""
    task = asyncio.ensure_future(work)
    await asyncio.sleep(0.05)
    status, took = await chat(http, max_tokens=4)
    case.seen.update(await task)
    case.canary = "ok" if status == 200 else f"FAILED {status}"
    case.note = f"canary answered in {took:.1f} s"


async def disconnect_after_first_chunk(http, max_tokens: int) -> int | str:
    import httpx

    body = {"messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
            "max_tokens": max_tokens, "stream": True}
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body, headers=auth()) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    break
            return r.status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


# -- the cases ---------------------------------------------------------------------------------

async def case_load(http, clients: int) -> tuple[Case, str]:
    case = Case(f"{clients} concurrent clients", {200})
    started = time.monotonic()
    results = await asyncio.gather(*(chat(http) for _ in range(clients)))
    wall = time.monotonic() - started
    case.seen.update(s for s, _ in results)
    lat = sorted(t for _, t in results)
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    case.note = f"p50 {statistics.median(lat):.2f} s, p95 {p95:.2f} s, wall {wall:.1f} s"
    return case, case.note


def malformed_bodies(ctx: int) -> list[tuple[str, set[int], dict | None, bytes | None]]:
    """(name, expected statuses, JSON body or None, raw bytes or None)."""
    msgs = HELLO
    return [
        ("truncated JSON", {400}, None, b'{"messages": [{"role": "user", "con'),
        ("not JSON at all", {400}, None, b"\x00\xff binary garbage"),
        ("deeply nested JSON", {400}, None, b"[" * 100_000 + b"]" * 100_000),
        ("body is a list", {400}, [1, 2], None),
        ("messages not a list", {400}, {"messages": "hello"}, None),
        ("message without role", {400}, {"messages": [{"content": "hi"}]}, None),
        ("content is an object", {400}, {"messages": [{"role": "user", "content": {"a": 1}}]}, None),
        ("temperature is text", {400}, {"messages": msgs, "temperature": "hot"}, None),
        ("negative max_tokens", {400}, {"messages": msgs, "max_tokens": -5}, None),
        ("negative temperature", {400}, {"messages": msgs, "max_tokens": 4, "temperature": -1}, None),
        # capped to the room left in the context (200) or refused (400): both keep the server safe
        ("huge max_tokens", {200, 400}, {"messages": msgs, "max_tokens": 10**12, "temperature": 0}, None),
        ("max_tokens Infinity", {400}, None,
         b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": Infinity}'),
        ("huge seed", {200, 400}, {"messages": msgs, "max_tokens": 3, "seed": 10**30}, None),
        ("stop is a number", {400}, {"messages": msgs, "max_tokens": 4, "stop": 5}, None),
    ]


async def case_malformed(http, ctx: int) -> list[Case]:
    cases = []
    for name, expected, body, raw in malformed_bodies(ctx):
        case = Case(name, expected)
        await with_canary(http, case, asyncio.gather(post(http, "/v1/chat/completions", body=body, raw=raw)))
        cases.append(case)
    return cases


async def case_oversized(http) -> Case:
    case = Case("20 MB body", {413})
    raw = json.dumps({"messages": [{"role": "user", "content": "hello " * 3_500_000}]}).encode()
    await with_canary(http, case, asyncio.gather(post(http, "/v1/chat/completions", raw=raw)))
    return case


async def case_context(http, ctx: int) -> Case:
    case = Case("prompt past the context", {400})
    body = {"messages": [{"role": "user", "content": "hello " * (ctx * 2)}], "max_tokens": 4}
    await with_canary(http, case, asyncio.gather(post(http, "/v1/chat/completions", body=body)))
    return case


async def case_disconnect(http, clients: int) -> Case:
    case = Case(f"{clients} streams closed after 1 chunk", {200})
    await with_canary(http, case, asyncio.gather(*(disconnect_after_first_chunk(http, 1000)
                                                   for _ in range(clients))))
    # The abandoned streams must not keep the model busy: a short answer right after comes back fast.
    status, took = await chat(http, max_tokens=4)
    if status != 200:
        case.seen[f"next answer {status}"] += 1
    case.note += f"; next answer {took:.1f} s"
    return case


async def case_auth(http) -> list[Case]:
    cases = []
    for name, key in (("no key", None), ("wrong key", "sk-wrong")):
        case = Case(name, {401})

        async def attempts(key=key):
            chat_status = await post(http, "/v1/chat/completions", body={"messages": HELLO}, key=key)
            r = await http.get("/v1/models", headers=auth(key))
            return [chat_status, r.status_code]

        await with_canary(http, case, attempts())
        cases.append(case)
    health = Case("health without key", {200})
    health.seen[(await http.get("/health")).status_code] += 1
    cases.append(health)
    return cases


async def run_cases(url: str, clients: int, ctx: int, seconds: float) -> list[Case]:
    import httpx

    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, timeout=max(30.0, seconds / 2), limits=limits) as http:
        steps = [case_load(http, clients), case_oversized(http), case_malformed(http, ctx),
                 case_context(http, ctx), case_disconnect(http, min(clients, 16)), case_auth(http)]
        cases: list[Case] = []
        deadline = time.monotonic() + seconds
        for step in steps:
            left = deadline - time.monotonic()
            if left <= 0:
                step.close()
                cases.append(Case("(time budget spent)", set(), Counter({"skipped": 1})))
                continue
            try:
                got = await asyncio.wait_for(step, timeout=left)
            except TimeoutError:
                cases.append(Case("(a case ran past the time budget)", set(), Counter({"timeout": 1})))
                continue
            got = got[0] if isinstance(got, tuple) else got
            cases.extend(got if isinstance(got, list) else [got])
        return cases


# -- one backend -------------------------------------------------------------------------------

def bench_backend(backend: str, model: Path, clients: int, seconds: float, ctx: int, parallel: int) -> bool:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_serve(backend, model, port, ctx, parallel)
    try:
        wait_ready(url, proc)
        started = time.monotonic()
        assert httpx.post(url + "/v1/chat/completions", headers=auth(), timeout=120,
                          json={"messages": HELLO, "max_tokens": 8}).status_code == 200
        time.sleep(1)
        baseline = tree_rss(proc.pid)
        cases = asyncio.run(run_cases(url, clients, ctx, seconds))
        time.sleep(3)
        after = tree_rss(proc.pid)
        still = proc.poll() is None and answers(url)
        took = time.monotonic() - started
    finally:
        stop(proc)
    print_table(backend, model, cases)
    mib = 1024 * 1024
    print(f"RSS of the server's process tree: baseline {baseline / mib:.0f} MiB, after the cases and a 3 s "
          f"settle {after / mib:.0f} MiB ({after / baseline:.2f}x); alive and answering afterwards: "
          f"{'yes' if still else 'NO'}; cases took {took:.0f} s\n")
    return still and all(c.verdict(backend) != "FAIL" for c in cases)


def answers(url: str) -> bool:
    """Whether the server still gives a short answer (within a minute)."""
    import httpx

    try:
        return httpx.post(url + "/v1/chat/completions", headers=auth(), timeout=60,
                          json={"messages": HELLO, "max_tokens": 4}).status_code == 200
    except httpx.HTTPError:
        return False


def print_table(backend: str, model: Path, cases: list[Case]) -> None:
    print(f"\n== {backend}: {model.name}")
    print(f"{'case':36} {'expected':>10} {'seen':24} {'canary':10} {'verdict':8} note")
    for c in cases:
        seen = ", ".join(f"{s}x{n}" if n > 1 else str(s) for s, n in sorted(c.seen.items(), key=str))
        expected = "/".join(str(s) for s in sorted(c.expected))
        print(f"{c.name:36} {expected:>10} {seen:24} {c.canary:10} {c.verdict(backend):8} {c.note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("llama-cpp", "transformers", "both"), default="both")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients in the load case")
    parser.add_argument("--seconds", type=float, default=240, help="time budget for the cases, per backend")
    parser.add_argument("--ctx-size", type=int, default=2048)
    parser.add_argument("--parallel", type=int, default=4, help="llama.cpp slots")
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF model (default: smollm2-135m-instruct)")
    parser.add_argument("--hf", type=Path, default=None, help="Hugging Face folder (default: smollm2's)")
    args = parser.parse_args()
    (REPO / ".bench").mkdir(exist_ok=True)
    backends = ("llama-cpp", "transformers") if args.backend == "both" else (args.backend,)
    ok = True
    for backend in backends:
        model = (args.gguf if backend == "llama-cpp" else args.hf) or default_model(backend)
        ok = bench_backend(backend, model, args.clients, args.seconds, args.ctx_size, args.parallel) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
