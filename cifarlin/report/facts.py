"""What a report says of where its numbers come from: the command that reproduces a run from its
recorded configuration, the machine's and the runs' arithmetic, the data folders and whether
their files are the official release's."""

from __future__ import annotations

import platform
import shlex
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from cifarlin import __version__
from cifarlin.core.config import RECIPES, SETTINGS, TrainConfig, solver_defaults
from cifarlin.data.download import OFFICIAL_FILE_MD5
from cifarlin.search.space import show

#: Fields of a configuration that ``cifarlin train`` derives itself (no option gives them).
DERIVED = ("setting", "choose_lam", "init_checksum")
#: Fields ``cifarlin train`` has no option for (a sweep can set them).
NO_TRAIN_OPTION = ("init_std",)


def config_of(d: dict[str, Any]) -> TrainConfig:
    """A recorded configuration (``TrainConfig.to_dict()``) as the dataclass."""
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in d.items() if k in known}
    if isinstance(values.get("train_batches"), list):
        values["train_batches"] = tuple(values["train_batches"])
    return TrainConfig(**values)


def _base(cfg: TrainConfig) -> TrainConfig:
    """What ``cifarlin train`` does with no option but ``--setting`` (or ``--solver``)."""
    if cfg.setting in SETTINGS or cfg.setting in RECIPES:
        return TrainConfig.for_setting(cfg.setting)
    if cfg.solver == "ridge":
        return TrainConfig(**solver_defaults({"solver": "ridge"}))
    return TrainConfig()


def train_command(cfg: TrainConfig, out: str) -> tuple[str, list[str]]:
    """The ``cifarlin train`` command that trains ``cfg`` into ``out``, and the fields of ``cfg``
    no option of ``train`` gives (``name=value``; empty when the command reproduces it all)."""
    base = _base(cfg)
    words = ["cifarlin", "train"]
    if cfg.setting is not None:
        words += ["--setting", str(cfg.setting)]
    elif cfg.solver != TrainConfig().solver:
        words += ["--solver", cfg.solver]
    missing = []
    for f in fields(TrainConfig):
        name, value = f.name, getattr(cfg, f.name)
        if name in DERIVED or value == getattr(base, name):
            continue
        if name == "solver" and cfg.setting is None:
            continue  # given first
        if name in NO_TRAIN_OPTION:
            missing.append(f"{name}={value}")
        elif name == "shuffle":
            words.append("--shuffle" if value else "--no-shuffle")
        elif name == "lam" and cfg.choose_lam:
            continue  # the ridge solver chose it on the validation set: train chooses it again
        else:
            words += ["--" + name.replace("_", "-"), show(name, value)]
    if cfg.solver == "ridge" and not cfg.choose_lam and "--lam" not in words:
        words += ["--lam", show("lam", cfg.lam)]
    return shlex.join([*words, "--out", out]), missing


def this_machine() -> dict[str, str]:
    """The versions making the report (the runs record their own: ``RunEntry.arithmetic``)."""
    from cifarlin.store.machine import arithmetic

    a = arithmetic()
    return {
        "cifarlin": __version__,
        "python": platform.python_version(),
        "numpy": a.get("numpy", ""),
        "blas": " ".join(x for x in (a.get("blas", ""), a.get("blas_version", "")) if x),
        "blas_kernel": a.get("blas_kernel", ""),
        "platform": platform.platform(terse=True),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def arithmetic_text(a: dict[str, str] | None) -> str:
    """``NumPy 2.4.6, openblas 0.3.31 (Haswell), Python 3.11.7``, or '' when the run recorded none."""
    if not a or not a.get("numpy"):
        return ""
    blas = " ".join(x for x in (a.get("blas", ""), a.get("blas_version", "")) if x)
    kernel = f" ({a['blas_kernel']})" if a.get("blas_kernel") else ""
    python = f", Python {a['python']}" if a.get("python") else ""
    return f"NumPy {a['numpy']}, {blas or 'BLAS unknown'}{kernel}{python}"


def data_folders(datas: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """The data folders the runs record, each with the MD5s its files had when the runs trained
    (a run records the files it read) and whether each is the official release's file. A file
    recorded with several MD5s (it changed between runs) has a row for each, and is named in
    ``changed``."""
    folders: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
    runs: dict[tuple[str, str], int] = {}
    for d in datas:
        if not d or not d.get("folder"):
            continue
        key = (str(d["folder"]), str(d.get("format", "python")))
        files = folders.setdefault(key, {})
        runs[key] = runs.get(key, 0) + 1
        for name, md5 in (d.get("checksums") or {}).items():
            seen = files.setdefault(str(name), {})
            seen[str(md5)] = seen.get(str(md5), 0) + 1
    out = []
    for (folder, fmt), files in folders.items():
        rows = [
            {
                "name": name,
                "md5": md5,
                "runs": count,
                "official": OFFICIAL_FILE_MD5[name] == md5 if name in OFFICIAL_FILE_MD5 else None,
            }
            for name, sums in sorted(files.items())
            for md5, count in sorted(sums.items())
        ]
        known = [f["official"] for f in rows if f["official"] is not None]
        changed = sorted(name for name, sums in files.items() if len(sums) > 1)
        out.append(
            {
                "folder": folder,
                "format": fmt,
                "runs": runs[(folder, fmt)],
                "files": rows,
                "changed": changed,
                "official": (all(known) if known else None),  # None: no file the table knows
            }
        )
    return out
