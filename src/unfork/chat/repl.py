"""The interactive chat: slash commands over a :class:`ChatEngine`, drawn by a UI.

:class:`TerminalUI` uses prompt_toolkit (history, multi-line editing) and rich
(answers streamed live, Markdown); :class:`PlainUI` reads lines and writes
plain text, for pipes and for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import IO, Protocol

from unfork.chat.engine import ChatEngine
from unfork.chat.session import Conversation, find_session, session_path
from unfork.client import ClientError, OpenAIClient
from unfork.errors import UserError

HELP = """\
**Commands** (as in InstructLab's `ilab model chat`)

| command | does |
|---|---|
| `/q` | quit (also Ctrl-D) |
| `/h` | this help |
| `/a model` | ask another model of the same server from now on, in a new session |
| `/c context` | change the system prompt to a named context (`default`, `cli_helper`), in a new session |
| `/clear` | clear the context (forget the conversation, keep the system prompt) |
| `/m` | multi-line input for the next message (Enter adds a line, Esc then Enter sends) |
| `/M` | multi-line input on or off for good |
| `/n` | new session: save this one to the chat logs, then start afresh (from the `/L` session if any) |
| `/N` | new session ignoring what `/L` loaded |
| `/s [file]` | save the conversation as JSON (a bare name goes to the chat logs) |
| `/l [file]` | load a saved conversation (no name: the newest in the chat logs) |
| `/L [file]` | load it and make it what `/n` starts from |
| `/p [n]` | print the last (or n-th last) answer as plain text |
| `/d [n]`, `/md [n]` | show it again, rendered as Markdown |
| `/markdown` | toggle Markdown rendering of answers |

**Keys**: Enter sends. For a new line inside a message, press Esc then Enter
(or Alt+Enter), or end the line with a backslash `\\` before pressing Enter.
Pasted text keeps its line breaks. Ctrl-C stops an answer (the part received
is kept); at the prompt it clears the line. Up and Down browse past inputs.
"""

# ilab's named system prompts for /c; "default" is the configured one.
CONTEXTS = {
    "cli_helper": "You are an expert for command line interface and know all common commands. "
                  "Answer the command to execute as it without any explanation.",
}


class AnswerView(Protocol):
    def add(self, piece: str) -> None: ...

    def end(self, interrupted: bool) -> None: ...


class UI(Protocol):
    multiline: bool
    """Set before each read: Enter adds a line and Esc then Enter sends."""

    async def read(self) -> str | None:
        """The next input; ``None`` at end of input (Ctrl-D)."""

    def info(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...

    def markdown(self, text: str) -> None: ...

    def answer(self, markdown: bool) -> AnswerView: ...


class Repl:
    def __init__(self, engine: ChatEngine, ui: UI, *, logs_dir: Path, markdown: bool = True):
        self.engine = engine
        self.ui = ui
        self.logs_dir = logs_dir
        self.markdown = markdown
        self.session_file: Path | None = None
        self.default_system = engine.conversation.system
        self.loaded: Conversation | None = None  # what /n starts from, set by /L
        self.multiline = False
        self.multiline_once = False

    @property
    def conversation(self) -> Conversation:
        return self.engine.conversation

    async def run(self, first_question: str | None = None) -> None:
        if first_question:
            await self.ask(first_question)
        while True:
            self.ui.multiline = self.multiline != self.multiline_once
            line = await self.ui.read()
            if line is None:
                break
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    break
                continue
            self.multiline_once = False
            await self.ask(line)
        self.autosave()

    # -- commands

    def command(self, line: str) -> bool:
        """Run a slash command; False means quit."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        exact = {"/M": self._multiline_toggle, "/N": self._new_hard, "/L": self._load_permanently}
        if name in exact:
            exact[name](arg)
            return True
        name = name.lower()
        if name in ("/q", "/quit", "/exit"):
            return False
        simple = {"/h": lambda a: self.ui.markdown(HELP), "/help": lambda a: self.ui.markdown(HELP),
                  "/?": lambda a: self.ui.markdown(HELP), "/a": self.amend, "/c": self.context,
                  "/clear": self._clear, "/m": self._multiline_next, "/n": self._new, "/s": self.save,
                  "/l": self.load, "/p": self.previous, "/d": self._display, "/md": self._display,
                  "/markdown": self._markdown_toggle}
        handler = simple.get(name)
        if handler is None:
            self.ui.error(f"Unknown command {name}; /h lists them.")
        else:
            handler(arg)
        return True

    def _clear(self, arg: str) -> None:
        self.conversation.clear()
        self.ui.info("Context cleared.")

    def _markdown_toggle(self, arg: str) -> None:
        self.markdown = not self.markdown
        self.ui.info(f"Markdown {'on' if self.markdown else 'off'}.")

    def _multiline_next(self, arg: str) -> None:
        self.multiline_once = not self.multiline_once
        self.ui.info("Multi-line input for the next message: Esc then Enter sends it.")

    def _multiline_toggle(self, arg: str) -> None:
        self.multiline, self.multiline_once = not self.multiline, False
        self.ui.info(f"Multi-line input {'on: Esc then Enter sends' if self.multiline else 'off'}.")

    def _start_over(self, base: Conversation | None, system: str | None) -> None:
        saved = self.autosave()
        self.engine.conversation = Conversation(system=base.system, turns=[dict(m) for m in base.turns]) \
            if base is not None else Conversation(system=system)
        self.session_file = None
        self.ui.info("New session." + (f" The last one is saved in {saved}" if saved else ""))

    def _new(self, arg: str) -> None:
        self._start_over(self.loaded, self.conversation.system)

    def _new_hard(self, arg: str) -> None:
        self.loaded = None
        self._start_over(None, self.default_system)

    def amend(self, arg: str) -> None:
        """ilab's /a: talk to another model of the same server."""
        if not arg:
            self.ui.error(f"/a needs a model name; now: {self.engine.model or 'the server default'}")
            return
        self.engine.model = arg
        if isinstance(self.engine.client, OpenAIClient):
            self.engine.client.model = arg
        self._start_over(self.loaded, self.conversation.system)
        self.ui.info(f"Now chatting with {arg}.")

    def context(self, arg: str) -> None:
        """ilab's /c: a named system prompt, in a new session."""
        contexts = {"default": self.default_system, **CONTEXTS}
        if arg not in contexts:
            self.ui.error(f"/c takes a context: {', '.join(contexts)} (/clear forgets the conversation)")
            return
        self._start_over(None, contexts[arg])
        self.ui.info(f"Context {arg}.")

    def _display(self, arg: str) -> None:
        answer = self._nth_answer(arg)
        if answer is not None:
            view = self.ui.answer(True)
            view.add(answer)
            view.end(False)

    def _load_permanently(self, arg: str) -> None:
        if self.load(arg):
            self.loaded = Conversation(system=self.conversation.system,
                                       turns=[dict(m) for m in self.conversation.turns])
            self.ui.info("/n now starts from this session (/N: from nothing).")

    def save(self, name: str) -> Path | None:
        if not self.conversation.turns:
            self.ui.info("Nothing to save yet.")
            return None
        path = session_path(name or None, self.logs_dir)
        try:
            self.conversation.save(path)
        except OSError as exc:
            self.ui.error(f"Could not save to {path}: {exc.strerror or exc}")
            return None
        self.session_file = path
        self.ui.info(f"Saved {len(self.conversation.turns)} messages to {path}")
        return path

    def load(self, name: str) -> bool:
        try:
            path = find_session(name or None, self.logs_dir)
            conv = Conversation.load(path, default_system=self.conversation.system)
        except UserError as exc:
            self.ui.error(exc.message)
            return False
        self.engine.conversation = conv
        self.session_file = path
        self.ui.info(f"Loaded {len(conv.turns)} messages from {path}")
        if conv.turns and conv.turns[-1]["role"] == "assistant":
            self.ui.info("Last answer:")
            self.show(conv.turns[-1]["content"])
        return True

    def _nth_answer(self, arg: str) -> str | None:
        answers = self.conversation.answers()
        try:
            n = int(arg) if arg else 1
        except ValueError:
            self.ui.error("/p, /d and /md take a number: 1 is the last answer, 2 the one before...")
            return None
        if not 1 <= n <= len(answers):
            self.ui.error(f"There are {len(answers)} answers in this conversation.")
            return None
        return answers[-n]

    def previous(self, arg: str) -> None:
        answer = self._nth_answer(arg)
        if answer is not None:
            view = self.ui.answer(False)
            view.add(answer)
            view.end(False)

    def show(self, text: str) -> None:
        view = self.ui.answer(self.markdown)
        view.add(text)
        view.end(False)

    def autosave(self) -> Path | None:
        """Keep every conversation: save it to the chat logs (or where it was last saved)."""
        if not self.conversation.turns:
            return None
        path = self.session_file or session_path(None, self.logs_dir)
        with contextlib.suppress(OSError):
            return self.conversation.save(path)
        return None

    # -- asking

    async def ask(self, text: str) -> None:
        view = self.ui.answer(self.markdown)
        task = asyncio.ensure_future(self.engine.reply(text, view.add))
        loop = asyncio.get_running_loop()
        handled = False
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, task.cancel)
            handled = True
        try:
            answer = await task
        except asyncio.CancelledError:
            view.end(True)
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not the answer
            return
        except KeyboardInterrupt:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            view.end(True)
            return
        except ClientError as exc:
            view.end(False)
            self.ui.error(exc.message + (f"\n  hint: {exc.hint}" if exc.hint else ""))
            return
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGINT)
        view.end(False)
        if answer.dropped:
            self.ui.info(f"(the conversation outgrew the model's window: the {answer.dropped} oldest messages "
                         "are no longer in context)")
        if answer.finish_reason == "length":
            self.ui.info("(the answer hit --max-tokens and was cut short)")


