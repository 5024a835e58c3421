"""cifarlin predict: the user's own images and arrays, classified as evaluation would, and hostile
files refused one by one.

Each test names the bug it would catch.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cifar_files import make_split
from cifarlin.cli import app
from cifarlin.data import cifar as data
from cifarlin.errors import ConfigError, DataError
from cifarlin.store import checkpoint
from cifarlin.work import evaluation, predict
from cli_helpers import train
from tolerances import (
    U64,
    assert_ranked,
    assert_within,
    min_gap,
    normalised_error,
    outside,
    product_error,
    sigmoid_error,
    softmax_error,
    unit_roundoff,
)

TRAIN = ["--batch-size", "10", "--epochs", "2", "--no-plots", "--quiet"]


@pytest.fixture(scope="module")
def run(tiny_py, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "run"
    train(tiny_py, out, *TRAIN)
    return out


@pytest.fixture(scope="module")
def snap(run):
    return checkpoint.load_snapshot(run / "model.h5")


def invoke(*args: str):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def predict_json(*args: str) -> dict:
    r = invoke(*args, "--json", "--quiet")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def exact_scores(snap, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scores (n, K) of raw CIFAR rows (n, 3072), computed here in float64 from the file's own
    W, b, mean and std: (x / 255 - mean) / std @ W^T + b; and a bound (n, K) on how far the
    model's own scores (float32 for these models: predict's, evaluate's) and these can be apart:
    the model's rounding of the normalised pixels (tolerances.normalised_error, through |W|) and
    of the 3072-term product plus bias, in whatever order its BLAS kernel sums
    (tolerances.product_error), and this float64 reference's own rounding of both."""
    mean, std = snap.normalizer.mean, snap.normalizer.std
    W, b = snap.state.W.astype(np.float64), snap.state.b.astype(np.float64)
    x = (rows.astype(np.float64) / 255 - mean) / std  # (n, d)
    u = unit_roundoff(snap.state.W.dtype)
    E = product_error(snap.inputs(rows), W.T, u, b)  # the model's product, on its own inputs
    E += normalised_error(x, mean / std, u) @ np.abs(W.T)  # ... which are off by this
    E += product_error(x, W.T, U64, b) + normalised_error(x, mean / std, U64) @ np.abs(W.T)
    return x @ W.T + b, E


def reference(snap, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (n, K) of raw CIFAR rows, softmax of :func:`exact_scores`, and the
    largest relative difference (n, K) the model's own can legitimately show from them
    (tolerances.softmax_error)."""
    S, E = exact_scores(snap, rows)
    P = np.exp(S - S.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    return P, softmax_error(E, S)


def in_class_order(snap, values: dict[str, float]) -> np.ndarray:
    """A class -> value mapping as a row in the model's class order."""
    return np.array([values[name] for name in snap.class_names])


def as_row(hwc: np.ndarray) -> np.ndarray:
    """(32, 32, 3) -> the CIFAR row, written out plane by plane (no helper of the package)."""
    return np.concatenate([hwc[:, :, c].ravel() for c in range(3)])


def resized(im: Image.Image, fit: str) -> np.ndarray:
    """The documented resize, done here: the centred square (crop) or all (squash), LANCZOS."""
    w, h = im.size
    if fit == "crop":
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    else:
        box = (0, 0, w, h)
    return np.asarray(im.resize((32, 32), Image.Resampling.LANCZOS, box=box))


def probabilities(entry: dict) -> dict[str, float]:
    return {t["class"]: t["probability"] for t in entry["top"]}


def test_top_parameter_is_checked(run):
    """Bug: --top 11 (more classes than the model has) silently cut, or a crash in argsort."""
    for bad in ("0", "11"):
        r = invoke(run, "x.png", "--top", bad)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and f"--top {bad}: use 1 to 10" in r.stderr


@pytest.mark.parametrize("fit", ["crop", "squash"])
def test_png_and_jpeg_against_an_independent_classification(snap, run, tmp_path, fit):
    """Bug: pixels fed in height-width-channel order instead of CIFAR's colour planes, no (or the
    training set's wrong) normalisation, W used transposed, the crop/squash region or the filter
    not the documented one: each changes these probabilities."""
    rng = np.random.default_rng(5)
    png = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)  # wider than high: crop and squash differ
    Image.fromarray(png).save(tmp_path / "wide.png")
    Image.fromarray(rng.integers(0, 256, (90, 60, 3), dtype=np.uint8)).save(tmp_path / "tall.jpg", quality=90)
    got = predict_json(run, tmp_path / "wide.png", tmp_path / "tall.jpg", "--top", "10", "--fit", fit)
    assert [p["file"] for p in got["predictions"]] == [str(tmp_path / "wide.png"), str(tmp_path / "tall.jpg")]
    assert got["errors"] == [] and got["loss_function"] == "ce" and got["model"] == str(run / "model.h5")
    for entry, name in zip(got["predictions"], ("wide.png", "tall.jpg"), strict=True):
        with Image.open(tmp_path / name) as im:
            row = as_row(resized(im.convert("RGB"), fit))[None]
        expected, rel = reference(snap, row)
        assert "index" not in entry
        assert_within(in_class_order(snap, probabilities(entry)), expected[0], rel[0] * expected[0], name)
        order = [[snap.class_names.index(t["class"]) for t in entry["top"]]]
        assert_ranked(np.array(order), *exact_scores(snap, row), name)  # the top class first
        values = [t["probability"] for t in entry["top"]]
        assert values == sorted(values, reverse=True)


