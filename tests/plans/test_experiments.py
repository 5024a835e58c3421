"""The comparison table of several runs (``summary.md``), read back cell by cell and compared with
each run's own numbers: its files on disk, and an independent evaluation of its model. Each
test's docstring names the bug it catches."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from cifar_files import NAMES, batch_dict, py2_pickle
from cifarlin.core.config import TrainConfig
from cifarlin.core.history import History, TrainState
from cifarlin.core.model import Metrics
from cifarlin.data import cifar as data
from cifarlin.plans import experiments
from cifarlin.work.runs import Outcome

HEADER = [
    "setting",
    "lambda",
    "eta",
    "epochs",
    "batch",
    "seed",
    "best val epoch",
    "val acc",
    "test acc",
    "original",
    "difference",
]
#: The original work's test accuracies (its report, quoted in the README), per setting.
ORIGINAL = {1: "0.3069", 2: "0.3898", 3: "0.3924", 4: "0.3763"}


def table_rows(markdown: str) -> list[dict[str, str]]:
    """The rows of the one markdown table in ``markdown``, as {column: cell text}."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    assert cells[0] == HEADER
    assert set("".join(cells[1])) <= set("-")  # the |---|---| line
    rows = [dict(zip(HEADER, c, strict=True)) for c in cells[2:]]
    return rows


def write_noisy_dataset(folder: Path, n: int = 50) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A python-version dataset hard enough that nothing reaches 100%: class templates under
    heavy noise. Returns the raw (images, labels) of every batch, by file name."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(17)
    templates = rng.integers(40, 216, size=(10, 3072))
    batches = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        labels = rng.permutation(np.arange(n) % 10)
        images = np.clip(templates[labels] + rng.normal(0, 300, (n, 3072)), 0, 255).astype(np.uint8)
        (folder / name).write_bytes(py2_pickle(batch_dict(images, labels, name)))
        batches[name] = images, labels
    (folder / "batches.meta").write_bytes(py2_pickle({b"label_names": [s.encode() for s in NAMES]}))
    return batches


