"""Every file a run writes records the arithmetic that computed it (NumPy, BLAS library, version
and kernel), and evaluate and runs show it: the last bits of a run depend on the BLAS kernel, and
a chaotic setting turns them into other accuracies."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from cifarlin.cli import app
from cifarlin.store import checkpoint, machine
from cli_helpers import train


@pytest.fixture(scope="module")
def run(tiny_py, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("m") / "run"
    train(tiny_py, out, "--epochs", "2", "--batch-size", "10", "-q", "--no-plots")
    return out


def test_this_machine_is_described():
    a = machine.arithmetic()
    assert set(a) == set(machine.KEYS)
    import numpy as np
    from threadpoolctl import threadpool_info

    assert a["numpy"] == np.__version__
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    assert (a["blas"], a["blas_version"], a["blas_kernel"]) == (
        (blas[0]["internal_api"], blas[0]["version"], blas[0]["architecture"]) if blas else ("", "", "")
    )


def test_every_run_file_records_it(run):
    for name in ("model.h5", "checkpoint.h5"):
        assert checkpoint.load_snapshot(run / name).arithmetic == machine.arithmetic()
    assert checkpoint.load_history(run / "history.h5").arithmetic == machine.arithmetic()


def test_evaluate_and_runs_show_it(run, tiny_py):
    r = CliRunner().invoke(app, ["evaluate", str(run), "--data-dir", str(tiny_py), "--json", "-q"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["arithmetic"] == machine.arithmetic() == doc["evaluated_with"]
    r = CliRunner().invoke(app, ["evaluate", str(run), "--data-dir", str(tiny_py)])
    assert r.exit_code == 0, r.output
    assert f"trained with {machine.describe(machine.arithmetic())}\n" in r.stdout
    assert "evaluated with" not in r.stdout  # the same arithmetic: said once
    r = CliRunner().invoke(app, ["runs", str(run.parent), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["runs"][0]["arithmetic"] == machine.arithmetic()


def test_another_machines_and_an_old_file(run, tiny_py, tmp_path):
    """A model from an AVX-512 machine says so beside this machine's; a file written before the
    record existed says that; a forged record keeps only short texts of the known keys."""
    other = tmp_path / "other.h5"
    other.write_bytes((run / "model.h5").read_bytes())
    kernel = "Sandybridge" if machine.arithmetic()["blas_kernel"] == "SkylakeX" else "SkylakeX"
    theirs = {**machine.arithmetic(), "blas_kernel": kernel, "evil": "x", "numpy": "9" * 100}
    with h5py.File(other, "a") as f:
        f.attrs["arithmetic"] = json.dumps(theirs)
    snap = checkpoint.load_snapshot(other)
    assert snap.arithmetic == {k: v for k, v in theirs.items() if k in machine.KEYS and k != "numpy"}
    theirs["numpy"] = machine.arithmetic()["numpy"]
    with h5py.File(other, "a") as f:
        f.attrs["arithmetic"] = json.dumps(theirs)
    r = CliRunner().invoke(app, ["evaluate", str(other), "--data-dir", str(tiny_py)])
    assert r.exit_code == 0, r.output
    assert f"({kernel} kernels); evaluated with " in r.stdout
    old = tmp_path / "old.h5"
    old.write_bytes((run / "model.h5").read_bytes())
    with h5py.File(old, "a") as f:
        del f.attrs["arithmetic"]
    assert checkpoint.load_snapshot(old).arithmetic == {}
    r = CliRunner().invoke(app, ["evaluate", str(old), "--data-dir", str(tiny_py)])
    assert (
        "the NumPy and BLAS that trained it are not recorded (an older file); evaluated with NumPy"
        in r.stdout
    )
