"""What ``train`` says when a plan of several runs (``--setting all``) stopped or left runs
unfinished: the commands that go on, in this command line's words (its options as the user gave
them, so that what it names is exactly what to type), and the report of the runs that did not
finish."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from cifarlin.cli.common import flag_names, in_flags
from cifarlin.cli.display import emit_json, error_line


class PlanCommands:
    """The commands that go on after ``train --setting all`` stopped or left runs unfinished
    (:class:`cifarlin.plans.ending.Commands`), in this command line's words: its options as given."""

    def __init__(self, ctx: typer.Context, overwrite_needed: Callable[[], bool]):
        from click.core import ParameterSource

        self.params = [p for p in ctx.command.params if p.name]
        self.given = {
            p.name: ctx.params[p.name]
            for p in self.params
            if p.name and ctx.get_parameter_source(p.name) not in (None, ParameterSource.DEFAULT)
        }
        self.overwrite_needed = overwrite_needed

    def _line(self, values: dict[str, Any]) -> str:
        """``cifarlin train`` with ``values`` (parameter name: value), in the options' order."""
        words = ["cifarlin", "train"]
        for p in self.params:
            value = values.get(p.name or "")
            if value is None:
                continue
            name = next((o for o in p.opts if o.startswith("--")), p.opts[0])
            if getattr(p, "is_flag", False):
                words += [name] if value else p.secondary_opts[:1]
            else:
                words += [name, str(value)]
        return shlex.join(words)

    def again(self) -> str:
        """The same command; without --overwrite when the runs it would replace are this command's
        own by now (run again, it would start them over)."""
        values = dict(self.given)
        if values.get("overwrite") and not self.overwrite_needed():
            del values["overwrite"]
        return self._line(values)

    def member(self, run: Any, **changes: Any) -> str:
        """One run of the plan, alone: its setting into its folder, with ``changes``."""
        alone = ("workers", "resume", "overwrite", "setting", "out")
        kept = {k: v for k, v in self.given.items() if k not in alone}
        return self._line({**kept, "setting": run.config.setting, "out": run.out, **changes})


def report_failed(ctx: typer.Context, failed: Any, result: Any, json_out: bool) -> NoReturn:
    """Runs of --setting all that did not finish: one error line (and with --json, the one JSON
    document: the runs that finished, those that did not, and the error), exit code 1."""

    def words(text: str) -> str:
        return in_flags(text, flag_names(ctx.find_root().command))

    line = error_line(words(str(failed)))
    if json_out:
        emit_json(
            {
                "runs": [s.to_json() for s in result.summaries],
                "files": [str(f) for f in result.files],
                "failed": [
                    {
                        "setting": f.run.config.setting,
                        "run_dir": str(f.run.out),
                        "diverged": f.diverged,
                        "error": words(f.message),
                        "retry": f.retry,
                    }
                    for f in result.failed
                ],
                "error": line,
                "exit_code": failed.exit_code,
            }
        )
    raise typer.Exit(failed.exit_code)
