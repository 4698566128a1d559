"""Temporary servers and `unfork model serve` with a stand-in llama-server: lifecycle and errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from unfork.config import Config
from unfork.serve import running_server
from unfork.serve.ports import free_port
from unfork.serve.process import ServerStartError, reason_from_log

ENGINE_ERROR = "llama_model_load: error loading model: unknown model architecture: 'mamba9'"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def listener_pids(port: int) -> set[int]:
    """Processes holding the listening TCP socket of ``port`` (read from /proc, Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            cols = row.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                inodes.add(f"socket:[{cols[9]}]")
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                    pids.add(int(proc.name))
            except OSError:
                continue
    return pids


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_running_server_starts_answers_and_stops(fake_llama, fake_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SERVER_PIDFILE", str(tmp_path / "pid"))
    monkeypatch.setenv("FAKE_SERVER_ARGVFILE", str(tmp_path / "argv.json"))
    with running_server(str(fake_gguf), cfg=Config(), parallel=3) as ep:
        assert ep.base_url.startswith("http://127.0.0.1:") and ep.base_url.endswith("/v1")
        assert ep.model == "tiny-model" and ep.backend == "llama-cpp"
        assert ep.api_key and len(ep.api_key) >= 24
        assert get_json(ep.base_url + "/models")["data"][0]["id"] == "tiny-model"
        pid = int((tmp_path / "pid").read_text())
        assert alive(pid)
        seen = json.loads((tmp_path / "argv.json").read_text())
        assert seen["api_key"] == ep.api_key and ep.api_key not in " ".join(seen["argv"])
        assert seen["argv"][seen["argv"].index("--parallel") + 1] == "3"
    assert wait_gone(pid, 1.0), "the server outlived the with block"


def test_running_server_stops_on_exception(fake_llama, fake_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SERVER_PIDFILE", str(tmp_path / "pid"))
    with pytest.raises(RuntimeError, match="boom"), running_server(str(fake_gguf), cfg=Config()):
        raise RuntimeError("boom")
    assert wait_gone(int((tmp_path / "pid").read_text()), 1.0)


def test_engine_refusal_is_an_error_with_its_reason(fake_llama, fake_gguf, monkeypatch):
    monkeypatch.setenv("FAKE_SERVER_FAIL", ENGINE_ERROR)
    with pytest.raises(ServerStartError) as info, running_server(str(fake_gguf), cfg=Config()):
        pytest.fail("must not get here")
    assert ENGINE_ERROR in info.value.message.splitlines()[0]
    assert "exited with code 1" in info.value.message
    assert "fake server: loading model" in info.value.log_tail


def test_reason_prefers_the_model_loading_error():
    tail = ("0.00.030.367 I srv    load_model: loading model 'x.gguf'\n"
            "0.00.070.600 E llama_model_load: error loading model: unknown model architecture: 'mamba9'\n"
            "0.00.106.924 E srv  llama_server: exiting due to model loading error")
    assert reason_from_log(tail) == "llama_model_load: error loading model: unknown model architecture: 'mamba9'"
    tail = "Traceback (most recent call last):\n  File x\nValueError: Unrecognized model in /m: model_type"
    assert reason_from_log(tail) == "ValueError: Unrecognized model in /m: model_type"
    assert reason_from_log("just\nsome output") == "some output"
    assert reason_from_log("") == "no output"


PARENT = textwrap.dedent("""
    import sys, time
    from unfork.config import Config
    from unfork.serve import running_server
    with running_server(sys.argv[1], cfg=Config()) as ep:
        print(ep.base_url, flush=True)
        time.sleep(600)
""")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_no_orphan_when_the_parent_is_killed(fake_llama, fake_gguf, tmp_path, monkeypatch, sig):
    monkeypatch.setenv("FAKE_SERVER_PIDFILE", str(tmp_path / "pid"))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(fake_gguf)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        url = parent.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), parent.stderr.read()
        pid = int((tmp_path / "pid").read_text())
        assert alive(pid)
        parent.send_signal(sig)
        rc = parent.wait(10)
        assert wait_gone(pid), f"server {pid} survived its parent ({sig.name})"
        if sig == signal.SIGTERM:
            assert rc == 143  # finally blocks ran: SIGTERM became SystemExit(143)
    finally:
        parent.kill()
        parent.wait()


# -- the command ------------------------------------------------------------------------------

def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unfork", "model", "serve", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_serve_refuses_a_taken_port(fake_llama, fake_gguf):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli("--model", str(fake_gguf), "--port", str(port))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr


def test_serve_reports_a_missing_model(fake_llama, tmp_path):
    result = run_cli("--model", str(tmp_path / "nope.gguf"), "--port", str(free_port()))
    assert result.returncode == 1
    assert "nope.gguf" in result.stderr and "Traceback" not in result.stderr


def test_serve_reports_a_missing_llama_server(fake_gguf, monkeypatch, tmp_path):
    monkeypatch.setenv("UNFORK_LLAMA_SERVER", str(tmp_path / "absent"))
    result = run_cli("--model", str(fake_gguf), "--port", str(free_port()))
    assert result.returncode == 1
    assert "build_llama_cpp.sh" in result.stderr


def test_serve_unloadable_model_exits_nonzero_with_reason(fake_llama, fake_gguf, monkeypatch, unfork_home):
    config = unfork_home / "config" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("serve:\n  parallel: 2   # mine\n")
    before = (config.read_bytes(), config.stat().st_mtime_ns)
    monkeypatch.setenv("FAKE_SERVER_FAIL", ENGINE_ERROR)
    result = run_cli("--model", str(fake_gguf), "--port", str(free_port()), "--api-key", "k")
    assert result.returncode == 1
    assert ENGINE_ERROR in result.stderr
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before, "serve rewrote the config file"


def test_serve_fails_loudly_when_the_engine_dies_later(fake_llama, fake_gguf, monkeypatch):
    monkeypatch.setenv("FAKE_SERVER_EXIT_AFTER", "0.5")
    result = run_cli("--model", str(fake_gguf), "--port", str(free_port()))
    assert result.returncode == 1
    assert "exited with code 3 while serving" in result.stderr
    assert "simulated failure" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_signal(fake_llama, fake_gguf, tmp_path, monkeypatch, sig):
    monkeypatch.setenv("FAKE_SERVER_PIDFILE", str(tmp_path / "pid"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "unfork", "model", "serve", "--model", str(fake_gguf),
                             "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        while line and "Serving" not in line:
            line = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}/v1" in line
        assert get_json(f"http://127.0.0.1:{port}/health") == {"status": "ok"}
        pid = int((tmp_path / "pid").read_text())
        # No proxy: the engine itself holds the user's port.
        assert listener_pids(port) == {pid}
        proc.send_signal(sig)
        assert proc.wait(15) == 0
        assert "Server stopped." in proc.stderr.read()
        assert wait_gone(pid, 2.0)
    finally:
        proc.kill()
        proc.wait()


def test_help_imports_nothing_heavy():
    code = ("import sys; from unfork.cli.main import cli; "
            "from click.testing import CliRunner; r = CliRunner().invoke(cli, ['model', 'serve', '--help']); "
            "assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'uvicorn', 'starlette', 'httpx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

