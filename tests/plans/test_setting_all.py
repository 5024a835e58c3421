"""`cifarlin train --setting all` after a failure or an interruption at any of its runs: the same
command, run again, finishes the work, bit for bit as one uninterrupted command would have, or
names exactly what to type. Each test's docstring names the bug it catches."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from cifarlin.cli import app
from cifarlin.core import train as training
from cifarlin.core.config import SETTINGS
from cifarlin.errors import DivergenceError, Terminated, WriteError
from cifarlin.plans import experiments
from cifarlin.store import checkpoint
from cifarlin.work import runs

EPOCHS = 3


def command(out: Path, data: Path, workers: str) -> list[str]:
    """The command under test, its options in the order `train` declares them (the order in which
    cifarlin names a command back)."""
    return [
        *("train", "--setting", "all", "--epochs", str(EPOCHS), "--batch-size", "10", "--shuffle"),
        *("--out", str(out), "--no-plots", "--workers", workers, "--data-dir", str(data), "--quiet"),
    ]


def typed(args: list[str]) -> str:
    return shlex.join(["cifarlin", *args])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_py) -> Path:
    """The four runs of one uninterrupted command."""
    out = tmp_path_factory.mktemp("reference")
    r = CliRunner().invoke(app, command(out, tiny_py, "1"))
    assert r.exit_code == 0, r.output
    return out


def arrays(folder: Path) -> dict[str, np.ndarray]:
    """The model's numbers and the history's curves (all but the seconds each epoch took)."""
    found = {}
    for name in ("model.h5", "history.h5"):
        with h5py.File(folder / name, "r") as f:
            for k in f:
                if isinstance(f[k], h5py.Dataset) and k != "seconds":
                    found[f"{name}/{k}"] = f[k][()]
    return found


def assert_as_reference(out: Path, reference: Path, settings=SETTINGS) -> None:
    for s in settings:
        a, b = arrays(reference / f"setting-{s}"), arrays(out / f"setting-{s}")
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k]), (s, k)


def state_on_disk(out: Path) -> dict[int, str | int]:
    """Each run of the command as it was left: 'complete', the epoch its checkpoint holds, or 0."""
    found: dict[int, str | int] = {}
    for s in SETTINGS:
        folder = out / f"setting-{s}"
        if (folder / "model.h5").exists():
            found[s] = "complete"
        elif (folder / "checkpoint.h5").exists():
            found[s] = checkpoint.load_snapshot(folder / "checkpoint.h5").state.epoch
        else:
            assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())
            found[s] = 0
    return found


def record_fits(monkeypatch) -> list[tuple[int, int]]:
    """(setting, first epoch) of each run trained from now on (by the real loop)."""
    real, calls = training.fit, []

    def fit(cfg, prepared, state, **kw):
        calls.append((cfg.setting, state.epoch))
        return real(cfg, prepared, state, **kw)

    monkeypatch.setattr(runs, "fit", fit)
    return calls


def fail_at(monkeypatch, setting: int, epoch: int, error) -> None:
    """``error()`` raised in the first batch of ``epoch`` of ``setting`` (after ``epoch - 1``
    finished epochs): where Ctrl-C, SIGTERM or a divergence lands."""
    real = runs.fit

    def fit(cfg, prepared, state, on_batch=None, **kw):
        def batch(e, j, n):
            if cfg.setting == setting and (e, j) == (epoch, 1):
                raise error()
            if on_batch is not None:
                on_batch(e, j, n)

        return real(cfg, prepared, state, on_batch=batch, **kw)

    monkeypatch.setattr(runs, "fit", fit)


def diverge_in(monkeypatch, setting: int, epoch: int) -> None:
    """The run of ``setting`` (with its own eta) diverges in ``epoch`` as a real one does: its
    weights found NaN at the end of that epoch, once the epoch before it is done (and saved)."""
    real = runs.fit

    def fit(cfg, prepared, state, on_epoch=None, on_batch=None, **kw):
        if (cfg.setting, cfg.eta) != (setting, SETTINGS[setting]["eta"]):
            return real(cfg, prepared, state, on_epoch=on_epoch, on_batch=on_batch, **kw)

        def diverged():
            return DivergenceError(f"training diverged in epoch {epoch}: the weights became NaN", epoch)

        def batch(e, j, n):
            if (e, j) == (epoch, 1) == (1, 1):
                raise diverged()
            on_batch(e, j, n)

        def epoch_done(st):
            on_epoch(st)
            if st.epoch == epoch - 1:
                raise diverged()

        return real(cfg, prepared, state, on_epoch=epoch_done, on_batch=batch, **kw)

    monkeypatch.setattr(runs, "fit", fit)


def then_again(runner, monkeypatch, args, out, reference) -> None:
    """The same command again: exit 0, each run continued from where it was left (complete ones
    not trained again), and the four as one uninterrupted command's, bit for bit."""
    left = state_on_disk(out)
    stamps = {
        s: (out / f"setting-{s}" / "model.h5").stat().st_mtime_ns for s in left if left[s] == "complete"
    }
    calls = record_fits(monkeypatch)
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert sorted(calls) == sorted((s, e) for s, e in left.items() if e != "complete")
    for s, stamp in stamps.items():
        assert (out / f"setting-{s}" / "model.h5").stat().st_mtime_ns == stamp
    assert_as_reference(out, reference)
    assert (out / "summary.md").is_file()