# ---------------------------------------------------------------- plain UI


class _PlainAnswer:
    def __init__(self, out: IO[str]):
        self.out = out
        self.text = ""

    def add(self, piece: str) -> None:
        self.text += piece
        self.out.write(piece)
        self.out.flush()

    def end(self, interrupted: bool) -> None:
        if interrupted:
            self.out.write(" [interrupted]\n" if self.text else "[interrupted]\n")
        elif self.text:
            self.out.write("\n")
        self.out.flush()


class PlainUI:
    """Lines in, plain text out: for pipes, dumb terminals and tests."""

    def __init__(self, stdin: IO[str] | None = None, stdout: IO[str] | None = None, prompt: str = ""):
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.prompt = prompt
        self.multiline = False

    async def read(self) -> str | None:
        if self.prompt:
            self.stdout.write(self.prompt)
            self.stdout.flush()
        line = await asyncio.get_running_loop().run_in_executor(None, self.stdin.readline)
        if not line:
            return None
        lines = [line.rstrip("\n")]
        if self.multiline:  # a pipe has no Esc key: an empty line ends the message
            while lines[-1]:
                more = await asyncio.get_running_loop().run_in_executor(None, self.stdin.readline)
                if not more:
                    break
                lines.append(more.rstrip("\n"))
            return "\n".join(lines).rstrip("\n")
        while lines[-1].endswith("\\"):  # a trailing backslash continues the message
            more = await asyncio.get_running_loop().run_in_executor(None, self.stdin.readline)
            lines[-1] = lines[-1][:-1]
            if not more:
                break
            lines.append(more.rstrip("\n"))
        return "\n".join(lines)

    def info(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def error(self, text: str) -> None:
        self.stdout.write("Error: " + text + "\n")
        self.stdout.flush()

    def markdown(self, text: str) -> None:
        self.info(text)

    def answer(self, markdown: bool) -> _PlainAnswer:
        return _PlainAnswer(self.stdout)


# ------------------------------------------------------------- terminal UI


class _LiveAnswer:
    """Streams an answer: raw text as it comes, or live Markdown (the last screenful while
    streaming, then the whole answer rendered once)."""

    REFRESH = 1 / 12

    def __init__(self, console, markdown: bool):  # noqa: ANN001 - rich.console.Console
        self.console = console
        self.markdown = markdown
        self.text = ""
        self.live = None
        self.last = 0.0

    def _tail(self):  # noqa: ANN202
        from rich.markdown import Markdown
        from rich.segment import Segment

        console = self.console
        md = Markdown(self.text)

        class Tail:
            def __rich_console__(self, c, options):  # noqa: ANN001, ANN202
                lines = c.render_lines(md, options, pad=False)
                keep = max(1, console.size.height - 2)
                for line in lines[-keep:]:
                    yield from line
                    yield Segment.line()

        return Tail()

    def add(self, piece: str) -> None:
        self.text += piece
        if not self.markdown:
            self.console.file.write(piece)
            self.console.file.flush()
            return
        now = time.monotonic()
        if self.live is None:
            from rich.live import Live

            self.live = Live(self._tail(), console=self.console, auto_refresh=False, transient=True,
                             vertical_overflow="crop")
            self.live.start()
            self.last = now
        elif now - self.last >= self.REFRESH:
            self.live.update(self._tail(), refresh=True)
            self.last = now

    def end(self, interrupted: bool) -> None:
        if self.markdown:
            if self.live is not None:
                self.live.stop()
            if self.text:
                from rich.markdown import Markdown

                self.console.print(Markdown(self.text))
        elif self.text:
            self.console.file.write("\n")
        if interrupted:
            self.console.print("[dim]\\[interrupted][/dim]")
        self.console.file.flush()


class TerminalUI:
    """prompt_toolkit for input (history file, multi-line editing), rich for output."""

    def __init__(self, history_file: Path, prompt: str = ">>> "):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.key_binding import KeyBindings
        from rich.console import Console

        self.console = Console(highlight=False)
        history_file.parent.mkdir(parents=True, exist_ok=True)
        keys = KeyBindings()

        self.multiline = False

        @keys.add("enter")
        def _enter(event) -> None:  # noqa: ANN001
            buf = event.current_buffer
            if self.multiline:
                buf.insert_text("\n")
            elif buf.document.text_before_cursor.endswith("\\") and buf.document.is_cursor_at_the_end:
                buf.delete_before_cursor(1)
                buf.insert_text("\n")
            else:
                buf.validate_and_handle()

        @keys.add("escape", "enter")
        def _newline(event) -> None:  # noqa: ANN001
            if self.multiline:
                event.current_buffer.validate_and_handle()
            else:
                event.current_buffer.insert_text("\n")

        self.session = PromptSession(history=FileHistory(str(history_file)), key_bindings=keys,
                                     prompt_continuation=lambda width, line_number, wrap_count: "... ")
        self.prompt = prompt

    async def read(self) -> str | None:
        while True:
            try:
                return await self.session.prompt_async(self.prompt)
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt clears the line
            except EOFError:
                return None

    def info(self, text: str) -> None:
        self.console.print(text, style="dim", markup=False)

    def error(self, text: str) -> None:
        self.console.print(text, style="red", markup=False)

    def markdown(self, text: str) -> None:
        from rich.markdown import Markdown

        self.console.print(Markdown(text))

    def answer(self, markdown: bool) -> _LiveAnswer:
        return _LiveAnswer(self.console, markdown)


def run_repl(engine: ChatEngine, *, logs_dir: Path, history_file: Path, markdown: bool, url: str,
             default_window: int, first_question: str | None = None) -> None:
    """Run the chat until /q or Ctrl-D; a terminal gets the full UI, a pipe the plain one.

    The window comes from the server's metadata when it has any, else ``default_window``.
    """
    if sys.stdin.isatty() and sys.stdout.isatty():
        ui: UI = TerminalUI(history_file)
    else:
        ui = PlainUI()
        markdown = False

    async def main() -> None:
        client = engine.client
        try:
            name = await client.model_name(engine.model) if isinstance(client, OpenAIClient) else engine.model
            await engine.learn_window(default_window)
            ui.info(f"Chatting with {name} at {url} (window {engine.window} tokens). "
                    "/h for help, /q or Ctrl-D to quit.")
            await Repl(engine, ui, logs_dir=logs_dir, markdown=markdown).run(first_question)
        finally:
            await client.aclose()

    asyncio.run(main())
