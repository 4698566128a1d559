"""Logging for every command: one level from the flags or ``general.log_level``, printed through Rich.

Messages go through Rich's logging handler on the same stderr console the
progress bars draw on, so a message prints above a live bar instead of
through it. Rich is imported only when the first message is printed, which
keeps ``unfork --help`` and quick commands fast.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOGGER = "unfork"


@dataclass
class LogState:
    level: str = "WARNING"
    debug: bool = False
    """--debug: unexpected errors show their traceback."""
    log_file: Path | None = None


state = LogState()
_console: tuple[Any, Any] | None = None  # (the stderr stream it was made for, the console)


def stderr_console() -> Any:
    """The one Rich console on stderr, shared by progress bars and log messages.

    It is made again when ``sys.stderr`` was replaced (a test runner's capture),
    so it never writes to a stream that is gone. When stderr is a file or pipe
    it prints at 120 columns, where Rich's default 80 would squeeze tables into
    one word per line.
    """
    global _console
    if _console is None or _console[0] is not sys.stderr:
        from rich.console import Console

        _console = (sys.stderr, Console(stderr=True, width=None if sys.stderr.isatty() else 120))
    return _console[1]


def flag_level(verbose: int, debug: bool) -> str | None:
    """The level the command line asks for (-v INFO, -vv or --debug DEBUG), or None to use the config's."""
    if debug or verbose >= 2:
        return "DEBUG"
    return "INFO" if verbose == 1 else None


def configured_level(environ: dict[str, str] | None = None) -> str:
    """``general.log_level`` from the environment or the config file; a broken value is left for the
    command's own config loading to report, so a bad file never stops ``unfork config edit``."""
    from unfork.errors import UserError

    environ = os.environ if environ is None else environ
    value = environ.get("UNFORK_GENERAL_LOG_LEVEL")
    if value is None:
        from unfork.config import read_settings
        from unfork.paths import get_paths

        path = get_paths().config_file
        try:
            value = read_settings(path).get("general.log_level") if path.is_file() else None
        except (UserError, OSError):
            value = None
    value = str(value or "").upper()
    return value if value in LEVELS else "WARNING"


class _LazyRichHandler(logging.Handler):
    """Rich's handler on the shared stderr console, made at the first message."""

    def emit(self, record: logging.LogRecord) -> None:
        from rich.logging import RichHandler

        console = stderr_console()
        handler = getattr(self, "_rich", None)
        if handler is None or handler.console is not console:
            handler = self._rich = RichHandler(console=console, show_path=False, rich_tracebacks=True,
                                               markup=False, log_time_format="[%X]")
        handler.setLevel(self.level)
        handler.handle(record)


def setup_logging(verbose: int = 0, debug: bool = False, log_file: Path | None = None,
                  environ: dict[str, str] | None = None) -> LogState:
    """Apply the level (flags win over ``general.log_level``) to unfork's loggers, once per command."""
    level = flag_level(verbose, debug) or configured_level(environ)
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if getattr(h, "_unfork", False)]:
        logger.removeHandler(old)
        old.close()
    console = _LazyRichHandler(level=level)
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        log_file = Path(log_file).expanduser()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # The file keeps everything, with times and logger names, for a bug report.
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setLevel(logging.DEBUG)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(to_file)
    for h in handlers:
        h._unfork = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    logger.setLevel(min(h.level for h in handlers))
    state.level, state.debug, state.log_file = level, debug, log_file
    return state