STOPS = [(1, 1), (2, 2), (3, 3), (4, 1), (4, 3)]  # (setting, epoch): its first batch


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(("setting", "epoch"), STOPS)
def test_the_same_command_continues_after_ctrl_c(
    runner, tiny_py, tmp_path, monkeypatch, reference, workers, setting, epoch
):
    """Bug: after Ctrl-C, the same command refused the stopped run's folder ('already holds a
    run'), the resume command lost the command's options (the runs not yet started began with
    other settings), and two runs stopped side by side printed it twice."""
    args = command(tmp_path, tiny_py, workers)
    fail_at(monkeypatch, setting, epoch, KeyboardInterrupt)
    r = runner.invoke(app, args)
    assert r.exit_code == 130, r.output
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("Error: interrupted: ") and "Traceback" not in r.output
    folder = tmp_path / f"setting-{setting}"
    kept = f"{folder / 'checkpoint.h5'} holds epoch {epoch - 1}" if epoch > 1 else "nothing was saved"
    assert f"setting-{setting} in epoch {epoch} (" in line and kept in line
    left = state_on_disk(tmp_path)
    assert left[setting] == epoch - 1
    if any(e != 0 for e in left.values()):
        assert line.endswith(f"; resume with '{typed(args)}'") and line.count("cifarlin train") == 1
    else:
        assert "resume with" not in line
    if workers == "1":
        assert all(left[s] == "complete" for s in SETTINGS if s < setting)
        assert all(left[s] == 0 for s in SETTINGS if s > setting)
    then_again(runner, monkeypatch, shlex.split(typed(args))[1:], tmp_path, reference)


@pytest.mark.parametrize(("setting", "epoch", "workers"), [(2, 2, "1"), (3, 1, "2"), (4, 3, "2")])
def test_the_same_command_continues_after_sigterm(
    runner, tiny_py, tmp_path, monkeypatch, reference, setting, epoch, workers
):
    """Bug: SIGTERM (a scheduler's stop) left the same traps as Ctrl-C."""
    args = command(tmp_path, tiny_py, workers)
    fail_at(monkeypatch, setting, epoch, Terminated)
    r = runner.invoke(app, args)
    assert r.exit_code == 143, r.output
    line = r.stderr.strip()
    assert line.startswith("Error: terminated (SIGTERM): ") and f"setting-{setting} in epoch {epoch}" in line
    assert line.endswith(f"; resume with '{typed(args)}'") and line.count("cifarlin train") == 1
    then_again(runner, monkeypatch, args, tmp_path, reference)


def fail_writing(monkeypatch, setting: int, nth: int) -> None:
    """The ``nth`` file the run of ``setting`` writes (a checkpoint per epoch, then model.h5)
    cannot be written."""
    real, written = runs.save_snapshot, []

    def save(path, snap):
        if path.parent.name == f"setting-{setting}":
            written.append(path)
            if len(written) == nth:
                raise WriteError(f"{path}: cannot be written (No space left on device)")
        real(path, snap)

    monkeypatch.setattr(runs, "save_snapshot", save)


