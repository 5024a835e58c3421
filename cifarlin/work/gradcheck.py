"""Compare the analytic gradients of the model with numerical ones, for every parameter and loss."""

from __future__ import annotations

import json
import os
import shlex
import stat
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cifarlin import __version__
from cifarlin.core import model, numgrad
from cifarlin.core.config import GradcheckConfig, SplitSpec
from cifarlin.data.cifar import Dataset
from cifarlin.errors import ModelFileError, WriteError
from cifarlin.store import machine
from cifarlin.store.files import check_file_path, json_ready, make_folder, write_text
from cifarlin.work.prepare import training_sample

KIND = "gradcheck"
FORMAT_VERSION = 1
MAX_RESULT_BYTES = 1 << 20  # a result is about 1 kB: a file this large is not one
# The command line's flag of each field of GradcheckConfig it takes (init_std is not one)
FLAGS = {
    "loss": "--loss",
    "n": "--n",
    "dims": "--dims",
    "lam": "--lam",
    "h": "--step",
    "method": "--method",
    "tol": "--tol",
    "atol": "--atol",
    "seed": "--seed",
}
PARAM_NUMBERS = ("max_rel", "p99_rel", "mean_rel", "max_abs")  # floats, or null for NaN
PARAM_COUNTS = ("checked", "failing")


@dataclass(frozen=True)
class ParamReport:
    """Agreement of analytic and numerical gradients for one parameter array.

    The statistics are over the ``checked`` entries: all but the ``kinks`` left out (entries of
    the hinge loss whose perturbation crosses a margin of 0, where there is no derivative).
    ``by_floor`` counts passing entries whose relative error alone exceeds the tolerance: the
    absolute floor decided them (near-zero gradients, where centred differences lose digits).
    """

    name: str
    max_rel: float
    p99_rel: float
    mean_rel: float
    max_abs: float
    checked: int
    failing: int
    kinks: int = 0
    by_floor: int = 0

    @property
    def passed(self) -> bool:
        return self.failing == 0