def test_crop_and_squash_differ(run, tmp_path):
    """Bug: --fit ignored (one of the two regions always used)."""
    im = np.zeros((32, 96, 3), dtype=np.uint8)
    im[:, :32] = 255  # white on the left third only: the centred square is all black
    Image.fromarray(im).save(tmp_path / "strip.png")
    crop = predict.load_image(tmp_path / "strip.png", "crop")
    squash = predict.load_image(tmp_path / "strip.png", "squash")
    assert crop.max() == 0 and squash.max() == 255


def test_a_32x32_png_round_trips_exactly_and_agrees_with_evaluate(snap, run, tiny_py, tmp_path):
    """Bug: an image already 32 x 32 resampled or recoloured anyway (its pixels then differ from
    the array's), or predict classifying differently from evaluate on the same pixels."""
    ev = evaluation.evaluate_split(snap, data.Dataset(tiny_py, "python"), "test")
    files = []
    for i in range(5):
        hwc = ev.images[i].reshape(3, 32, 32).transpose(1, 2, 0)
        Image.fromarray(hwc).save(tmp_path / f"test-{i}.png")
        files.append(tmp_path / f"test-{i}.png")
        assert np.array_equal(predict.load_image(files[-1]), ev.images[i])
    got = predict_json(run, *files, "--top", "10")
    # Two float32 products of the same inputs, of 5 rows and of the whole split: BLAS may sum
    # them in other orders (other kernels, other shapes), each within product_error of the exact
    # product, so within twice that of each other.
    X = snap.inputs(ev.images[:5])
    S = X.astype(np.float64) @ snap.state.W.T.astype(np.float64) + snap.state.b
    E = 2 * product_error(X, snap.state.W.T, unit_roundoff(X.dtype), snap.state.b)
    assert (min_gap(S) > 2 * E.max(axis=1)).all()  # no near-tie: both must pick the same class
    rel = softmax_error(E, S)
    for i, entry in enumerate(got["predictions"]):
        assert entry["top"][0]["class"] == snap.class_names[ev.predictions[i]]
        got_p = in_class_order(snap, probabilities(entry))
        assert_within(got_p, ev.outputs[i], rel[i] * ev.outputs[i], files[i].name)
    # the tolerance still sees a bias left out (the smallest change among the bugs named above)
    P = np.exp(S - snap.state.b)
    P /= P.sum(axis=1, keepdims=True)
    assert outside(P, ev.outputs[:5], rel * ev.outputs[:5])