@pytest.mark.parametrize(
    ("setting", "nth", "workers"), [(1, 1, "1"), (2, 2, "2"), (3, EPOCHS + 1, "1"), (4, EPOCHS + 1, "2")]
)
def test_the_same_command_continues_after_a_failed_write(
    runner, tiny_py, tmp_path, monkeypatch, reference, setting, nth, workers
):
    """Bug: a run that could not write its checkpoint or its model (a full disk) left a folder
    that the same command, once the disk had room, refused."""
    args = command(tmp_path, tiny_py, workers)
    fail_writing(monkeypatch, setting, nth)
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    line = r.stderr.strip()
    assert "\n" not in line and "Traceback" not in r.output
    assert line.startswith(f"Error: {tmp_path / f'setting-{setting}'}/") and "No space left on device" in line
    if any(e != 0 for e in state_on_disk(tmp_path).values()):
        assert line.endswith(f"; once that is fixed, resume with '{typed(args)}'")
        assert line.count("cifarlin train") == 1
    else:  # nothing kept: the same command starts afresh
        written = tmp_path / "setting-1" / "checkpoint.h5"
        assert line == f"Error: {written}: cannot be written (No space left on device); no epoch was saved"
    monkeypatch.setattr(runs, "save_snapshot", checkpoint.save_snapshot)
    then_again(runner, monkeypatch, args, tmp_path, reference)


def test_the_same_command_writes_the_comparison_a_failed_write_left_out(
    runner, tiny_py, tmp_path, monkeypatch, reference
):
    """Bug: summary.md that could not be written: the runs must not be trained again for it."""
    args = command(tmp_path, tiny_py, "2")
    real = experiments.write_text

    def full(path, text):
        if path.name == "summary.md":
            raise WriteError(f"{path}: cannot be written (No space left on device)")
        real(path, text)

    monkeypatch.setattr(experiments, "write_text", full)
    r = runner.invoke(app, args)
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        f"Error: {tmp_path / 'summary.md'}: cannot be written (No space left on device); once that is "
        f"fixed, resume with '{typed(args)}'"
    )
    monkeypatch.setattr(experiments, "write_text", real)
    then_again(runner, monkeypatch, args, tmp_path, reference)


def retry_command(out: Path, data: Path, setting: int, *shown: str) -> list[str]:
    """What a diverged run of ``command`` says to type: its setting alone with a tenth of its eta,
    into a folder of its own."""
    eta = f"{SETTINGS[setting]['eta'] / 10:g}"
    return [
        *("train", "--setting", str(setting), "--eta", eta, "--epochs", str(EPOCHS), "--batch-size", "10"),
        *("--shuffle", "--out", str(out / f"setting-{setting}-eta{eta}"), "--no-plots"),
        *("--data-dir", str(data), *shown, "--quiet"),
    ]


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(("setting", "epoch"), [(1, 1), (2, 3), (4, 2)])
def test_a_diverged_run_stays_diverged_and_blocks_no_other(
    runner, tiny_py, tmp_path, monkeypatch, reference, workers, setting, epoch
):
    """Bug: one diverged run stopped the whole command (the runs after it never trained); the
    same command then refused its folder; and what it suggested (--overwrite with other values in
    the same folder) would have made that folder 'another run' to the next --setting all."""
    args = command(tmp_path, tiny_py, workers)
    lam, eta = SETTINGS[setting]["lam"], SETTINGS[setting]["eta"]

    diverge_in(monkeypatch, setting, epoch)
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    others = [s for s in SETTINGS if s != setting]
    assert_as_reference(tmp_path, reference, others)  # the others finished, as if alone
    folder = tmp_path / f"setting-{setting}"
    kept = (
        f"{folder / 'checkpoint.h5'} holds epoch {epoch - 1}"
        if epoch > 1
        else "no epoch finished, so nothing was saved"
    )
    retry = typed(retry_command(tmp_path, tiny_py, setting))
    what = f"{folder} diverged in epoch {epoch} (--eta {eta!r}, --lam {lam!r}); {kept}"
    first = f"Error: {what}; try a smaller eta: '{retry}'"
    assert r.stderr.strip() == first
    summary = (tmp_path / "summary.md").read_text()
    rows = [ln for ln in summary.splitlines() if ln.startswith("| ")][1:]
    assert [int(row.split("|")[1]) for row in rows] == others
    assert (
        f"Not in the table:\n\n- {folder} diverged in epoch {epoch} (eta={eta!r}, lam={lam!r}); {kept}\n"
        in summary
    )

    # the same command again: the diverged run is reported, not trained again (unless it kept
    # nothing: then it diverges again), the others are reused
    calls = record_fits(monkeypatch)
    diverge_in(monkeypatch, setting, epoch)
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 1, r.output
    assert calls == ([] if epoch > 1 else [(setting, 0)])
    retry = typed(retry_command(tmp_path, tiny_py, setting, "--json"))  # its output shown alike
    first = f"Error: {what}; try a smaller eta: '{retry}'"
    again = (
        f"Error: {folder} diverged after epoch {epoch - 1} when it was trained (--eta {eta!r}, "
        f"--lam {lam!r}); not trained again; try a smaller eta: '{retry}'"
    )
    assert r.stderr.strip().splitlines()[-1] == (again if epoch > 1 else first)
    doc = json.loads(r.stdout)
    assert [s["setting"] for s in doc["runs"]] == others and all(s["reused"] for s in doc["runs"])
    assert [(f["setting"], f["diverged"], f["retry"]) for f in doc["failed"]] == [(setting, True, retry)]
    assert doc["exit_code"] == 1 and f"Error: {doc['error']}" == r.stderr.strip().splitlines()[-1]

    # what it says to type works (its smaller eta does not diverge), and leaves nothing in the
    # command's way
    r = runner.invoke(app, shlex.split(retry)[1:])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and "try a smaller eta" in r.stderr and "already holds" not in r.stderr


