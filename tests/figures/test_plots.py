"""cifarlin visualize and the figures train writes: they open, have the right size, show something."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest

from cifarlin.cli import app

pytestmark = pytest.mark.slow  # every test here draws figures

matplotlib = pytest.importorskip("matplotlib")
from matplotlib import image as mpimg  # noqa: E402

TINY = ["--batch-size", "10", "--epochs", "3"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_py):
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("viz") / "run"
    r = CliRunner().invoke(
        app, ["train", "--setting", "4", "--out", str(out), "--data-dir", str(tiny_py), *TINY, "--quiet"]
    )
    assert r.exit_code == 0, r.output
    return out


def montage_tiles(img: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of each image tile in a montage, left to right: the columns
    that are not background all the way down the band of rows that mostly are not."""
    content = (img[..., :3] < 0.95).any(axis=2)  # not white
    band = np.flatnonzero(content.mean(axis=1) > 0.5)
    top, bottom = int(band[0]), int(band[-1]) + 1
    assert np.array_equal(band, np.arange(top, bottom))  # one band of tiles
    full = content[top:bottom].mean(axis=0) > 0.9
    edges = np.flatnonzero(np.diff(np.r_[0, full.astype(int), 0]))
    return [(top, bottom, int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def colours(path) -> int:
    img = mpimg.imread(path)
    return len(np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0))


def test_train_writes_curves_and_montage(run_dir):
    for name, size in (("curves.png", (735, 1890)), ("montage.png", (285, 1950))):
        img = mpimg.imread(run_dir / name)
        assert img.shape[:2] == size
        assert colours(run_dir / name) > 50


def test_visualize_all_kinds(runner, run_dir, tiny_py, tmp_path):
    r = runner.invoke(
        app,
        [
            "visualize",
            str(run_dir),
            "--out",
            str(tmp_path),
            "--data-dir",
            str(tiny_py),
            "--json",
            "--dpi",
            "100",
            "--n",
            "10",
        ],
    )
    assert r.exit_code == 0, r.output
    files = json.loads(r.stdout)["files"]
    assert [p.split("/")[-1] for p in files] == [
        "curves.png",
        "montage.png",
        "confusion-test.png",
        "samples-test.png",
        "probs-test.png",
    ]
    sizes = {
        "curves.png": (490, 1260),
        "montage.png": (190, 1300),
        "confusion-test.png": (720, 950),
        "samples-test.png": (440, 1160),
        "probs-test.png": (380, 1000),
    }
    for path in files:
        name = path.split("/")[-1]
        img = mpimg.imread(path)
        assert img.shape[:2] == sizes[name], name
        assert colours(path) > 20, name
    assert all(f"wrote {p}" in r.stderr for p in files)


@pytest.mark.parametrize("fmt", ["pdf", "svg"])
def test_vector_formats(runner, run_dir, tmp_path, fmt):
    r = runner.invoke(
        app, ["visualize", str(run_dir), "--what", "curves", "--format", fmt, "--out", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    path = tmp_path / f"curves.{fmt}"
    raw = path.read_bytes()
    if fmt == "pdf":
        assert raw.startswith(b"%PDF-") and raw.rstrip().endswith(b"%%EOF") and len(raw) > 5000
    else:
        root = ET.fromstring(raw)
        assert root.tag.endswith("svg") and len(list(root.iter())) > 100


def test_model_file_alone(runner, run_dir, tmp_path, tiny_py):
    r = runner.invoke(
        app,
        [
            "visualize",
            str(run_dir / "model.h5"),
            "--what",
            "confusion",
            "--split",
            "val",
            "--out",
            str(tmp_path),
            "--data-dir",
            str(tiny_py),
        ],
    )
    assert r.exit_code == 0, r.output
    # Catches: the figure drawn at another size or resolution than the default 150 dpi of a
    # 9.5 x 7.2 inch figure, or an empty canvas.
    path = tmp_path / "confusion-val.png"
    assert mpimg.imread(path).shape[:2] == (int(7.2 * 150), int(9.5 * 150))
    assert colours(path) > 20


def test_montage_channel_layout():
    from cifarlin.figures import images

    W = np.zeros((10, 3072))
    W[0, :1024] = 1.0  # class 0: only the red block
    W[1, 1024:2048] = np.linspace(0, 1, 1024)  # class 1: a green ramp, row-major
    imgs = images.weight_images(W)
    assert imgs.shape == (10, 32, 32, 3)
    assert np.all(imgs[0] == [1.0, 0.0, 0.0])
    assert imgs[1, 0, 0, 1] == 0 and imgs[1, 31, 31, 1] == 1 and imgs[1, 0, 1, 1] > imgs[1, 0, 0, 1]
    assert imgs[1, 1, 0, 1] > imgs[1, 0, 31, 1]  # row-major: next row is later
    fig = images.montage(W, [f"c{i}" for i in range(10)], "test")
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    w = rgb.shape[1]
    first = rgb[:, : w // 10]
    red = (first[..., 0] > 230) & (first[..., 1] < 25) & (first[..., 2] < 25)
    assert red.sum() > 0.3 * first.shape[0] * first.shape[1] * 0.5  # the first tile is red
    rest = rgb[:, w // 10 :]
    assert ((rest[..., 0] > 230) & (rest[..., 1] < 25) & (rest[..., 2] < 25)).sum() == 0
    matplotlib.pyplot.close(fig)


def test_bad_inputs(runner, tmp_path, run_dir):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    r = runner.invoke(app, ["visualize", str(empty)])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "no history.h5" in r.stderr
    r = runner.invoke(app, ["visualize", str(empty), "--what", "montage"])
    assert r.exit_code == 1 and "no model.h5 or checkpoint.h5" in r.stderr
    bogus = tmp_path / "model.h5"
    bogus.write_text("not a model")
    r = runner.invoke(app, ["visualize", str(bogus), "--what", "montage"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and str(bogus) in r.stderr
    r = runner.invoke(app, ["visualize", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "no such file or folder" in r.stderr
    r = runner.invoke(app, ["visualize", str(run_dir), "--dpi", "0"])
    assert r.exit_code == 2 and "--dpi 0" in r.stderr
    r = runner.invoke(app, ["visualize", str(run_dir), "--format", "gif"])
    assert r.exit_code == 2


def test_setting_all_comparison_figure(runner, tiny_py, tmp_path):
    r = runner.invoke(
        app,
        [
            "train",
            "--setting",
            "all",
            "--out",
            str(tmp_path),
            "--data-dir",
            str(tiny_py),
            "--batch-size",
            "10",
            "--epochs",
            "2",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    img = mpimg.imread(tmp_path / "settings.png")
    # 12 inches wide at 150 dpi; 0.95 inch of title and legend, then 4.05 inches a run (4 runs)
    assert img.shape[:2] == (int(150 * (0.95 + 4 * 4.05)), 1800) and colours(tmp_path / "settings.png") > 100


def test_a_model_file_alone_draws_what_it_can(runner, run_dir, tmp_path, tiny_py):
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "m.h5").write_bytes((run_dir / "model.h5").read_bytes())
    r = runner.invoke(app, ["visualize", str(alone / "m.h5"), "--data-dir", str(tiny_py), "--json"])
    assert r.exit_code == 0, r.output
    assert [p.split("/")[-1] for p in json.loads(r.stdout)["files"]] == [
        "montage.png",
        "confusion-test.png",
        "samples-test.png",
        "probs-test.png",
    ]
    assert "no curves" in r.stderr
    # Catches: a montage of fewer (or blank) tiles, tiles out of class order, the weights of
    # another model, and weights scaled over all of W instead of tile by tile. The montage is a
    # 13 x 1.9 inch figure at 150 dpi: ten square tiles side by side, each the model's 32 x 32
    # weights in the channel layout of CIFAR-10 (1024 red, 1024 green, 1024 blue), scaled to [0, 1].
    img = mpimg.imread(alone / "montage.png")[..., :3].astype(np.float64)
    assert img.shape[:2] == (int(1.9 * 150), 13 * 150)
    tiles = montage_tiles(img)
    assert len(tiles) == 10
    with h5py.File(alone / "m.h5", "r") as f:
        W = f["W"][()].astype(np.float64)
    expected = W.reshape(10, 3, 32, 32).transpose(0, 2, 3, 1)  # (class, row, column, channel)
    lo, hi = expected.min(axis=(1, 2, 3), keepdims=True), expected.max(axis=(1, 2, 3), keepdims=True)
    expected = (expected - lo) / (hi - lo)
    for k, (top, bottom, left, right) in enumerate(tiles):
        assert abs((bottom - top) - (right - left)) <= 2, f"tile {k} is not square"
        ys = (top + (np.arange(32) + 0.5) * (bottom - top) / 32).astype(int)  # cell centres
        xs = (left + (np.arange(32) + 0.5) * (right - left) / 32).astype(int)
        error = np.abs(img[np.ix_(ys, xs)] - expected[k]).max()  # img: (32, 32, 3) cell colours
        assert error < 1.5 / 255, f"tile {k}: off by up to {error:.3f}"  # PNG keeps 8 bits a channel


def test_visualize_out_must_be_a_folder(runner, run_dir, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = runner.invoke(app, ["visualize", str(run_dir), "--what", "montage", "--out", str(f)])
    assert r.exit_code == 2 and "--out" in r.stderr and r.stderr.count("\n") == 1


def test_a_failed_visualize_leaves_no_folder(runner, run_dir, tmp_path):
    r = runner.invoke(
        app,
        [
            "visualize",
            str(run_dir),
            "--what",
            "confusion",
            "--out",
            str(tmp_path / "new"),
            "--data-dir",
            str(tmp_path / "nodata"),
            "--no-download",
        ],
    )
    assert r.exit_code == 1 and not (tmp_path / "new").exists()


def _all_tick_labels(fig) -> list[str]:
    """Every tick label drawn on every axes of ``fig`` (major and minor, both axes, colour bars)."""
    fig.canvas.draw()
    return [
        t.get_text()
        for ax in fig.axes
        for axis in (ax.xaxis, ax.yaxis)
        for minor in (False, True)
        for t in axis.get_ticklabels(minor=minor)
        if t.get_text()
    ]


@pytest.mark.parametrize(
    ("lam", "eta"),
    [
        ([1e-4, 3e-3, 0.02, 0.4], [0.0013, 0.004, 0.03, 0.07]),  # lambda and eta on log axes
        ([0.0, 0.0, 0.0, 0.0], [0.0013, 0.004, 0.005, 0.008]),  # eta within a decade: minor labels
        ([0.0, 0.01, 0.1, 0.0], [0.002, 0.004, 0.03, 0.09]),  # lambda = 0 among them: symlog
    ],
)
@pytest.mark.parametrize("grid", [True, False])
def test_sweep_figure_ticks_are_plain_and_its_colours_honest(lam, eta, grid):
    """Bug: a random search's eta axis printed raw '$\\mathdefault{3\\times10^{-3}}$' minor labels
    on top of each other, and a 1.6-point spread of accuracy ran the whole colour scale."""
    from cifarlin.figures import common, plots

    common.use_backend()
    acc = [0.300, 0.310, 0.316, 0.305]
    fig = plots.sweep_figure(lam, eta, acc, ["done"] * 4, 2, grid=grid, title="t")
    labels = _all_tick_labels(fig)
    assert labels and not any("$" in t or "mathdefault" in t for t in labels), labels
    ax = fig.axes[0]
    if not grid and len(set(lam)) == 1:  # a decade of eta has a major tick or none: minors say where
        assert [t.get_text() for t in ax.xaxis.get_ticklabels(minor=True) if t.get_text()]
    norm = ax.collections[0].norm if not grid else ax.images[0].norm
    assert norm.vmax - norm.vmin >= 0.1 - 1e-9 and norm.vmin <= 0.300 and norm.vmax >= 0.316
    shown = {t.get_text() for t in ax.texts}
    assert {"0.300", "0.310", "0.316", "0.305"} <= shown  # the values themselves
    matplotlib.pyplot.close(fig)


def test_sweep_colour_range_stays_in_zero_to_one():
    from cifarlin.figures import plots

    assert plots.colour_range(np.array([0.97, 0.99])) == pytest.approx((0.9, 1.0))
    assert plots.colour_range(np.array([0.01, np.nan])) == pytest.approx((0.0, 0.1))
    assert plots.colour_range(np.array([0.1, 0.5])) == pytest.approx((0.1, 0.5))


@pytest.fixture
def drawn(monkeypatch):
    """The figures a command saves, by file name, drawn (their text laid out) before saving."""
    from cifarlin.figures import common

    figures, real_save = {}, common.save

    def save(fig, path, *args, **kwargs):
        fig.canvas.draw()
        figures[path.name] = fig
        return real_save(fig, path, *args, **kwargs)

    monkeypatch.setattr(common, "save", save)
    return figures


def _texts(fig) -> list:
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_text() and t.get_visible()]


def test_comparison_names_and_describes_each_run(runner, tiny_py, tmp_path, drawn, monkeypatch):
    """Bug: rows not named by their folder, a hinge run titled like any other, the class names gone
    from every row when the first row had no weight images, the legend alone at the bottom left,
    tiny fonts, and the loss from epoch 1 while curves.png starts at epoch 0."""
    from cifarlin.figures import plots

    parent = tmp_path / "runs"
    base = ["--data-dir", str(tiny_py), "--batch-size", "10", "--epochs", "2", "--quiet", "--no-plots"]
    for name, extra in (
        ("a-hinge", ["--loss", "svm"]),
        (
            "b-views",
            [
                "--augment",
                "flip,translate:1",
                "--schedule",
                "cosine",
                "--train-batches",
                "1,2",
                "--val-size",
                "20",
            ],
        ),
    ):
        r = runner.invoke(app, ["train", "--out", str(parent / name), *base, *extra])
        assert r.exit_code == 0, r.output
    real = plots.comparison

    def first_on_features(runs, class_names):  # the first row a model on features (no images)
        (name, cfg, history, W, acc), *rest = runs
        return real([(name, cfg, history, W[:, :200], acc), *rest], class_names)

    monkeypatch.setattr(plots, "comparison", first_on_features)
    r = runner.invoke(app, ["visualize", str(parent), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    fig = drawn["settings.png"]
    texts = [t.get_text() for t in _texts(fig)]
    assert any(t.startswith("a-hinge") for t in texts) and any(t.startswith("b-views") for t in texts)
    rows = [t for t in texts if "batch 10, 2 epochs" in t]
    assert len(rows) == 2 and "hinge loss" in rows[0], rows
    assert all(
        w in rows[1] for w in ("flips", "shifts of up to 1 px", "cosine schedule", "training batches 1, 2")
    )
    assert (
        texts.count("airplane") == 1 and texts.count("truck") == 1
    )  # the second row's, though the first has none
    assert any("not images" in t for t in texts)
    assert min(t.get_fontsize() for t in _texts(fig)) >= 10
    curves = [ax for ax in fig.axes if ax.get_xlabel() == "epoch"]
    assert len(curves) == 2 and all(ax.get_xlim()[0] < 0 for ax in curves)  # from epoch 0
    legend = fig.legends[0].get_window_extent()
    assert legend.y0 > max(ax.get_window_extent().y1 for ax in fig.axes)  # at the top, above every row


def _history(initial_cost: float, later: list[float]):
    from cifarlin.core.history import History
    from cifarlin.core.model import Metrics

    h = History()
    h.set_initial(Metrics(initial_cost, initial_cost, 0.1), Metrics(initial_cost, initial_cost, 0.1))
    for c in later:
        h.append(Metrics(c, c, 0.4), Metrics(c + 0.01, c + 0.01, 0.39), 1.0, 0.01)
    return h


def test_curves_keep_the_later_epochs_readable():
    """Bug: epoch 0 (cost 2.45) squashed the 1.68 to 1.82 of the later epochs into the bottom fifth."""
    from cifarlin.core.config import TrainConfig
    from cifarlin.figures import common, plots

    common.use_backend()
    fig = plots.curves(_history(2.45, [1.82, 1.75, 1.70, 1.68]), TrainConfig(epochs=4), panels=["loss"])
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert 1.6 < lo < 1.68 and 1.83 < hi < 1.95 and ax.get_xlim()[0] < 0  # epoch 0 drawn, off the edge
    assert any("epoch 0 (off scale)" in t and "2.45" in t for t in (x.get_text() for x in _texts(fig)))
    matplotlib.pyplot.close(fig)
    fig = plots.curves(_history(1.9, [1.82, 1.75, 1.70, 1.68]), TrainConfig(epochs=4), panels=["loss"])
    assert fig.axes[0].get_ylim()[1] > 1.9  # near the later epochs: shown as it is
    assert not any("off scale" in t.get_text() for t in _texts(fig))
    matplotlib.pyplot.close(fig)


def test_titles_name_what_is_not_default():
    from cifarlin.core.config import TrainConfig
    from cifarlin.figures import common

    bonus = common.run_title(TrainConfig.for_setting("bonus"), 20)
    assert all(
        w in bonus
        for w in ("setting bonus", "flips and shifts of up to 1 px", "cosine", "training batches 1-5")
    )
    feats = common.run_title(TrainConfig(features="/x/k$1.h5", solver="gd", loss="svm"))
    assert "k-means features (k\\$1.h5)" in feats and "hinge loss" in feats
    assert (
        common.run_title(TrainConfig(setting=2))
        == "setting 2: $\\lambda$ = 0, $\\eta$ = 0.001, batch 100, 40 epochs"
    )


@pytest.mark.parametrize("pick", ["errors", "first"])
def test_samples_title_says_what_was_picked(runner, run_dir, tiny_py, tmp_path, drawn, pick):
    """Bug: '0 of 12 right' over images picked for being wrong, and brackets inside brackets."""
    r = runner.invoke(
        app,
        [
            "visualize",
            str(run_dir),
            "--what",
            "samples",
            "--pick",
            pick,
            "--n",
            "4",
            "--data-dir",
            str(tiny_py),
            "--out",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 0, r.output
    title = drawn["samples-test.png"]._suptitle.get_text()
    if pick == "errors":
        assert re.match(r"\d+ errors?: misclassified test images\n", title) and "right" not in title, title
    else:
        assert title.startswith("the first 4 test images: ") and " of 4 right" in title, title
    assert not any(t.count("(") > 1 for t in title.split("\n")), title
