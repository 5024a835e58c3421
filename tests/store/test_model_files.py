"""Model files: saved and loaded exactly, and damaged, truncated or foreign ones refused in one line."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from cifarlin.cli import app
from cifarlin.core import train
from cifarlin.errors import ModelFileError
from cifarlin.store import checkpoint
from cifarlin.work import runs
from tiny_runs import cfg


def test_model_round_trip(prepared, tmp_path):
    c = cfg(lam=0.5, shuffle=True, seed=7)
    st = train.fit(c, prepared, train.init_state(c))
    snap = checkpoint.Snapshot(
        c,
        st,
        prepared.normalizer,
        prepared.class_names,
        checkpoint.DataInfo("x", "python", {"a": "b"}),
        kind="checkpoint",
    )
    checkpoint.save_snapshot(tmp_path / "c.h5", snap)
    back = checkpoint.load_snapshot(tmp_path / "c.h5")
    assert back.config == c and back.class_names == prepared.class_names
    assert np.array_equal(back.state.W, st.W) and back.state.W.dtype == np.float32
    assert np.array_equal(back.normalizer.mean, prepared.normalizer.mean)
    assert back.state.history.columns == st.history.columns
    assert back.state.rng_state == st.rng_state and back.data.checksums == {"a": "b"}


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not an HDF5 file"),
        (b"garbage" * 100, "not an HDF5 file"),
    ],
)
def test_foreign_files_give_one_line(runner, tmp_path, content, message, tiny_py):
    path = tmp_path / "m.h5"
    path.write_bytes(content)
    r = runner.invoke(app, ["evaluate", str(path), "--data-dir", str(tiny_py)])
    assert r.exit_code == 1
    line = r.stderr.strip()
    assert "\n" not in line and str(path) in line and message in line


def test_truncated_and_wrong_models(runner, tiny_py, tmp_path, prepared):
    out = tmp_path / "run"
    runs.run(cfg(epochs=1), out, prepared)
    raw = (out / "model.h5").read_bytes()
    cases = {
        "truncated.h5": raw[: len(raw) // 2],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.zeros(3)
    (tmp_path / "shape.h5").write_bytes(raw)
    with h5py.File(tmp_path / "shape.h5", "a") as f:
        del f["W"]
        f["W"] = np.zeros((10, 100))
    expect = {
        "truncated.h5": r"truncated \(\d+ of its \d+ bytes\)",
        "foreign.h5": "not a cifarlin model",
        "shape.h5": r"'W' has shape \(10, 100\)",
        "missing.h5": "no such file",
    }
    for name, message in expect.items():
        with pytest.raises(ModelFileError, match=message):
            checkpoint.load_snapshot(tmp_path / name)
        r = runner.invoke(app, ["evaluate", str(tmp_path / name), "--data-dir", str(tiny_py)])
        assert r.exit_code == 1 and r.stderr.count("\n") == 1, (name, r.stderr)
    with pytest.raises(ModelFileError, match="expected a model"):
        checkpoint.load_snapshot(out / "history.h5")


def edited_copy(src: Path, dst: Path, edit) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "a") as f:
        edit(f)
    return dst


def test_damaged_model_contents_are_refused(prepared, tmp_path):
    out = tmp_path / "run"
    runs.run(cfg(epochs=1), out, prepared)
    good = out / "checkpoint.h5"

    def nan_w(f):
        w = f["W"][()]
        w[0, 0] = np.nan
        f["W"][...] = w

    def replace(name, value):
        def edit(f):
            del f[name]
            f[name] = value

        return edit

    def huge(f):
        del f["W"]
        f.create_dataset("W", shape=(10, 10**9), dtype="f4", chunks=(1, 1024))  # nothing stored

    cases = {
        "nan.h5": (nan_w, "NaN or infinite"),
        "std.h5": (replace("std", np.zeros(3072)), "'std' holds values <= 0"),
        "dtype.h5": (replace("W", np.zeros((10, 3072), np.float16)), "'W' has type float16"),
        "w64.h5": (replace("W", np.zeros((10, 3072), np.float64)), "weights are float64"),
        "huge.h5": (huge, r"shape \(10, 1000000000\)"),
        "rng.h5": (lambda f: f.attrs.__setitem__("rng_state", '{"bit_generator": "MT19937"}'), "damaged"),
        "names.h5": (lambda f: f.attrs.__setitem__("class_names", "abc"), "damaged"),
        "two-names.h5": (
            lambda f: f.attrs.__setitem__("class_names", np.array(["a", "b"], dtype=h5py.string_dtype())),
            "damaged",
        ),
        "lam.h5": (lambda f: f.attrs.__delitem__("lam"), "no 'lam' attribute"),
        "version.h5": (lambda f: f.attrs.__setitem__("format_version", 99), "format version 99"),
        "epoch.h5": (lambda f: f.attrs.__setitem__("epoch", -3), "epoch -3"),
    }
    for name, (edit, message) in cases.items():
        path = edited_copy(good, tmp_path / name, edit)
        with pytest.raises(ModelFileError, match=message):
            checkpoint.load_snapshot(path)