@pytest.mark.parametrize("name", ["checkpoint.h5", "history.h5", "model.h5"])
def test_a_run_with_a_damaged_file_names_its_fix_and_blocks_no_other(
    runner, tiny_py, tmp_path, monkeypatch, reference, name
):
    """Bug: a damaged file in one run's folder stopped the whole command, or was silently
    trained over; the fix must be one command, after which the same command finishes."""
    args = command(tmp_path, tiny_py, "1")
    if name == "model.h5":
        assert runner.invoke(app, args).exit_code == 0  # a complete run, whose model is then damaged
    else:
        fail_at(monkeypatch, 3, 3, KeyboardInterrupt)  # setting 3 stopped after two epochs
        assert runner.invoke(app, args).exit_code == 130
        monkeypatch.setattr(runs, "fit", training.fit)
    folder = tmp_path / "setting-3"
    (folder / name).write_bytes(b"not HDF5 at all" * 10)
    calls = record_fits(monkeypatch)
    r = runner.invoke(app, args)
    if name == "history.h5":  # the checkpoint says it all: resumed, the history written anew
        assert r.exit_code == 0, r.output
        assert sorted(calls) == [(3, 2), (4, 0)]
        assert_as_reference(tmp_path, reference)
        return
    assert r.exit_code == 1, r.output
    assert sorted(calls) == ([(4, 0)] if name == "checkpoint.h5" else [])
    assert_as_reference(tmp_path, reference, [1, 2, 4])
    fix = [
        *("train", "--setting", "3", "--epochs", str(EPOCHS), "--batch-size", "10", "--shuffle"),
        *("--out", str(folder), "--overwrite", "--no-plots", "--data-dir", str(tiny_py), "--quiet"),
    ]
    line = r.stderr.strip().splitlines()[-1]  # after the notes of the runs reused
    assert line.startswith(f"Error: {folder / name}: ")
    assert line.endswith(f"; train it again with '{typed(fix)}'")
    assert runner.invoke(app, fix).exit_code == 0
    then_again(runner, monkeypatch, args, tmp_path, reference)


def test_an_interrupted_overwrite_continues_without_starting_over(
    runner, tiny_py, tmp_path, monkeypatch, reference
):
    """Bug: the command that continued an interrupted --overwrite was the same --overwrite,
    which trained the runs it had finished all over again."""
    args = command(tmp_path, tiny_py, "1")
    assert runner.invoke(app, args).exit_code == 0
    fail_at(monkeypatch, 3, 2, KeyboardInterrupt)
    r = runner.invoke(app, [*args, "--overwrite"])
    assert r.exit_code == 130
    assert r.stderr.strip().endswith(f"; resume with '{typed(args)}'")  # no --overwrite: nothing in the way
    monkeypatch.setattr(runs, "fit", training.fit)
    then_again(runner, monkeypatch, args, tmp_path, reference)