@dataclass(frozen=True)
class GradcheckReport:
    config: GradcheckConfig
    inputs: str  # "random", or the data folder of the training images checked on
    params: tuple[ParamReport, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.params)

    def to_dict(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["h"] = self.config.step
        return {
            "pass": self.passed,
            **cfg,
            "inputs": self.inputs,
            "seconds": self.seconds,
            **{p.name: {**asdict(p), "pass": p.passed} for p in self.params},
        }


def relative_error(ga: np.ndarray, gn: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Elementwise |ga - gn| / max(eps, |ga| + |gn|)."""
    return np.abs(ga - gn) / np.maximum(eps, np.abs(ga) + np.abs(gn))


def compare(
    name: str, ga: np.ndarray, gn: np.ndarray, tol: float, atol: float, skip: np.ndarray | None = None
) -> ParamReport:
    """Statistics of the agreement of analytic ``ga`` and numerical ``gn`` (same shape), leaving
    out the entries where ``skip`` is True."""
    keep = np.ones(ga.shape, dtype=bool) if skip is None else ~skip
    ga, gn = ga[keep], gn[keep]
    rel = relative_error(ga, gn)
    err = np.abs(ga - gn)
    bound = tol * (np.abs(ga) + np.abs(gn))
    ok = err <= atol + bound  # NaN fails
    empty = rel.size == 0
    return ParamReport(
        name=name,
        max_rel=float("nan") if empty else float(rel.max()),
        p99_rel=float("nan") if empty else float(np.percentile(rel, 99)),
        mean_rel=float("nan") if empty else float(rel.mean()),
        max_abs=float("nan") if empty else float(err.max()),
        checked=int(rel.size),
        failing=int(np.count_nonzero(~ok)),
        kinks=int(keep.size - rel.size),
        by_floor=int(np.count_nonzero(ok & ~(err <= bound))),
    )


def initial_params(cfg: GradcheckConfig) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """W (K, dims), b (K,) initialised as in training (then cut to the first ``dims`` inputs),
    and the generator, for drawing random inputs after them."""
    rng = np.random.default_rng(cfg.seed)
    W, b = model.init_params(rng, std=cfg.init_std)
    return W[:, : cfg.dims], b, rng


def random_problem(cfg: GradcheckConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """W, b as in training and standard normal inputs X (n, dims) with random labels y (n,)."""
    W, b, rng = initial_params(cfg)
    X = rng.standard_normal((cfg.n, cfg.dims))
    y = rng.integers(0, model.K, size=cfg.n)
    return W, b, X, y


def check(
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, cfg: GradcheckConfig, inputs: str
) -> GradcheckReport:
    """Analytic against numerical gradients of J at (W, b) on (X, y), in float64."""
    W, b, X = (np.asarray(a, dtype=np.float64) for a in (W, b, X))
    t0 = time.perf_counter()
    aW, ab = model.gradients(W, b, X, y, cfg.lam, cfg.loss)
    nW, nb = numgrad.numerical_gradients(W, b, X, y, cfg.lam, h=cfg.step, method=cfg.method, loss=cfg.loss)
    kW, kb = numgrad.kinks(W, b, X, y, cfg.step, cfg.loss)
    seconds = time.perf_counter() - t0
    params = (compare("W", aW, nW, cfg.tol, cfg.atol, kW), compare("b", ab, nb, cfg.tol, cfg.atol, kb))
    return GradcheckReport(config=cfg, inputs=inputs, params=params, seconds=seconds)


def run(cfg: GradcheckConfig, dataset: Dataset | None = None) -> GradcheckReport:
    """The check of ``cfg`` on the first ``cfg.n`` training images of ``dataset`` (normalised as in
    training, by the whole training split's statistics), or on random inputs when it is None."""
    if dataset is None:
        W, b, X, y = random_problem(cfg)
        return check(W, b, X, y, cfg, "random")
    X, y, _ = training_sample(dataset, SplitSpec(), cfg.n)
    W, b, _ = initial_params(cfg)
    return check(W, b, X[:, : cfg.dims], y, cfg, str(dataset.folder))


# ---------------------------------------------------------------------------------------------
# The result on disk: one JSON document, outputs/gradcheck-LOSS.json by default
# ---------------------------------------------------------------------------------------------


def default_path(loss: str) -> Path:
    """Where the check of ``loss`` is written unless told otherwise: one file per loss."""
    return Path("outputs") / f"{KIND}-{loss}.json"


def command(cfg: GradcheckConfig, random: bool) -> str:
    """The command line that repeats the check of ``cfg``: the values that differ from the
    defaults (the loss first), and ``--random`` for random inputs."""
    default = GradcheckConfig()
    words = ["cifarlin", "gradcheck"]
    for name, flag in FLAGS.items():
        value = getattr(cfg, name)
        if value != getattr(default, name):
            words += [flag, _number(value) if isinstance(value, float) else str(value)]
    return shlex.join(words + (["--random"] if random else []))


def _number(x: float) -> str:
    """``x`` as a user would type it (0.1, 1e-06), and exactly: repr's digits where %g's lose some."""
    return f"{x:g}" if float(f"{x:g}") == x else repr(x)


def document(
    report: GradcheckReport, dataset: Dataset | None, created: datetime | None = None
) -> dict[str, Any]:
    """The file's document: what ``--json`` prints (``report.to_dict()``) after its provenance:
    the version, the time (``created``, now by default), the command that repeats it, the
    arithmetic and the data folder (None for random inputs)."""
    when = created if created is not None else datetime.now(UTC)
    data = None
    if dataset is not None:
        data = {"folder": os.path.abspath(dataset.folder), "format": dataset.format}
    return {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "cifarlin_version": __version__,
        "created": when.astimezone(UTC).isoformat(timespec="seconds"),
        "command": command(report.config, dataset is None),
        "arithmetic": dict(machine.arithmetic()),
        "data": data,
        **report.to_dict(),
    }


def check_out(path: Path, loss: str) -> None:
    """Refuse, before the check of ``loss`` runs, a ``path`` its result cannot be written to: a
    usage error naming it (a name too long, a folder there, a file where a folder of it should be)."""
    check_file_path(Path(path), "out", default_path(loss).name)


def save_result(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` as JSON (NaN as null), atomically, creating its folder; a failure
    is one :class:`WriteError` naming the path, the cause and the way round it."""
    path = Path(path)
    try:
        make_folder(path.parent, "the folder of the result")
        write_text(path, json.dumps(json_ready(doc), indent=2, allow_nan=False) + "\n")
    except WriteError as e:
        raise WriteError(f"{e}; write it elsewhere with out=FILE, or not at all with no_save=True") from None


def read_result(path: Path) -> dict[str, Any]:
    """The document of a result file, checked: a JSON object of kind gradcheck whose W and b each
    hold the statistics, counts and verdict; anything else is one :class:`ModelFileError` naming
    ``path`` and what is wrong."""
    path = Path(path)
    doc = _parse(path, _read_capped(path))
    if not isinstance(doc, dict):
        raise _bad(path, f"a JSON {_json_type(doc)}, not a {KIND} result (an object)")
    if doc.get("kind") != KIND:
        raise _bad(path, f"kind {doc.get('kind')!r}, not {KIND!r}: not a result of cifarlin gradcheck")
    version = doc.get("format_version")
    if type(version) is not int or version > FORMAT_VERSION:
        raise _bad(path, f"format_version {version!r}: this cifarlin reads {FORMAT_VERSION}")
    if type(doc.get("pass")) is not bool:
        raise _bad(path, "no verdict: 'pass' is not true or false")
    for name in ("W", "b"):
        entry = doc.get(name)
        if not isinstance(entry, dict):
            raise _bad(path, f"no entry {name!r} (the statistics of {name})")
        for key in (*PARAM_NUMBERS, *PARAM_COUNTS, "pass"):
            if key not in entry:
                raise _bad(path, f"{name} has no {key!r}")
        for key in PARAM_NUMBERS:
            if entry[key] is not None and type(entry[key]) not in (int, float):
                raise _bad(path, f"{name}.{key} is {_json_type(entry[key])}, not a number or null")
        for key in PARAM_COUNTS:
            if type(entry[key]) is not int or entry[key] < 0:
                raise _bad(path, f"{name}.{key} is {entry[key]!r}, not a count")
        if type(entry["pass"]) is not bool:
            raise _bad(path, f"{name}.pass is {entry['pass']!r}, not true or false")
    return doc


def _read_capped(path: Path) -> bytes:
    """The bytes of the regular file ``path``, refused beyond :data:`MAX_RESULT_BYTES` before
    they are read (and read no further than that, should it grow meanwhile)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _bad(path, "is a folder" if stat.S_ISDIR(st.st_mode) else "is not a regular file")
        if st.st_size > MAX_RESULT_BYTES:
            raise _too_big(path, st.st_size)
        with open(path, "rb") as f:
            raw = f.read(MAX_RESULT_BYTES + 1)
    except FileNotFoundError:
        raise _bad(path, "no such file; cifarlin gradcheck writes it") from None
    except OSError as e:
        raise _bad(path, f"cannot be read ({e.strerror or e})") from None
    if len(raw) > MAX_RESULT_BYTES:
        raise _too_big(path, len(raw))
    return raw


def _parse(path: Path, raw: bytes) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=refuse)
    except UnicodeDecodeError:
        raise _bad(path, "not JSON (not UTF-8 text)") from None
    except ValueError as e:
        raise _bad(path, f"not JSON ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise _bad(path, "not JSON (nested too deeply)") from None


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _too_big(path: Path, size: int) -> ModelFileError:
    return _bad(path, f"{size:,} bytes, more than a {KIND} result ever holds ({MAX_RESULT_BYTES:,} bytes)")


def _bad(path: Path, why: str) -> ModelFileError:
    return ModelFileError(f"{path}: {why}")
