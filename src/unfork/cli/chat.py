"""``unfork model chat``: talk to a model in the terminal, or ask one question with ``-qq``.

The ``-qq`` path imports neither a UI library nor httpx/asyncio (it streams
over the standard library's http.client), so it adds a few tenths of a second
to the model's own time.
"""

from __future__ import annotations

import contextlib
import sys

import click

from unfork.cli.options import collect, config_options, ilab_model_path


@click.command()
@click.argument("question", nargs=-1)
@click.option("--model", "-m", "model", default=None,
              help="With --endpoint-url: the model name to ask for (default: the server's first). "
                   "Without: the model to serve (catalog name, GGUF file or folder; default: models.chat).")
@click.option("--endpoint-url", default=None, metavar="URL",
              help="An OpenAI-compatible server to talk to, e.g. http://127.0.0.1:8000/v1. "
                   "Default: start a temporary local server for the model and stop it on exit.")
@click.option("--api-key", default=None, help="API key for --endpoint-url.")
@click.option("-qq", "--quick-question", "quick", is_flag=True,
              help="Print only the answer to QUESTION (plain streamed text) and exit.")
@click.option("--session", "-s", "session", default=None, type=click.Path(dir_okay=False),
              help="Start from a saved conversation (JSON, as written by /s here or in 'ilab model chat').")
@config_options("chat")
@ilab_model_path
def chat(question: tuple[str, ...], model: str | None, endpoint_url: str | None, api_key: str | None,
         quick: bool, session: str | None, **flags) -> None:
    """Chat with a model in the terminal.

    \b
      unfork model chat                                 chat with the configured model
      unfork model chat -qq "What is LoRA?"             one answer, plain text, then exit
      unfork model chat --endpoint-url http://host:8000/v1 --model NAME
    In the chat, /h lists the commands, which are ilab's (/q quit, /c context,
    /m multi-line, /n new session, /s save, /l load) plus /clear and /markdown.
    Esc then Enter, or a trailing \\, starts a new line. A QUESTION without
    -qq is asked first, then the chat goes on. Without --endpoint-url, a running
    'unfork model serve' (at serve.host and serve.port) that serves the model is
    used instead of loading the model again.
    """
    from unfork.config import load_config

    cfg = load_config(overrides=collect("chat", flags))
    text = " ".join(question).strip()
    if quick and not text:
        if sys.stdin.isatty():
            raise click.UsageError("-qq needs a question: unfork model chat -qq \"...\"")
        text = sys.stdin.read().strip()  # unfork model chat -qq < question.txt
    if cfg.chat.max_tokens < 1:
        raise click.BadParameter("must be at least 1", param_hint="--max-tokens")

    with _endpoint(endpoint_url, api_key, model, cfg, quiet=quick) as (url, key, model_name, window):
        if quick:
            _quick(url, key, model_name, cfg, text)
        else:
            _interactive(url, key, model_name, cfg, text or None, session, window)


@contextlib.contextmanager
def _endpoint(endpoint_url, api_key, model, cfg, *, quiet):  # noqa: ANN001, ANN202
    """(base_url, api_key, model name, known window) of the given endpoint or of a temporary server."""
    if endpoint_url:
        yield endpoint_url, api_key, model, None
        return
    from unfork.serve.launch import running_server

    name = model or cfg.chat_model()
    served = running_serve(cfg.serve, name)
    if served is not None:
        if not quiet:
            click.echo(f"Using the running 'unfork model serve' at {served[0]} for {name}.", err=True)
        yield served[0], cfg.serve.api_key or None, served[1], None
        return
    if not quiet:
        click.echo(f"Starting a local server for {name} ...", err=True)
    with running_server(name, parallel=1, cfg=cfg) as ep:
        yield ep.base_url, ep.api_key, ep.model, cfg.serve.ctx_size


def _model_ids(url: str, api_key: str, timeout: float) -> list[str]:
    """The ids ``url``/models lists; empty when nothing answers (standard library: -qq stays quick)."""
    import json
    import urllib.request

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local server: never via a proxy
    try:
        with opener.open(urllib.request.Request(url + "/models", headers=headers), timeout=timeout) as resp:
            return [str(m.get("id")) for m in json.load(resp).get("data") or []]
    except (OSError, ValueError, AttributeError):
        return []


def _matches(model_id: str, name: str) -> bool:
    from pathlib import PurePath

    # A served GGUF file or folder is named by its stem, a catalog model by its name.
    return model_id in (name, PurePath(name).name, PurePath(name).stem)


def running_serve(serve_cfg, name: str, timeout: float = 1.0) -> tuple[str, str] | None:  # noqa: ANN001
    """(/v1 URL, model id) of a server at the configured address that serves ``name``, else None."""
    from unfork.serve.backends import base_url

    url = base_url(serve_cfg.host, serve_cfg.port) + "/v1"
    served = next((i for i in _model_ids(url, serve_cfg.api_key, timeout) if _matches(i, name)), None)
    return (url, served) if served is not None else None


def _settings(url: str, key: str | None):  # noqa: ANN202
    from unfork.client.base import ClientSettings

    # A person is waiting: a dead endpoint should be reported in seconds, not after a long backoff.
    return ClientSettings(url, api_key=key or None, max_concurrency=1, max_retries=2, backoff_base=0.25)


def _quick(url: str, key: str | None, model: str | None, cfg, text: str) -> None:  # noqa: ANN001
    # The standard-library client: no asyncio, no httpx, so start-up stays a few tenths of a second.
    from unfork.client.blocking import stream_chat_blocking

    messages = [{"role": "system", "content": cfg.chat.system}] if cfg.chat.system else []
    messages.append({"role": "user", "content": text})
    out = sys.stdout
    for piece in stream_chat_blocking(_settings(url, key), messages, model=model,
                                      temperature=cfg.chat.temperature, max_tokens=cfg.chat.max_tokens):
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()


def _interactive(url: str, key: str | None, model: str | None, cfg, first: str | None,  # noqa: ANN001
                 session: str | None, window: int | None) -> None:
    from pathlib import Path

    from unfork.chat.engine import ChatEngine
    from unfork.chat.repl import run_repl
    from unfork.chat.session import Conversation
    from unfork.client import OpenAIClient
    from unfork.paths import get_paths

    paths = get_paths()
    system = cfg.chat.system or None
    conv = Conversation.load(Path(session).expanduser(), default_system=system) if session \
        else Conversation(system=system)
    client = OpenAIClient(_settings(url, key), model=model)
    engine = ChatEngine(client, conv, model=model, temperature=cfg.chat.temperature,
                        max_tokens=cfg.chat.max_tokens)
    run_repl(engine, logs_dir=paths.chat_logs_dir, history_file=paths.data_dir / "chat_history",
             markdown=cfg.chat.markdown, first_question=first, url=url,
             default_window=window or cfg.serve.ctx_size)