def test_an_interrupted_overwrite_of_other_runs_keeps_overwrite(runner, tiny_py, tmp_path, monkeypatch):
    """Bug: after an --overwrite stopped before it reached the runs it was to replace, the
    command it named (without --overwrite) was refused."""
    base = command(tmp_path, tiny_py, "1")
    other = [*base[:4], "2", *base[5:]]  # the same runs, of 2 epochs
    assert runner.invoke(app, other).exit_code == 0
    fail_at(monkeypatch, 2, 2, KeyboardInterrupt)
    r = runner.invoke(app, [*base, "--overwrite"])
    assert r.exit_code == 130
    with_overwrite = [*base[:10], "--overwrite", *base[10:]]
    assert r.stderr.strip().endswith(f"; resume with '{typed(with_overwrite)}'")
    monkeypatch.setattr(runs, "fit", training.fit)
    assert runner.invoke(app, with_overwrite).exit_code == 0


@pytest.mark.slow
def test_ctrl_c_beside_two_runs_names_the_command_once(runner, tiny_py, tmp_path, monkeypatch):
    """Bug: a real Ctrl-C while two runs trained side by side printed the command that resumes
    them twice, once per run."""
    from processes import SLOW_CLI as code

    args = command(tmp_path, tiny_py, "2")
    args[args.index("--epochs") + 1] = "50"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not all((tmp_path / f"setting-{s}" / "checkpoint.h5").exists() for s in (1, 2)):
        assert time.monotonic() - t0 < 60 and p.poll() is None, (
            p.stderr.read() if p.poll() is not None else ""
        )
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("Error: interrupted: setting-1 in epoch ") and ", setting-2 in epoch " in line
    assert line.endswith(f"; resume with '{typed(args)}'") and line.count("cifarlin train") == 1
    left = state_on_disk(tmp_path)
    assert left[1] != "complete" and left[2] != "complete" and left[3] == left[4] == 0
    calls = record_fits(monkeypatch)
    r = runner.invoke(app, shlex.split(typed(args))[1:])
    assert r.exit_code == 0, r.output
    assert sorted(calls) == [(1, left[1]), (2, left[2]), (3, 0), (4, 0)]


def test_a_folder_of_another_run_is_refused_naming_what_differs(runner, tiny_py, tmp_path):
    """Bug: 'already holds a run' without saying how it differs (the user had to dig out its
    settings to choose between --resume, --overwrite and --out), and a refusal after some runs
    had trained."""
    folder = tmp_path / "setting-3"
    first = [
        "train",
        "--setting",
        "3",
        "--lam",
        "0",
        "--epochs",
        "4",
        "--batch-size",
        "10",
        "--out",
        str(folder),
    ]
    assert runner.invoke(app, [*first, "--no-plots", "--data-dir", str(tiny_py)]).exit_code == 0
    r = runner.invoke(app, command(tmp_path, tiny_py, "2"))
    assert r.exit_code == 1 and r.stderr.strip() == (
        f"Error: {folder} already holds a run with other settings (--lam 0 there, 0.1 asked; --epochs 4 "
        "there, 3 asked; --shuffle asked, not there): --overwrite trains every run of the command again, "
        "or --out DIR trains them in another folder"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["setting-3"]  # refused before anything trained


@pytest.mark.parametrize(
    ("there", "asked", "said"),
    [
        (
            ["--shuffle", "--val-size", "10"],
            [],
            "--shuffle there, not asked; --val-size 10 there, none asked",
        ),
        ([], ["--shuffle", "--patience", "3"], "--shuffle asked, not there; --patience 3 asked, none there"),
        (["--train-batches", "1,3"], ["--train-batches", "1,3-4", "--seed", "2"], None),
        (
            ["--loss", "svm", "--eta", "1e-05"],
            ["--loss", "svm", "--eta", "1.5e-05"],
            "--eta 1e-05 there, 1.5e-05 asked",
        ),
    ],
)
def test_each_setting_that_differs_is_named_with_its_flag(runner, tiny_py, tmp_path, there, asked, said):
    """Bug: differences named by the library's field names (val_size=...), or values shown as
    Python writes them (True, None, (1, 2)) rather than as they are typed."""
    base = ["train", "--out", str(tmp_path / "r"), "--epochs", "1", *("--batch-size", "10", "--no-plots")]
    assert runner.invoke(app, [*base, *there, "--data-dir", str(tiny_py)]).exit_code == 0
    r = runner.invoke(app, [*base, *asked, "--data-dir", str(tiny_py)])
    said = said or "--seed 0 there, 2 asked; --train-batches 1,3 there, 1,3,4 asked"
    assert r.exit_code == 1 and r.stderr.strip() == (
        f"Error: {tmp_path / 'r'} already holds a run with other settings ({said}): --overwrite replaces it, "
        "or --out DIR trains this one in another folder"
    )
