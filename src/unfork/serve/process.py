"""A server program run as a supervised child process.

The child gets its own process group (so stopping it also stops anything it
started) and, on Linux, asks the kernel to send it SIGTERM when its parent
dies, so a killed unfork leaves no orphan server behind. Its output is drained
by a thread that keeps the last lines: when the engine refuses a model, its own
words become the error message.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

from unfork.errors import UserError

PR_SET_PDEATHSIG = 1
_ERROR_LINE = re.compile(r"error|failed|exception|unknown|invalid|cannot|could not|not supported|"
                         r"unsupported|corrupt|out of memory|no such file", re.IGNORECASE)


class ServerStartError(UserError):
    """The engine did not come up; ``log_tail`` holds its last output lines."""

    def __init__(self, message: str, log_tail: str = "", hint: str | None = None):
        full = message + (("\n  engine output (last lines):\n" +
                           "\n".join("    " + line for line in log_tail.splitlines())) if log_tail else "")
        super().__init__(full, hint=hint)
        self.log_tail = log_tail


def _libc_prctl() -> Callable | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


def _make_preexec(parent_pid: int) -> Callable[[], None] | None:
    # Looked up before fork: the child must only make the system call.
    prctl = _libc_prctl()
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


_LOG_PREFIX = re.compile(r"^\d+\.\d+\.\d+\.\d+ [DIWE] (\w+ +)?")  # llama.cpp: "0.00.070.600 E srv  "
_ROOT_CAUSE = re.compile(r"error loading model:|unknown model architecture|failed to read", re.IGNORECASE)


def reason_from_log(tail: str) -> str:
    """The most telling line of an engine's output.

    llama.cpp's model-loading error (the root cause) when there is one, else the
    last line that looks like an error (a Python traceback ends with its cause),
    else the last line.
    """
    lines = [_LOG_PREFIX.sub("", line).strip() for line in tail.splitlines()]
    lines = [line for line in lines if line]
    causes = [line for line in lines if _ROOT_CAUSE.search(line)]
    if causes:
        return causes[-1]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "no output"


class ServerProcess:
    """Start, health-check and stop one server program."""

    def __init__(self, argv: Sequence[str], *, name: str, health_url: str,
                 env: dict[str, str] | None = None, echo: bool = False, tail_lines: int = 60):
        self.argv = list(argv)
        self.name = name
        self.health_url = health_url
        self.env = env
        self.echo = echo
        self.proc: subprocess.Popen | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._reader: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.env or {})
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, preexec_fn=_make_preexec(os.getpid()),
            )
        except OSError as exc:
            raise ServerStartError(f"could not run {self.argv[0]}: {exc.strerror or exc}") from None
        self._reader = threading.Thread(target=self._drain, name=f"{self.name}-output", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._tail.append(line)
            if self.echo:
                print(line, file=sys.stderr, flush=True)
        self.proc.stdout.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def tail(self) -> str:
        if self._reader is not None and self.poll() is not None:
            self._reader.join(timeout=2)  # take what the process wrote before it exited
        return "\n".join(self._tail)

    def exited_error(self, doing: str) -> ServerStartError:
        rc = self.poll()
        tail = self.tail()
        how = f"signal {-rc}" if rc is not None and rc < 0 else f"code {rc}"
        return ServerStartError(f"{self.name} exited with {how} {doing}: {reason_from_log(tail)}", tail)

    def wait_ready(self, timeout: float = 300.0, interval: float = 0.1) -> None:
        """Block until the health URL answers 200; raise with the engine's reason otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if self.poll() is not None:
                raise self.exited_error("while starting")
            if self.healthy():
                return
            if time.monotonic() > deadline:
                tail = self.tail()
                self.stop()
                raise ServerStartError(f"{self.name} did not become ready within {timeout:.0f} s", tail)
            time.sleep(interval)
            interval = min(interval * 1.5, 1.0)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate the whole process group: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                proc.wait(5)
        # Anything the child left in its group goes too.
        self._signal_group(signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(timeout=2)
        return proc.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
