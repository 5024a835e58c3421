"""The ``cifarlin`` command line: parse, call the library, format. Only this package imports typer
and rich.

Conventions, the same for every command: results go to stdout (with ``--json``, exactly one JSON
object); progress, tables and messages go to stderr. Exit codes: 0 success, 1 the job failed,
2 a usage error, 130 interrupted. Errors are one line, in this command line's words (its flags,
not the library's field names); ``CIFARLIN_DEBUG=1`` shows tracebacks of unexpected ones.

    display.py   console, tables, progress, JSON on stdout
    common.py    the environment, shared options, fetching data, field names -> flags
    download.py, gradcheck.py, train.py, sweep.py, features.py, inspect.py (evaluate, visualize),
    predict.py (predict, export), runs.py   the commands, imported when their command runs
    train_plan.py   the commands train prints to continue or retry a plan of runs
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
from contextlib import redirect_stdout
from typing import Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from cifarlin import __version__, _early, _note_early
from cifarlin.cli.common import Env, flag_names, in_flags
from cifarlin.cli.display import (
    emit_json,
    error_line,
    json_written,
    no_escapes_from_libraries,
    start_command,
)
from cifarlin.errors import (
    CifarlinError,
    ConfigError,
    Terminated,
    reset_stop,
    stop_signal,
    stopped,
    terminated,
)

# Once a command has ended, or is reporting how it failed, a stop signal is only noted: a second
# Ctrl-C while the first one's message is printed must not escape as a traceback (and kill the
# process by the signal instead of exit 130). Set by the first bytecode of the one handler below,
# which makes no call (Python runs signal handlers only at calls and backward jumps).
_reporting = [False]


def _stop(signum: int, frame: Any) -> None:
    if _reporting[0]:
        return
    stop_signal(terminate=signum == signal.SIGTERM)


def _stdout_usable() -> bool:
    if sys.stdout is None:
        return False
    try:
        os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return not hasattr(sys.stdout, "fileno") or _in_memory(sys.stdout)
    return True


def _in_memory(stream: Any) -> bool:
    """A stdout with no file behind it (a test runner's capture) is usable."""
    try:
        stream.fileno()
    except (OSError, ValueError):
        return not getattr(stream, "closed", False)
    return False


def _plain_help_option(option: Any) -> Any:
    """-h/--help is a switch: no value name in the help."""
    if option is not None:
        option.metavar = ""
    return option


class _OneHelpStyle:
    """-h/--help without a type, and arguments shown by their value name alone."""

    params: list[Any]

    def get_help_option(self, ctx: Any) -> Any:
        option = _plain_help_option(super().get_help_option(ctx))  # type: ignore[misc]
        panels = [p.rich_help_panel for p in self.params if getattr(p, "rich_help_panel", None)]
        if option is not None and panels:  # options under headings: -h/--help under the last
            option.rich_help_panel = panels[-1]
        return option

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        for p in self.params:  # an argument's value name (MODEL, RUN, SHELL) says enough: no <path>
            if getattr(p, "param_type_name", "") == "argument":
                p.display_type_rich = lambda ctx: None


class CifarlinCommand(_OneHelpStyle, TyperCommand):
    """Usage errors typer would let through: an empty path, and --json with nowhere to print."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        paths = {
            name
            for p in self.params
            if getattr(p, "param_type_name", "") == "option" and p.type_descriptor.is_path
            for name in p.opts
        }
        for i, arg in enumerate(args):
            name, eq, value = arg.partition("=")
            if name in paths and (value == "" if eq else i + 1 < len(args) and args[i + 1] == ""):
                raise ConfigError(f"{name} '': an empty path; give a folder or file name")
        if "--json" in args and not _stdout_usable():
            raise ConfigError(
                "--json: stdout is closed, so the result has nowhere to go; drop --json or open stdout"
            )
        return super().parse_args(ctx, args)


class CifarlinGroup(_OneHelpStyle, TyperGroup):
    """Turns every failure into one line on stderr and the documented exit code."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:  # no command: a usage error, help on stderr
            with redirect_stdout(sys.stderr):
                text = ctx.get_help()  # Typer's rich help prints itself and returns ""
                if text:
                    print(text)
            ctx.exit(2)
        return super().parse_args(ctx, args)

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        env = Env.read(os.environ)  # the one place the environment is read
        Console.on_broken_pipe = _pipe_closed  # type: ignore[method-assign]
        extra.setdefault("obj", env)
        start_command(env.terminal)  # a new command: its terminal, no JSON document written yet
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        reset_stop()
        previous = {}
        unraisable = sys.unraisablehook
        sys.unraisablehook = _quiet_stops
        try:  # SIGTERM is handled like Ctrl-C: the last finished step is kept
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL, _note_early):
                    previous[sig] = signal.signal(sig, _stop)
        except ValueError:  # not the main thread
            pass
        _reporting[0] = False
        try:
            with no_escapes_from_libraries():
                return self._main(env, args, prog_name, complete_var, **extra)
        finally:
            sys.unraisablehook = unraisable
            if not _exiting:  # in a test runner: its own handlers back (the process goes on)
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def _main(
        self, env: Env, args: Any, prog_name: str | None, complete_var: str | None, **extra: Any
    ) -> Any:
        if env.terminal.no_color:  # Typer's own help console honours colour only, not NO_COLOR
            from typer import rich_utils

            rich_utils.COLOR_SYSTEM = None
        argv = sys.argv[1:] if args is None else list(args)
        wants_json = "--json" in argv

        def fail(message: str, code: int) -> NoReturn:
            """One line on stderr; with --json also ``{"error": ..., "exit_code": ...}`` on stdout."""
            line = error_line(message)
            if wants_json and _stdout_usable():
                try:
                    emit_json({"error": line, "exit_code": code})
                except (OSError, CifarlinError):
                    pass
            sys.exit(code)

        try:
            if _early:  # Ctrl-C (or SIGTERM) while the command line was being imported
                raise Terminated() if _early[0] == signal.SIGTERM else KeyboardInterrupt()
            if argv and argv[0] in READS_FILES and not {"-h", "--help"} & set(argv):
                from cifarlin.store import helper  # its start overlaps the command's own imports

                helper.start_helper()
            rv = super().main(args, prog_name, complete_var, False, **extra)
            _reporting[0] = True
            if rv == 130:  # Typer turns a Ctrl-C (or SIGTERM) that no command handled into 130
                how, code = ("terminated (SIGTERM)", 143) if terminated() else ("interrupted", 130)
                fail(f"{how}; nothing was left half-written (files are written whole or not at all)", code)
            if isinstance(rv, int) and rv != 0 and wants_json and not json_written() and _stdout_usable():
                emit_json({"error": f"failed (exit code {rv}); see stderr", "exit_code": rv})
            if sys.stdout is not None:  # here, where a closed pipe is caught, not at the exit
                sys.stdout.flush()
            sys.exit(rv if isinstance(rv, int) else 0)
        except BaseException as e:
            _reporting[0] = True  # first, before any call: from here on signals are only noted
            if isinstance(e, SystemExit):
                if type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):  # click met a closed
                    _to_devnull()  # pipe (and exits with 1): the reader went away, not a failure
                    sys.exit(0)
                raise
            if isinstance(e, typer.TyperException):  # click's usage errors
                msg = re.sub(r"\s+", " ", e.format_message().replace("Value error, ", ""))  # no tabs
                ctx = getattr(e, "ctx", None)
                hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                fail(suggest(msg, e) + hint, e.exit_code)
            if isinstance(e, CifarlinError):
                fail(suggest(in_flags(_named_as_set(str(e), env, argv), flag_names(self))), e.exit_code)
            if isinstance(e, KeyboardInterrupt):
                fail(*stopped(e))
            if isinstance(e, typer.Abort):
                fail("interrupted", 130)
            if isinstance(e, BrokenPipeError):  # the reader went away (`| head`): not a failure
                _to_devnull()
                sys.exit(0)
            if env.debug or not isinstance(e, Exception):
                raise
            fail(
                f"unexpected {type(e).__name__}: {e} (this is a bug in cifarlin: run again with "
                "CIFARLIN_DEBUG=1 to see the full traceback, and please report it)",
                1,
            )


