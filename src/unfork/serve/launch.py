"""Temporary servers for chat, data generation and evaluation.

``running_server`` starts a model on a free local port, waits until it
answers, hands back where it is, and always stops it: on normal exit, on an
exception, on Ctrl-C, on SIGTERM, and (Linux) when this process dies.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from unfork.serve import backends
from unfork.serve.ports import free_port
from unfork.serve.process import ServerProcess, ServerStartError

_PORT_RACE = ("address already in use", "couldn't bind", "could not bind", "failed to bind", "bind failed")


@dataclass
class Endpoint:
    base_url: str        # e.g. "http://127.0.0.1:41234/v1"
    api_key: str | None
    model: str           # the model id the server answers to
    backend: str = ""


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """In the main thread, turn SIGTERM into ``SystemExit(143)`` so ``finally`` blocks run.

    Leaves any handler the program installed itself alone.
    """
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start_server(spec: backends.ServerSpec, host: str, port: int, *, echo: bool = False,
                 timeout: float = 600.0) -> ServerProcess:
    proc = ServerProcess(spec.argv, name=spec.engine, env=spec.env, echo=echo,
                         health_url=backends.base_url(host, port) + spec.health_path)
    proc.start()
    try:
        proc.wait_ready(timeout=timeout)
    except BaseException:
        proc.stop()
        raise
    return proc


@contextlib.contextmanager
def running_server(model: str | None = None, *, backend: str = "auto", parallel: int | None = None,
                   ctx_size: int | None = None, cfg=None, api_key: str | None = None,
                   timeout: float = 600.0, echo: bool = False, slot_ctx: int | None = None) -> Iterator[Endpoint]:
    """Serve ``model`` (default: the configured chat model) on a free port of 127.0.0.1.

    The server requires ``api_key`` (a random one unless given): other local
    users cannot borrow it. ``backend="auto"`` defers to the config's
    ``serve.backend``. ``slot_ctx`` gives each of the ``parallel`` slots a
    context of that many tokens of its own (llama.cpp; ``ctx_size`` is then
    ``parallel * slot_ctx``), instead of one buffer that any request may fill:
    for internal servers whose slots all run long prompts at once (the SDG
    teacher, judges), see :func:`unfork.serve.llama_cpp.llama_server_command`.
    """
    if cfg is None:
        from unfork.config import load_config

        cfg = load_config()
    ref, chosen = backends.prepare(model or cfg.chat_model(), backend if backend != "auto" else cfg.serve.backend)
    backends.check_installed(chosen)
    key = api_key or secrets.token_urlsafe(24)
    host = "127.0.0.1"
    with sigterm_as_exit():
        proc = None
        slots = parallel or cfg.serve.parallel
        for attempt in range(3):
            port = free_port(host)
            spec = backends.build_spec(chosen, ref, host=host, port=port, api_key=key, parallel=slots,
                                       ctx_size=slots * slot_ctx if slot_ctx else ctx_size or cfg.serve.ctx_size,
                                       shared_context=not slot_ctx)
            try:
                proc = start_server(spec, host, port, echo=echo, timeout=timeout)
                break
            except ServerStartError as exc:
                # Another program took the port between our check and the server's bind.
                if attempt == 2 or not any(s in exc.log_tail.lower() for s in _PORT_RACE):
                    raise
        assert proc is not None
        try:
            yield Endpoint(backends.base_url(host, port) + "/v1", key, spec.model_id, chosen)
        finally:
            proc.stop()