def test_transparency_is_laid_on_white(tmp_path):
    """Bug: the alpha channel dropped (a transparent background keeps whatever colour it hides,
    often black) or composited onto black."""
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    c, a = rgba[..., :3].astype(np.int64), rgba[..., 3:].astype(np.int64)
    expected = ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    got = predict.load_image(tmp_path / "a.png")
    assert np.array_equal(got, as_row(expected)) and (got.reshape(3, 32, 32)[:, 0, 0] == 255).all()
    la = np.stack([rgba[..., 0], rgba[..., 3]], axis=2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    grey = ((la[..., :1].astype(np.int64) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    assert np.array_equal(predict.load_image(tmp_path / "la.png"), as_row(np.repeat(grey, 3, axis=2)))


def test_greyscale_palette_bilevel_and_16_bit_become_rgb(tmp_path):
    """Bug: a greyscale image read as one channel (or refused), a palette image resized by its
    indices, 16-bit values clipped at 255 (Pillow's own conversion does that)."""
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    assert np.array_equal(predict.load_image(tmp_path / "l.png"), np.tile(grey.ravel(), 3))

    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "i16.png")  # v * 257 -> v
    with Image.open(tmp_path / "i16.png") as im:
        assert im.mode.startswith("I")
    assert np.array_equal(predict.load_image(tmp_path / "i16.png"), np.tile(grey.ravel(), 3))

    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "p.png")
    assert np.array_equal(predict.load_image(tmp_path / "p.png"), as_row(np.asarray(pal.convert("RGB"))))

    pal.info["transparency"] = 0  # palette entry 0 transparent: those pixels white
    pal.save(tmp_path / "pt.png", transparency=0)
    idx = np.asarray(pal)
    expected = np.asarray(pal.convert("RGB")).copy()
    expected[idx == 0] = 255
    assert np.array_equal(predict.load_image(tmp_path / "pt.png"), as_row(expected))

    Image.fromarray(grey > 127).save(tmp_path / "b.png")  # mode 1
    assert np.array_equal(
        predict.load_image(tmp_path / "b.png"), np.tile(np.where(grey > 127, 255, 0).ravel(), 3)
    )


def test_exif_orientation_is_applied(tmp_path):
    """Bug: EXIF orientation ignored, so a phone photo is classified lying on its side."""
    rng = np.random.default_rng(3)
    hwc = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for orientation, turned in ((3, np.rot90(hwc, 2)), (6, np.rot90(hwc, -1)), (8, np.rot90(hwc, 1))):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(hwc).save(tmp_path / f"o{orientation}.png", exif=exif)
        assert np.array_equal(predict.load_image(tmp_path / f"o{orientation}.png"), as_row(turned))


def test_npy_in_both_shapes(snap, run, tmp_path):
    """Bug: (n, 32, 32, 3) arrays read as if they were CIFAR rows (colours scrambled), rows not
    numbered, or rows classified with another image's result."""
    images, _ = make_split(7, seed=42)  # (7, 3072) CIFAR rows
    np.save(tmp_path / "rows.npy", images)
    np.save(tmp_path / "hwc.npy", images.reshape(7, 3, 32, 32).transpose(0, 2, 3, 1))
    got = predict_json(run, tmp_path / "rows.npy", tmp_path / "hwc.npy", "--top", "10")
    preds = got["predictions"]
    assert [(p["file"], p["index"]) for p in preds] == [
        (str(tmp_path / name), i) for name in ("rows.npy", "hwc.npy") for i in range(7)
    ]
    expected, rel = reference(snap, images)
    for p in preds:
        i = p["index"]
        got_p = in_class_order(snap, probabilities(p))
        assert_within(got_p, expected[i], rel[i] * expected[i], f"{p['file']}[{i}]")


def test_human_output_lists_each_image(run, tmp_path):
    """Bug: results on stderr (lost in `> file`), or rows of an array not told apart."""
    np.save(tmp_path / "rows.npy", make_split(2, seed=1)[0])
    r = invoke(run, tmp_path / "rows.npy", "--top", "2")
    assert r.exit_code == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert "probabilities" in lines[0] and len(lines) == 3
    assert lines[1].startswith(f"{tmp_path / 'rows.npy'}[0]: ") and lines[1].count(", ") == 1


@pytest.mark.parametrize("loss", ["svm", "l2svm", "bce"])
def test_hinge_models_give_scores_and_bce_sigmoids(tiny_py, tmp_path, loss):
    """Bug: a hinge-loss model's scores shown as probabilities (softmax of scores it never
    trained as such), or a BCE model's per-class sigmoids replaced by a softmax."""
    out = tmp_path / loss
    train(tiny_py, out, *TRAIN, "--loss", loss)
    s = checkpoint.load_snapshot(out / "model.h5")
    hwc = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(hwc).save(tmp_path / "x.png")
    x = (as_row(hwc) / 255 - s.normalizer.mean) / s.normalizer.std
    scores = x @ s.state.W.astype(np.float64).T + s.state.b
    E = exact_scores(s, as_row(hwc)[None])[1][0]  # (K,) how far predict's float32 scores may be
    got = predict_json(out, tmp_path / "x.png", "--top", "10")
    assert got["loss_function"] == loss
    top = got["predictions"][0]["top"]
    if loss != "bce":
        assert all(set(t) == {"class", "score"} for t in top)
        assert_within(in_class_order(s, {t["class"]: t["score"] for t in top}), scores, E, "scores")
        r = invoke(out, tmp_path / "x.png")
        assert "scores, not probabilities" in r.stdout.splitlines()[0]
    else:
        sig = 1 / (1 + np.exp(-scores))
        got_sig = in_class_order(s, {t["class"]: t["probability"] for t in top})
        assert_within(got_sig, sig, sigmoid_error(E) * sig, "sigmoids")


def test_a_bad_image_among_good_ones(run, tmp_path):
    """Bug: one unreadable file aborting the whole command (or a traceback), the others left
    unreported, or exit 0 hiding the failure from a script."""
    good = np.random.default_rng(6).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(good).save(tmp_path / "a.png")
    Image.fromarray(good).save(tmp_path / "c.png")
    (tmp_path / "b.png").write_text("not an image\n")
    args = (run, tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png")
    r = invoke(*args)
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and str(tmp_path / "b.png") in r.stderr
    assert "not a PNG or JPEG image" in r.stderr
    assert [ln.split(":")[0] for ln in r.stdout.splitlines()[1:]] == [
        str(tmp_path / n) for n in ("a.png", "c.png")
    ]
    r = invoke(*args, "--json", "--quiet")
    got = json.loads(r.stdout)
    assert r.exit_code == 1 and r.stdout.count("\n") == 1 and r.stderr.count("\n") == 1
    assert [p["file"] for p in got["predictions"]] == [str(tmp_path / "a.png"), str(tmp_path / "c.png")]
    assert got["predictions"][0]["top"] == got["predictions"][1]["top"]
    assert [e["file"] for e in got["errors"]] == [str(tmp_path / "b.png")]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def declared_png(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few bytes that declares ``width`` x ``height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def valid_png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_hostile(tmp: Path, kind: str) -> Path:
    if kind == "truncated-png":
        (p := tmp / "cut.png").write_bytes(valid_png()[:3000])
    elif kind == "text-as-png":
        (p := tmp / "notes.png").write_text("hello, I am text\n")
    elif kind == "empty":
        (p := tmp / "empty.jpg").write_bytes(b"")
    elif kind == "gif":  # a real image, but a decoder that is not enabled
        Image.new("RGB", (8, 8)).save(p := tmp / "anim.gif")
    elif kind == "fifo":
        os.mkfifo(p := tmp / "pipe.png")
    elif kind == "folder":
        (p := tmp / "dir.png").mkdir()
    elif kind == "bomb-error":  # 10^10 pixels declared: 30 GB if decoded
        (p := tmp / "bomb.png").write_bytes(declared_png(100_000, 100_000))
    elif kind == "bomb-warning":  # 64 Mpx: over the limit, under twice it (Pillow only warns there)
        (p := tmp / "bomb2.png").write_bytes(declared_png(8000, 8000))
    elif kind == "npy-object":
        np.save(p := tmp / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif kind == "npy-shape":
        np.save(p := tmp / "chw.npy", np.zeros((2, 3, 32, 32), dtype=np.uint8))
    elif kind == "npy-dtype":
        np.save(p := tmp / "float.npy", np.zeros((2, 3072), dtype=np.float32))
    elif kind == "npy-truncated":
        np.save(p := tmp / "short.npy", np.zeros((4, 3072), dtype=np.uint8))
        p.write_bytes(p.read_bytes()[:-100])
    elif kind == "npy-huge":  # a header declaring 10^9 rows (3 TB) on a file of a few bytes
        header = {"descr": "|u1", "fortran_order": False, "shape": (10**9, 3072)}
        with open(p := tmp / "huge.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
    elif kind == "npy-not":
        (p := tmp / "fake.npy").write_bytes(b"PK\x03\x04 zip, not npy")
    else:
        raise AssertionError(kind)
    return p


HOSTILE = {
    "truncated-png": "damaged or truncated image",
    "text-as-png": "not a PNG or JPEG image",
    "empty": "not a PNG or JPEG image",
    "gif": "not a PNG or JPEG image",
    "fifo": "not a regular file",
    "folder": "is a folder",
    "bomb-error": "decompression bomb",
    "bomb-warning": "decompression bomb",
    "npy-object": "holds Python objects",
    "npy-shape": "has shape (2, 3, 32, 32)",
    "npy-dtype": "has dtype float32",
    "npy-truncated": "truncated",
    "npy-huge": "but its header declares",
    "npy-not": "not a NumPy .npy file",
}


def invoke_within(seconds: int, *args):
    """:func:`invoke`, failing with TimeoutError instead of hanging the suite."""

    def timeout(signum, frame):
        raise TimeoutError(f"predict did not finish in {seconds} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        return invoke(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_files_are_refused_one_line_each(run, tmp_path, kind):
    """Bug: a hostile file hanging the command (a FIFO opened for reading waits for a writer),
    exhausting memory (a decompression bomb; an .npy header declaring terabytes), running code
    (a pickled object array), crashing with a traceback, or stopping the good file's result."""
    bad = make_hostile(tmp_path, kind)
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    r = invoke_within(60, run, bad, tmp_path / "ok.png", "--json", "--quiet")
    assert r.exit_code == 1, r.output
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"Error: {bad}: ")
    assert HOSTILE[kind] in r.stderr
    got = json.loads(r.stdout)
    assert [p["file"] for p in got["predictions"]] == [str(tmp_path / "ok.png")]
    assert got["errors"] == [{"file": str(bad), "error": r.stderr.removeprefix("Error: ").strip()}]


def test_oversized_files_are_refused_before_reading(tmp_path, monkeypatch):
    """Bug: a file read whole into memory before its size is checked."""
    monkeypatch.setattr(predict, "MAX_IMAGE_BYTES", 1000)
    (tmp_path / "big.png").write_bytes(valid_png())
    with pytest.raises(DataError, match=r"big\.png: \d+ bytes, more than"):
        predict.load_image(tmp_path / "big.png")


def test_pillow_limits_are_restored(tmp_path):
    """Bug: predict leaving Pillow's global decompression-bomb limit changed for the caller."""
    before = Image.MAX_IMAGE_PIXELS
    (tmp_path / "bomb.png").write_bytes(declared_png(8000, 8000))
    with pytest.raises(DataError):
        predict.load_image(tmp_path / "bomb.png")
    assert before == Image.MAX_IMAGE_PIXELS


def test_fit_choices_are_the_librarys():
    """Bug: the command line offering a --fit the library refuses (the two lists drifting)."""
    from cifarlin.cli import predict as cli_predict

    assert cli_predict.FITS == predict.FITS
    with pytest.raises(ConfigError, match="fit='box'"):
        predict.crop_box(10, 10, "box")


def test_model_missing_or_not_a_model(tmp_path, run):
    """Bug: a history file (or nothing) taken as a model, or a traceback instead of one line."""
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    for model, why in (
        (tmp_path / "nope", "no such file or folder"),
        (run / "history.h5", "expected a model"),
    ):
        r = invoke(model, tmp_path / "ok.png")
        assert r.exit_code == 1 and r.stderr.count("\n") == 1 and why in r.stderr


def test_arrays_are_classified_block_by_block_without_losing_rows(snap, monkeypatch):
    """Bug: a row at a block boundary skipped or classified twice (long arrays are normalised a
    block at a time to bound memory)."""
    images, _ = make_split(7, seed=8)
    whole = predict.classify(snap, images, 10)
    monkeypatch.setattr(predict, "CHUNK", 3)  # blocks of 3, 3 and 1 rows
    blocks = predict.classify(snap, images, 10)
    # products of 7 rows and of 3, 3 and 1 (other shapes, other kernels): each within
    # product_error of the exact product, so within twice that of each other
    X = snap.inputs(images)
    S = X.astype(np.float64) @ snap.state.W.T.astype(np.float64) + snap.state.b
    E = 2 * product_error(X, snap.state.W.T, unit_roundoff(X.dtype), snap.state.b)
    assert (min_gap(S, 10) > 2 * E.max(axis=1)).all()  # no near-tie in any row: one ranking
    assert np.array_equal(blocks.top, whole.top)
    assert_within(blocks.outputs, whole.outputs, softmax_error(E, S) * whole.outputs, "blocks, whole")
    expected, rel = reference(snap, images)
    assert_within(blocks.outputs, expected, rel * expected, "blocks, float64")
