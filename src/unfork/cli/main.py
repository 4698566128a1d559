"""The ``unfork`` command: a thin dispatcher.

Groups and commands live in their own modules and are imported only when
used, so ``unfork --help`` stays fast and never imports torch.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from unfork import __version__

# group name -> (module, attribute, one-line help shown by `unfork --help`)
GROUPS: dict[str, tuple[str, str, str]] = {
    "config": ("unfork.cli.config", "config", "Create, show and edit the configuration."),
    "taxonomy": ("unfork.cli.taxonomy", "taxonomy", "Validate taxonomy leaves and list what changed."),
    "data": ("unfork.cli.data", "data", "Generate and list synthetic training data."),
    "model": ("unfork.cli.model", "model", "Download, serve, chat with, train and evaluate models."),
    "system": ("unfork.cli.system", "system", "Describe this machine and the installed backends."),
}
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("unfork.cli.run", "run", "The main job: validate, generate, train, evaluate, report."),
}
# InstructLab's short forms (`ilab chat`): alias -> (group, command)
ALIASES: dict[str, tuple[str, str]] = {
    "chat": ("model", "chat"), "serve": ("model", "serve"), "train": ("model", "train"),
    "download": ("model", "download"), "convert": ("model", "convert"), "test": ("model", "test"),
    "evaluate": ("model", "evaluate"), "generate": ("data", "generate"), "diff": ("taxonomy", "diff"),
    "init": ("config", "init"),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str, str]] | None = None,
                 aliases: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}
        self.aliases = aliases or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.aliases and name not in self.lazy:
            group_name, command = self.aliases[name]
            group = self.get_command(ctx, group_name)
            return group.get_command(ctx, command) if isinstance(group, click.Group) else None
        if name in self.lazy:
            module, attr, _ = self.lazy[name]
            try:
                return getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.startswith("unfork"):
                    return None
                raise
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text comes from the table above, so listing commands imports nothing.
        rows = [(name, help_text) for name, (_, _, help_text) in sorted(self.lazy.items())]
        rows += [(name, cmd.get_short_help_str()) for name, cmd in sorted(self.commands.items())]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
        by_group: dict[str, list[str]] = {}
        for alias, (group, _) in self.aliases.items():
            by_group.setdefault(group, []).append(alias)
        if by_group:
            with formatter.section("ilab-style aliases (unfork chat = unfork model chat)"):
                formatter.write_dl([(group, ", ".join(names)) for group, names in by_group.items()])


def lazy_group(lazy: dict[str, tuple[str, str, str]], **kwargs):
    return click.group(cls=LazyGroup, lazy=lazy, **kwargs)


@lazy_group({**GROUPS, **COMMANDS}, aliases=ALIASES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="unfork")
@click.option("-v", "--verbose", count=True,
              help="More messages on stderr: -v what is going on (retries, choices), -vv debugging detail.")
@click.option("--debug", is_flag=True, help="Debugging detail, and the traceback of an unexpected error.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write every message, with times, to this file.")
def cli(verbose: int, debug: bool, log_file: Path | None) -> None:
    """unfork: teach a language model a new skill or new knowledge from a handful of examples.

    \b
    Typical flow:
      unfork config init                 create the config and data folders
      unfork taxonomy validate           check your qna.yaml leaves
      unfork data generate               expand the seeds with a teacher model
      unfork model train                 fine-tune the student on the data
      unfork model chat                  talk to the result
    Or all of it at once on the example taxonomy: unfork run

    Without -v or --debug, the level is general.log_level from the config.
    """
    from unfork.logs import setup_logging

    setup_logging(verbose=verbose, debug=debug, log_file=log_file)


def _exit_with(exc) -> None:
    click.secho(f"Error: {exc.message}", fg="red", err=True)
    if exc.hint:
        click.echo(f"  hint: {exc.hint}", err=True)
    sys.exit(exc.exit_code)


def main() -> None:
    from unfork.errors import UserError

    try:
        cli.main(prog_name="unfork", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except UserError as exc:
        _exit_with(exc)
    except ModuleNotFoundError as exc:
        from unfork.extras import missing_extra

        words = [a for a in _after_global_options(sys.argv[1:]) if not a.startswith("-")][:2]
        err = missing_extra(exc, f"'unfork {' '.join(words)}'")
        if err is None:
            _unexpected(exc)
        _exit_with(err)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:
        _unexpected(exc)


def _after_global_options(args: list[str]) -> list[str]:
    """The arguments from the command's name on (the value of ``--log-file`` is no command word)."""
    for i, arg in enumerate(args):
        if arg == "--log-file":
            return _after_global_options(args[i + 2:])
        if not arg.startswith("-"):
            return args[i:]
    return []


def _unexpected(exc: Exception) -> None:
    """A failure no message was written for: its traceback with --debug, else one line saying how to see it."""
    import logging

    from unfork.logs import state

    if state.debug:
        raise exc
    logging.getLogger("unfork").debug("unexpected error", exc_info=exc)  # -vv and the log file keep the traceback
    click.secho(f"Error: unexpected {type(exc).__name__}: {exc}", fg="red", err=True)
    click.echo("  hint: run it again with --debug to see where it happened (and please report it)", err=True)
    sys.exit(1)
