"""``unfork model serve``: an OpenAI-compatible server for one model.

With a GGUF model, llama.cpp's ``llama-server`` itself listens on the address
you give (no proxy in between); unfork starts it with the model's own chat
template, parallel slots and your API key, watches it, and stops it (and
anything it started) on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import time

import click

from unfork.cli.options import collect, config_options, ilab_model_path


@click.command()
@click.option("--model", "-m", "model", default=None,
              help="Catalog name, GGUF file or Hugging Face folder. Default: models.chat, else the teacher.")
@config_options("serve")
@click.option("--startup-timeout", type=float, default=600, show_default=True,
              help="Seconds to wait for the model to load.")
@click.option("--verbose", "-v", is_flag=True, help="Show the engine's own log.")
@ilab_model_path
def serve(model: str | None, startup_timeout: float, verbose: bool, **flags) -> None:
    """Serve a model through an OpenAI-compatible API.

    \b
    Endpoints: /v1/models, /v1/chat/completions (streaming or not),
    /v1/completions and /health (which, like llama-server's, needs no key).
    With --api-key every other request needs 'Authorization: Bearer KEY'.
    Stop it with Ctrl-C.
    """
    from unfork.config import load_config
    from unfork.serve import backends
    from unfork.serve.launch import sigterm_as_exit, start_server
    from unfork.serve.ports import check_port_free
    from unfork.serve.process import ServerStartError

    cfg = load_config(overrides=collect("serve", flags))  # read only: serve never writes the config
    s = cfg.serve
    if s.parallel < 1:
        raise click.BadParameter("must be at least 1", param_hint="--parallel")
    if s.ctx_size < 256:
        raise click.BadParameter("must be at least 256", param_hint="--ctx-size")
    ref, backend = backends.prepare(model or cfg.chat_model(), s.backend)
    backends.check_installed(backend)
    check_port_free(s.host, s.port)
    if s.host not in ("127.0.0.1", "localhost", "::1") and not s.api_key:
        click.secho(f"Warning: listening on {s.host} without an API key: anyone who can reach this "
                    "machine can use the model (set one with --api-key).", fg="yellow", err=True)

    spec = backends.build_spec(backend, ref, host=s.host, port=s.port, api_key=s.api_key or None,
                               parallel=s.parallel, ctx_size=s.ctx_size)
    url = backends.base_url(s.host, s.port)
    click.echo(f"Loading {ref.name} ({ref.format}, {ref.path}) with {backend} ...", err=True)
    started = time.monotonic()
    with sigterm_as_exit():
        proc = None
        try:
            proc = start_server(spec, s.host, s.port, echo=verbose, timeout=startup_timeout)
            click.echo(f"Serving '{spec.model_id}' at {url}/v1 (ready in {time.monotonic() - started:.1f} s; "
                       f"{s.parallel if backend != 'transformers' else 1} at a time, context {s.ctx_size}"
                       f"{', API key required' if s.api_key else ''}). Press Ctrl-C to stop.", err=True)
            rc = proc.proc.wait()
            # The engine stopped on its own: that is a failure, say why.
            raise proc.exited_error("while serving") if rc != 0 else ServerStartError(
                f"{spec.engine} stopped unexpectedly (exit code 0)", proc.tail())
        except (KeyboardInterrupt, SystemExit) as exc:
            if proc is not None:
                proc.stop()
            if isinstance(exc, SystemExit) and exc.code not in (None, 0, 143):
                raise
            click.echo("Server stopped.", err=True)
        finally:
            if proc is not None:
                proc.stop()