_exiting = False  # set by main(): the process ends with the command, so its handlers stay


def _quiet_stops(unraisable: Any) -> None:
    """A Ctrl-C or SIGTERM that landed in a finaliser or a weakref callback is swallowed there by
    Python, with a traceback printed: not printed (it is noted; ``check_stop`` raises it again)."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


def _pipe_closed(console: Console) -> None:
    """What rich does when the reader of its output went away: raise, for the one handler above
    (rich's own exits with 1, the code of a failed job)."""
    console.quiet = True
    raise BrokenPipeError(errno.EPIPE, "the reader of the output went away")


def _to_devnull() -> None:
    """stdout and stderr onto /dev/null: what is still buffered for a closed pipe goes nowhere,
    without a second BrokenPipeError as Python exits."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # no file behind them (a test runner's capture)
        pass


#: Flags of other tools that people type for one of ours: an unknown option among them is
#: answered with ours ("did you mean --eta?").
FLAG_ALIASES = {
    "--lr": "--eta",
    "--learning-rate": "--eta",
    "--lambda": "--lam",
    "--weight-decay": "--lam",
    "--batch": "--batch-size",
    "--output": "--out",
}


def suggest(message: str, error: Any = None) -> str:
    """A usage error with the likely intended word: an unknown flag that is another tool's name
    for one of ours (--lr: --eta), or a value close to one of the choices the message lists
    (--what prob: probs)."""
    name = getattr(error, "option_name", None)
    if isinstance(error, typer.BadParameter) or name is None:
        pass
    elif FLAG_ALIASES.get(name) in {o for p in error.ctx.command.params for o in p.opts}:
        return re.sub(r" \(Possible options: [^)]*\)", "", message) + f"; did you mean {FLAG_ALIASES[name]}?"
    import difflib

    for pattern in (
        r"'(?P<value>[^']*)' is not one of (?P<choices>'[^']*'(?:, '[^']*')*)",  # click's choices
        r"'(?P<value>[^']*)': use (?:one of|some of|a comma list of) (?P<choices>[\w:.-]+(?:, [\w:.-]+)*)",
    ):
        m = re.search(pattern, message)
        if m is None:
            continue
        choices = [c.strip("'") for c in m["choices"].split(", ")]
        words = [w.strip() for w in m["value"].split(",")]
        close = [
            w if w in choices else next(iter(difflib.get_close_matches(w, choices, 1)), None) for w in words
        ]
        if words and None not in close and close != words:
            return f"{message.rstrip('.')}; did you mean '{','.join(dict.fromkeys(close))}'?"  # type: ignore[arg-type]
        break
    return message


def _named_as_set(message: str, env: Env, argv: list[str]) -> str:
    """A message about the data folder names what the user set: ``$CIFARLIN_DATA_DIR`` when the
    folder came from it, ``--data-dir`` (by the usual translation) when the flag was given."""
    flag = any(a == "--data-dir" or a.startswith("--data-dir=") for a in argv)
    if env.data_dir_set and not flag:
        return re.sub(r"(?<![\w$.-])data_dir=(?=\S)", "$CIFARLIN_DATA_DIR ", message)
    return message


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"cifarlin {__version__}\n")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_version,
            is_eager=True,
            metavar="",
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Train, check and understand a linear softmax classifier on CIFAR-10.

    Start with `cifarlin train --setting 2`: it fetches CIFAR-10 when it is missing.
    Exit codes: 0 success, 1 the job failed, 2 a usage error, 130 interrupted.
    """


def completion_command(
    shell: Annotated[
        Literal["bash", "zsh", "fish"], typer.Argument(metavar="SHELL", help="bash, zsh or fish.")
    ],
) -> None:
    """Print a static completion script (subcommands, options, choices, paths) for a shell.

    The same scripts ship in the repository's completions/ folder; see the README for where each
    shell looks for them.

    **Example:** cifarlin completion bash > ~/.local/share/bash-completion/completions/cifarlin
    """
    from cifarlin.cli.completion import script

    sys.stdout.write(script(shell, group()))


#: Commands that surely read HDF5 files of runs, through a probe in a child of cifarlin.store.helper's: the
#: helper is started as they begin (train and sweep start it with their figure child).
READS_FILES = {"evaluate", "visualize", "visualise", "predict", "export", "runs", "report"}

#: Each command: its module in this package and its function there (imported when needed).
COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("download", "download"),
    "gradcheck": ("gradcheck", "gradcheck"),
    "train": ("train", "train"),
    "sweep": ("sweep", "sweep"),
    "features": ("features", "features"),
    "evaluate": ("inspect", "evaluate"),
    "visualize": ("inspect", "visualize"),
    "predict": ("predict", "predict"),
    "export": ("predict", "export"),
    "runs": ("runs", "runs"),
    "report": ("report", "report"),
    "completion": ("", "completion"),
    "visualise": ("inspect", "visualize"),  # the British spelling, hidden
}