def first_max_epoch(values) -> int:
    """1-based epoch of the highest value, the earliest on ties, by a plain loop."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best + 1


@pytest.fixture(scope="module")
def four_settings(tmp_path_factory):
    """The four reference settings, 6 epochs of batch 10 in float64, run by run_plan."""
    root = tmp_path_factory.mktemp("plan")
    batches = write_noisy_dataset(root / "cifar-10-batches-py")
    out = root / "outputs"
    overrides = {"epochs": 6, "batch_size": 10, "dtype": "float64"}
    plan = experiments.plan_runs("all", overrides, out=out)
    dataset = data.Dataset(root / "cifar-10-batches-py", "python")
    experiments.run_plan(plan, dataset, figures=False, compare=True)
    return out, batches


def test_summary_table_cells_are_each_runs_own_numbers(four_settings):
    """Catches: the "test acc" column filled with the validation accuracy, the best epoch taken
    from the training accuracy (or the last epoch, or the latest of tied epochs), the final val
    acc taken from the best epoch, configuration columns shifted or swapped, rows out of order,
    and a summary.json that disagrees with the files.

    Every expected value comes from the run folder itself: the configuration and test accuracy
    of model.h5, the validation curve of history.h5, and the model's test accuracy recomputed
    from its weights and the raw test images.
    """
    out, batches = four_settings
    rows = table_rows((out / "summary.md").read_text())
    assert [r["setting"] for r in rows] == ["1", "2", "3", "4"]
    test_images, test_labels = batches["test_batch"]
    saw = {"test differs from val": False, "train and val disagree on the best epoch": False}
    for setting, row in enumerate(rows, start=1):
        folder = out / f"setting-{setting}"
        with h5py.File(folder / "model.h5", "r") as f:
            a = dict(f.attrs)
            W, b, mean, std = (f[k][()] for k in ("W", "b", "mean", "std"))
        with h5py.File(folder / "history.h5", "r") as f:
            val_acc, train_acc = f["val_acc"][()].tolist(), f["train_acc"][()].tolist()
        S = ((test_images / 255 - mean) / std) @ W.T + b  # the README's recipe, float64
        top2 = np.sort(S, axis=1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0]).min() > 1e-9  # unambiguous predictions
        test_acc = float(np.mean(S.argmax(axis=1) == test_labels))
        assert a["test_acc"] == test_acc
        expected = {
            "setting": str(setting),
            "lambda": float(a["lam"]),
            "eta": float(a["eta"]),
            "epochs": "6",
            "batch": "10",
            "seed": "0",
            "best val epoch": str(first_max_epoch(val_acc)),
            "val acc": f"{val_acc[-1]:.4f}",
            "test acc": f"{test_acc:.4f}",
            "original": ORIGINAL[setting],
            "difference": "(not comparable)",  # 6 epochs of batch 10 are not the reference setting
        }
        got = {**row, "lambda": float(row["lambda"]), "eta": float(row["eta"])}
        assert got == expected, f"the row of setting {setting}"
        assert (a["lam"], a["eta"]) == {1: (0, 0.1), 2: (0, 0.001), 3: (0.1, 0.001), 4: (1, 0.001)}[setting]
        saw["test differs from val"] |= expected["test acc"] != expected["val acc"]
        saw["train and val disagree on the best epoch"] |= first_max_epoch(train_acc) != first_max_epoch(
            val_acc
        )
        s = json.loads((out / "summary.json").read_text())[setting - 1]
        assert s["setting"] == setting and s["test"]["accuracy"] == test_acc
        assert s["val"]["accuracy"] == val_acc[-1] and s["best_epoch"] == first_max_epoch(val_acc)
    assert all(saw.values()), saw  # the data make the mix-ups visible


def outcome(setting, val_acc, train_acc, test_acc) -> Outcome:
    h = History()
    for va, ta in zip(val_acc, train_acc, strict=True):
        h.append(Metrics(1.9, 1.8, ta), Metrics(2.0, 1.9, va), 0.1, 0.001)
    cfg = TrainConfig.for_setting(setting) if setting is not None else TrainConfig(lam=0.25, eta=0.002)
    state = TrainState(np.zeros((10, 3072), np.float32), np.zeros(10, np.float32), len(h), h, {})
    return Outcome(Path(f"out/{setting}"), cfg, state, Metrics(1.7, 1.6, test_acc), 0, 1.0, 0.1)


def test_summary_of_hand_made_runs():
    """Catches: test and val accuracy swapped, the best epoch from the training curve or the
    latest of ties, the difference's sign, units or rounding, a difference or an original number
    for a run that is not a reference setting, and the setting column for a run without one."""
    runs = [
        # setting 2 as published: val peaks at epoch 2, ties at 4; training peaks at epoch 5
        outcome(2, [0.30, 0.39, 0.37, 0.39, 0.38], [0.31, 0.40, 0.42, 0.44, 0.45], 0.3853),
        outcome(3, [0.36, 0.35], [0.50, 0.40], 0.4000),
        outcome(None, [0.10, 0.20, 0.15], [0.2, 0.3, 0.4], 0.2222),
    ]
    summaries = [o.summary() for o in runs]
    assert [s.best_epoch for s in summaries] == [2, 1, 2]
    assert [s.best_val_accuracy for s in summaries] == [0.39, 0.36, 0.20]
    rows = table_rows(experiments.summary_markdown(summaries, "/data"))
    assert rows == [
        {
            "setting": "2",
            "lambda": "0",
            "eta": "0.001",
            "epochs": "40",
            "batch": "100",
            "seed": "0",
            "best val epoch": "2",
            "val acc": "0.3800",
            "test acc": "0.3853",
            "original": "0.3898",
            "difference": "-0.45 pt",
        },
        {
            "setting": "3",
            "lambda": "0.1",
            "eta": "0.001",
            "epochs": "40",
            "batch": "100",
            "seed": "0",
            "best val epoch": "1",
            "val acc": "0.3500",
            "test acc": "0.4000",
            "original": "0.3924",
            "difference": "+0.76 pt",
        },
        {
            "setting": "-",
            "lambda": "0.25",
            "eta": "0.002",
            "epochs": "40",
            "batch": "100",
            "seed": "0",
            "best val epoch": "2",
            "val acc": "0.1500",
            "test acc": "0.2222",
            "original": "",
            "difference": "(not comparable)",
        },
    ]
