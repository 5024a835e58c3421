"""What the commands share: the environment (read once), the common options, fetching the data
when it is missing, and the translation of library field names into this command line's flags."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cifarlin.cli.display import Terminal, console, download_progress, say
from cifarlin.core.config import cache_root, feature_cache_dir
from cifarlin.data.source import DownloadConfig
from cifarlin.errors import ConfigError
from cifarlin.store.files import check_path

if TYPE_CHECKING:
    from cifarlin.data.cifar import Dataset


@dataclass(frozen=True)
class Env:
    """The environment variables cifarlin reads, read once when the command line starts."""

    data_dir: Path  # $CIFARLIN_DATA_DIR, else $XDG_CACHE_HOME/cifarlin, else ~/.cache/cifarlin
    url: str | None  # $CIFARLIN_URL: a mirror for the automatic download
    md5: str | None  # $CIFARLIN_MD5: the mirror's archive's MD5
    debug: bool  # $CIFARLIN_DEBUG: tracebacks for unexpected errors
    feature_cache: Path | None = None  # $XDG_CACHE_HOME/cifarlin/features: extracted features
    data_dir_set: bool = False  # data_dir came from $CIFARLIN_DATA_DIR (errors name it, not --data-dir)
    terminal: Terminal = dataclasses.field(default_factory=Terminal)  # $NO_COLOR, $COLUMNS: colours, width
    tools: dict[str, str] = dataclasses.field(default_factory=dict)  # $CIFARLIN_CHROMIUM, $PATH: report's PDF

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> Env:
        data_dir = environ.get("CIFARLIN_DATA_DIR")
        root = Path(data_dir).expanduser() if data_dir else cache_root(environ)
        return cls(
            root,
            environ.get("CIFARLIN_URL") or None,
            environ.get("CIFARLIN_MD5") or None,
            bool(environ.get("CIFARLIN_DEBUG")),
            feature_cache_dir(environ),
            bool(data_dir),
            Terminal(bool(environ.get("NO_COLOR")), environ.get("COLUMNS") or None),
            {k: environ[k] for k in ("CIFARLIN_CHROMIUM", "PATH") if k in environ},
        )

    def data_root(self, data_dir: Path | None) -> Path:
        """``--data-dir`` when given, else the default data folder."""
        root = data_dir.expanduser() if data_dir is not None else self.data_dir
        check_path(root, "data_dir")
        return root

    def download_config(self, url: str | None = None, md5: str | None = None, **kw: Any) -> DownloadConfig:
        """The download options, with ``$CIFARLIN_URL`` and ``$CIFARLIN_MD5`` for those not given."""
        for field, given, var in (("url", url, "CIFARLIN_URL"), ("md5", md5, "CIFARLIN_MD5")):
            value = getattr(self, field)
            if given is None and value is not None:
                try:
                    DownloadConfig(**{field: value})
                except ConfigError as e:
                    raise ConfigError(str(e).replace(f"{field}=", f"${var} ", 1)) from None
        return DownloadConfig(
            url=url if url is not None else self.url, md5=md5 if md5 is not None else self.md5, **kw
        )


def env(ctx: typer.Context) -> Env:
    return ctx.find_root().obj


def ensure_data(
    ctx: typer.Context,
    data_dir: Path | None,
    no_download: bool,
    quiet: bool,
    trained_on: Callable[[Callable[[str], None] | None], Dataset | None] | None = None,
    models: int = 1,
) -> Dataset:
    """The dataset in the data folder, fetched first when it is missing (unless --no-download).

    With ``trained_on`` (the saved models' own folder, when it still holds their files, or None:
    :func:`cifarlin.work.evaluation.recorded_dataset`), that folder unless --data-dir or
    $CIFARLIN_DATA_DIR names one, said in one line; the data folder otherwise."""
    from cifarlin.data import download

    e = env(ctx)
    c = console()
    if trained_on is not None and data_dir is None and not e.data_dir_set:
        dataset = trained_on(None if quiet else (lambda m: say(c, f"note: {m}")))
        if dataset is not None:
            if not quiet:
                which = "model was" if models == 1 else "models were"
                say(c, f"data: the folder the {which} trained on, {dataset.folder}")
            return dataset
    with download_progress(quiet) as progress:
        return download.ensure(
            e.data_root(data_dir),
            e.download_config(),
            download=not no_download,
            on_progress=progress,
            on_notice=None if quiet else (lambda m: say(c, m)),
        )


def flag_names(group: Any) -> dict[str, str]:
    """{parameter name: its long flag} over every command of the click ``group``."""
    names: dict[str, str] = {}
    for command in [group, *group.commands.values()]:
        for p in command.params:
            if getattr(p, "param_type_name", "") != "option":
                continue
            flag = next((o for o in p.opts if o.startswith("--")), p.opts[0])
            names.setdefault(p.name, flag)
            if getattr(p, "is_flag", False):
                names.setdefault(f"{p.name}:flag", flag)
    return names


def in_flags(message: str, flags: Mapping[str, str]) -> str:
    """A library message in this command line's words: ``batch_size=500`` -> ``--batch-size 500``,
    ``resume=True`` -> ``--resume`` (the library names values by their field)."""
    for name, flag in flags.items():
        if name.endswith(":flag"):
            message = re.sub(rf"(?<![\w$.-]){re.escape(name[:-5])}=True\b", flag, message)
    for name, flag in flags.items():
        if not name.endswith(":flag"):
            message = re.sub(rf"(?<![\w$.-]){re.escape(name)}=(?=\S)", flag + " ", message)
    return message


# ---------------------------------------------------------------------------------------------
# Options, in one style: UPPERCASE value names, choices and defaults in the help text (which
# wraps at spaces), no value name on flags
# ---------------------------------------------------------------------------------------------


def option(
    *names: str,
    help: str,
    metavar: str = "VALUE",
    choices: Sequence[object] | None = None,
    default: object = None,
    hidden: bool = False,
) -> Any:
    """A typer option taking a value: ``help``, then its choices and default when given."""
    text = help
    if choices is not None:
        text += f" One of: {', '.join(map(str, choices))}."
    if default is not None:
        text += f" [default: {default}]"
    return typer.Option(*names, help=text, metavar=metavar, show_default=False, hidden=hidden)


def flag(*names: str, help: str, hidden: bool = False) -> Any:
    """A typer option that is a switch (no value, no value name in the help)."""
    return typer.Option(*names, help=help, metavar="", show_default=False, hidden=hidden)


def g(x: float) -> str:
    """A number as a user would type it (0.001, 1e-06)."""
    return f"{x:g}"


DataDirOpt = Annotated[
    Path | None,
    option(
        "--data-dir",
        metavar="DIR",
        help="Folder holding cifar-10-batches-py/ (or that folder itself). "
        "Default: $CIFARLIN_DATA_DIR, else $XDG_CACHE_HOME/cifarlin (~/.cache/cifarlin).",
    ),
]
NoDownloadOpt = Annotated[
    bool, flag("--no-download", help="Fail instead of downloading CIFAR-10 when it is missing.")
]
JsonOpt = Annotated[bool, flag("--json", help="Print the result as one JSON document on stdout.")]
QuietOpt = Annotated[bool, flag("--quiet", "-q", help="No progress; print only the result.")]