def make_app(only: str | None = None) -> typer.Typer:
    """The command line: every command, or with ``only`` that one alone (what ``main`` runs for
    ``cifarlin CMD ...``: the other commands' modules are then neither imported nor built, which
    keeps ``cifarlin train --help`` quick)."""
    from importlib import import_module

    new = typer.Typer(
        name="cifarlin",
        cls=CifarlinGroup,
        no_args_is_help=True,
        rich_markup_mode="markdown",
        pretty_exceptions_enable=False,
        add_completion=False,  # one way to install completion: `cifarlin completion SHELL` (the README)
        context_settings={"max_content_width": 100, "help_option_names": ["-h", "--help"]},
    )
    new.callback()(_root)
    for name, (module, function) in COMMANDS.items():
        if only is not None and name != only:
            continue
        fn = completion_command if not module else getattr(import_module(f"cifarlin.cli.{module}"), function)
        new.command(name, cls=CifarlinCommand, hidden=name == "visualise")(fn)
    return new


def __getattr__(name: str) -> Any:
    """``app``, the whole command line, is built on first use (PEP 562)."""
    if name == "app":
        globals()["app"] = built = make_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def group() -> Any:
    """The click group behind :data:`app` (what completion scripts are generated from)."""
    return typer.main.get_command(make_app())


def main() -> None:
    """Console-script entry point."""
    global _exiting
    _exiting = True
    first = sys.argv[1] if len(sys.argv) > 1 else None
    try:
        make_app(first if first in COMMANDS else None)(prog_name="cifarlin")
    finally:  # the command has ended and said how: the process now only exits. Ignored, not
        for sig in (signal.SIGINT, signal.SIGTERM):  # handled: Python's shutdown puts handled
            signal.signal(sig, signal.SIG_IGN)  # signals back to their default (death by signal)
