"""The loader: resolution rules, both formats, validation, and refusing hostile pickles."""

from __future__ import annotations

import errno
import mmap
import pickle
import shutil

import numpy as np
import pytest

from cifar_files import NAMES, batch_dict, global_op, make_split, py2_pickle, write_python_dataset
from cifarlin.core import config, normalize
from cifarlin.core.normalize import EXACT_ROWS, Normalizer, empty_rows
from cifarlin.data import cifar as data
from cifarlin.errors import CifarlinError, ConfigError, DataError, DataNotFoundError
from cifarlin.work.prepare import prepare, prepare_run
from tolerances import U32, U64, assert_within, normalised_error, pixel_statistics_error


def test_test_writer_matches_real_pickle(tiny_py):
    # The hand-written Python 2 pickles load with the real (unsafe) unpickler too, to the same data.
    raw = (tiny_py / "data_batch_1").read_bytes()
    trusted = pickle.loads(raw, encoding="bytes")
    batch = data.read_batch(tiny_py / "data_batch_1", "python")
    assert np.array_equal(trusted[b"data"], batch.images)
    assert trusted[b"labels"] == batch.labels.tolist()


def test_python_and_binary_versions_load_the_same(tiny_py, tiny_bin):
    for which in (1, 5, "test"):
        a = data.read_batch(tiny_py / data.batch_name("python", which), "python")
        b = data.read_batch(tiny_bin / data.batch_name("binary", which), "binary")
        assert a.images.shape == (50, 3072) and a.images.dtype == np.uint8
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert data.read_class_names(data.Dataset(tiny_py, "python")) == NAMES
    assert data.read_class_names(data.Dataset(tiny_bin, "binary")) == NAMES


def test_python_3_pickles_of_the_same_layout_load(tmp_path):
    images, labels = make_split(10, seed=3)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": images, "labels": labels.tolist()}, protocol=3))
    batch = data.read_batch(path, "python")
    assert np.array_equal(batch.images, images) and np.array_equal(batch.labels, labels)


def test_resolution_rule(tmp_path, monkeypatch):
    from cifarlin.cli.common import Env

    def root(environ, flag=None):
        return Env.read(environ).data_root(flag)

    assert root({"XDG_CACHE_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "cifarlin"
    both = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "CIFARLIN_DATA_DIR": str(tmp_path / "env")}
    assert root(both) == tmp_path / "env"
    assert root(both, tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert root({}) == tmp_path / "home" / ".cache" / "cifarlin"


def test_find_parent_folder_and_folder_itself(tmp_path, tiny_py, tiny_bin):
    parent = tmp_path / "root"
    shutil.copytree(tiny_py, parent / "cifar-10-batches-py")
    assert data.find(parent) == data.Dataset(parent / "cifar-10-batches-py", "python")
    assert data.find(tiny_py) == data.Dataset(tiny_py, "python")  # used in place
    assert data.find(tiny_bin) == data.Dataset(tiny_bin, "binary")
    renamed = tmp_path / "keras-copy"
    shutil.copytree(tiny_py, renamed)
    assert data.find(renamed) == data.Dataset(renamed, "python")


def test_not_found_names_the_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "empty")) as e:
        data.find(tmp_path / "empty")
    assert "cifarlin download" in str(e.value)


def write(tmp_path, content: bytes, name="data_batch_1"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_hostile_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = (
        b"\x80\x02"
        + global_op("os", "system")
        + b"U"
        + bytes([len(f"touch {marker}")])
        + f"touch {marker}".encode()
        + b"\x85R."
    )
    path = write(tmp_path, evil)
    with pytest.raises(DataError, match="os.system") as e:
        data.read_batch(path, "python")
    assert str(path) in str(e.value) and "hostile" in str(e.value)
    assert not marker.exists()


class Evil:
    def __reduce__(self):
        return (print, ("side effect",))


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({b"data": Evil()}, protocol=2),
        pickle.dumps({b"data": Evil()}, protocol=5),
        b"\x80\x02" + global_op("builtins", "eval") + b"U\x041+1\x85R.",
        b"\x80\x02" + global_op("numpy", "load") + b"U\x01x\x85R.",
    ],
)
def test_any_other_global_is_refused(tmp_path, payload, capsys):
    with pytest.raises(DataError, match="refused"):
        data.read_batch(write(tmp_path, payload), "python")
    assert "side effect" not in capsys.readouterr().out


def test_object_dtype_is_refused(tmp_path):
    arr = b"\x80\x02" + global_op("numpy.core.multiarray", "_reconstruct") + global_op("numpy", "ndarray")
    arr += (
        b"K\x00\x85U\x01b\x87R" + b"(K\x01K\x01\x85" + global_op("numpy", "dtype") + b"U\x02O8\x89\x88\x87R"
    )
    with pytest.raises(DataError, match="refused"):
        data.read_batch(write(tmp_path, arr + b"}."), "python")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda raw: raw[: len(raw) // 2], "truncated"),
        (lambda raw: b"", "empty"),
        (lambda raw: b"not a pickle at all", "truncated or not a CIFAR-10 pickle"),
    ],
)
def test_broken_python_files(tmp_path, tiny_py, mutate, message):
    path = write(tmp_path, mutate((tiny_py / "data_batch_1").read_bytes()))
    with pytest.raises(DataError, match=message) as e:
        data.read_batch(path, "python")
    assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(images=np.zeros((5, 3071), np.uint8)), r"shape \(5, 3071\)"),
        (dict(images=np.zeros((5, 3072), np.float64)), "float64, expected uint8"),
        (dict(labels=[0, 1, 11, 2, 3]), "label 11 at index 2"),
        (dict(labels=[0, 1, 2]), "3 labels for 5 images"),
        (dict(images=np.zeros((0, 3072), np.uint8), labels=[]), "N > 0"),
    ],
)
def test_invalid_batches(tmp_path, change, message):
    images, labels = np.zeros((5, 3072), np.uint8), [0, 1, 2, 3, 4]
    images, labels = change.get("images", images), change.get("labels", labels)
    d = {b"data": images, b"labels": labels}
    if images.dtype != np.uint8:
        d = {b"data": images.astype(np.uint8), b"labels": labels}
        raw = (
            py2_pickle(d)
            .replace(b"U\x02u1", b"U\x02f8")
            .replace(
                b"T" + (images.size).to_bytes(4, "little"), b"T" + (images.size * 8).to_bytes(4, "little")
            )
            .replace(bytes(images.size), bytes(images.size * 8))
        )
    else:
        raw = py2_pickle(d)
    with pytest.raises(DataError, match=message):
        data.read_batch(write(tmp_path, raw), "python")


def test_missing_keys(tmp_path):
    with pytest.raises(DataError, match="no labels entry"):
        data.read_batch(write(tmp_path, py2_pickle({b"data": np.zeros((2, 3072), np.uint8)})), "python")
    with pytest.raises(DataError, match="holds a list"):
        data.read_batch(write(tmp_path, py2_pickle([1, 2])), "python")


def test_binary_file_checks(tmp_path):
    ok = bytes([3]) + bytes(3072)
    assert data.read_batch(write(tmp_path, ok * 2, "b.bin"), "binary").labels.tolist() == [3, 3]
    for raw, message in (
        (ok[:-1], "3072 bytes is not a whole number"),
        (b"", "0 bytes"),
        (bytes([11]) + bytes(3072), "label 11"),
    ):
        with pytest.raises(DataError, match=message):
            data.read_batch(write(tmp_path, raw, "b.bin"), "binary")


def test_missing_file_is_named(tmp_path, tiny_py):
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(tiny_py, folder)
    (folder / "data_batch_2").unlink()
    with pytest.raises(DataError, match="data_batch_2: missing"):
        data.verify_dataset(data.Dataset(folder, "python"))


def test_parse_batches():
    assert config.parse_batches("1-5") == (1, 2, 3, 4, 5)
    assert config.parse_batches("1,3") == (1, 3)
    assert config.parse_batches("3, 1-2") == (3, 1, 2)
    for bad in ("0", "6", "1-9", "a", "2-1", ""):
        with pytest.raises(ConfigError, match=f"train_batches={bad!r}"):
            config.parse_batches(bad)


def test_split_rules():
    with pytest.raises(ConfigError, match=r"train_batches=\(1, 2, 3\): includes batch 2.*val_size=N"):
        config.SplitSpec((1, 2, 3))
    with pytest.raises(ConfigError, match="val_size=0"):
        config.SplitSpec((1,), 0)


def test_prepare_default_split(tiny_py):
    p = prepare(data.Dataset(tiny_py, "python"), config.SplitSpec())
    raw1 = data.read_batch(tiny_py / "data_batch_1", "python")
    raw2 = data.read_batch(tiny_py / "data_batch_2", "python")
    assert {k: v.shape for k, v in p.X.items()} == {
        "train": (50, 3072),
        "val": (50, 3072),
        "test": (50, 3072),
    }
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in p.X.values())
    assert np.array_equal(p.y["val"], raw2.labels)
    x = raw1.images.astype(np.float64) / 255
    mean_error, std_error = pixel_statistics_error(x)
    assert_within(p.normalizer.mean, x.mean(axis=0), mean_error, "mean")
    assert_within(p.normalizer.std, x.std(axis=0), std_error, "std")
    # float32 inputs: normalised_error; this float64 reference's own rounding of x, its mean and
    # std (the statistics' errors over std, and |z| times std's relative error), and its two steps
    z = (x - x.mean(0)) / x.std(0)
    offset = x.mean(0) / x.std(0)
    ref = (mean_error + np.abs(z) * std_error) / x.std(0) + normalised_error(z, offset, U64)
    assert_within(p.X["train"], z, normalised_error(z, offset, U32) + ref, "normalised")
    assert set(p.checksums) == {"data_batch_1", "data_batch_2", "test_batch"}


def test_prepare_several_batches_with_holdout(tiny_py):
    p = prepare(data.Dataset(tiny_py, "python"), config.SplitSpec((1, 2, 3), val_size=30))
    raws = [data.read_batch(tiny_py / f"data_batch_{i}", "python") for i in (1, 2, 3)]
    allx = np.concatenate([r.images for r in raws])
    ally = np.concatenate([r.labels for r in raws])
    assert p.X["train"].shape == (120, 3072) and p.X["val"].shape == (30, 3072)
    assert np.array_equal(p.y["val"], ally[120:])
    x = allx[:120].astype(np.float64) / 255
    assert_within(p.normalizer.mean, x.mean(axis=0), pixel_statistics_error(x)[0], "mean")
    # the validation rows use the training statistics, exactly as any other split
    assert np.array_equal(p.X["val"], p.normalizer.apply(allx[120:]))
    split, _ = data.load_split(data.Dataset(tiny_py, "python"), config.SplitSpec((1, 2, 3), 30), "val")
    assert np.array_equal(split.images, allx[120:])
    with pytest.raises(ConfigError, match="val_size=150: the training batches hold only 150 images"):
        prepare(data.Dataset(tiny_py, "python"), config.SplitSpec((1, 2, 3), val_size=150))


def test_normalizer_handles_constant_inputs():
    images = np.zeros((4, 3072), np.uint8)
    images[:, 0] = [0, 255, 0, 255]
    n = Normalizer.fit([images])
    assert n.std[1] == 1.0 and n.mean[0] == 0.5 and n.std[0] == 0.5
    assert np.isfinite(n.apply(images)).all()


def test_reader_reuses_its_read_buffer_without_aliasing(tmp_path, monkeypatch):
    """A Reader reads python batches of different sizes into one buffer: what it returned earlier
    never changes, every MD5 is of its own file, and a size that changed since the Reader looked
    (a file replaced meanwhile) is read the ordinary way."""
    import hashlib

    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(write_python_dataset(tmp_path / "src", n=30, n_test=20), folder)
    (folder / "data_batch_2").write_bytes(
        py2_pickle(batch_dict(*make_split(40, seed=7), "a longer label for batch two"))
    )
    files = {w: folder / data.batch_name("python", w) for w in (1, 2, "test", 3)}
    assert len({f.stat().st_size for f in files.values()}) == 3  # shrinking and growing the buffer
    want = {w: data.read_batch(f, "python") for w, f in files.items()}  # each read on its own
    reader = data.Reader(data.Dataset(folder, "python"))
    got = {}
    for w in files:
        got[w] = reader.batch(w)
        assert len(reader._scratch) == files[w].stat().st_size
    for w, f in files.items():
        assert np.array_equal(got[w].images, want[w].images), w
        assert np.array_equal(got[w].labels, want[w].labels), w
        assert not np.shares_memory(got[w].images, np.frombuffer(reader._scratch, np.uint8))
        assert reader.batch_md5(w) == hashlib.md5(f.read_bytes()).hexdigest()
    monkeypatch.setattr(data, "_size", lambda path: 7)  # the file changed since: not the buffer's size
    again = data.Reader(data.Dataset(folder, "python")).batch(2)
    assert np.array_equal(again.images, want[2].images) and again.md5 == want[2].md5


def test_a_reader_reads_on_after_a_file_it_refused(tmp_path, monkeypatch):
    """Catches: a Reader whose buffer a refused file's MD5 is still hashing, resized or
    overwritten by the next read ('BufferError: Existing exports of data')."""
    from concurrent.futures import Future

    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(write_python_dataset(tmp_path / "src", n=30, n_test=20), folder)
    (folder / "data_batch_1").write_bytes(b"\x80\x02junk" * 5000)  # another size than batch 2
    hashing = []

    def md5_never_done(raw):  # holds the bytes as hashlib does while it hashes them
        hashing.append(memoryview(raw))
        return Future()

    monkeypatch.setattr(data, "_md5_soon", md5_never_done)
    reader = data.Reader(data.Dataset(folder, "python"))
    with pytest.raises(DataError, match="data_batch_1"):
        reader.batch(1)
    second = reader.batch(2)
    assert np.array_equal(second.images, data.read_batch(folder / "data_batch_2", "python").images)
    assert bytes(hashing[0][:6]) == b"\x80\x02junk"  # the refused file's bytes, untouched


def test_normalizer_sums_exactly_in_narrow_types(monkeypatch):
    """The statistics equal float64 ones of the same pixels, whatever the chunks and however often
    the uint32 partial sums are folded into the int64 totals (every 256 rows here)."""
    assert EXACT_ROWS * 255**2 <= 2**32 - 1 < (EXACT_ROWS + 1) * 255**2
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (600, 3072), dtype=np.uint8)
    images[:, :5] = 255  # the largest squares, in every row
    x = images.astype(np.float64) / 255
    want_mean, want_std = x.mean(axis=0), x.std(axis=0)
    whole = Normalizer.fit([images])
    monkeypatch.setattr(normalize, "EXACT_ROWS", 300)  # more than a block of 256 rows, less than two
    folded = Normalizer.fit([images[:250], images[250:251], images[251:]])
    mean_error, std_error = pixel_statistics_error(x)
    for n in (whole, folded):
        assert_within(n.mean, want_mean, mean_error, "mean")
        assert_within(n.std[5:], want_std[5:], std_error[5:], "std")
        assert (n.std[:5] == 1.0).all()  # a constant input: only centred
    assert np.array_equal(whole.mean, folded.mean) and np.array_equal(whole.std, folded.std)


def test_real_data_loads(real_data):
    src = data.find(real_data)
    b1 = data.read_batch(src.path("data_batch_1"), "python")
    bt = data.read_batch(src.path("test_batch"), "python")
    assert b1.images.shape == (10000, 3072) and bt.images.shape == (10000, 3072)
    assert b1.labels[:5].tolist() == [6, 9, 9, 4, 1]
    assert bt.labels[:5].tolist() == [3, 8, 8, 0, 6]
    assert data.read_class_names(src) == NAMES


def test_shared_references_cannot_blow_up(tmp_path):
    a = [0] * 1000
    a = [a] * 1000  # a million entries if copied naively, a few kB on disk
    raw = pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": a}, protocol=3)
    assert len(raw) < 10_000
    with pytest.raises(DataError, match="referenced twice"):
        data.read_batch(write(tmp_path, raw), "python")


def test_cycles_and_deep_nesting_are_refused(tmp_path):
    cyc: list = []
    cyc.append(cyc)
    deep: list = []
    for _ in range(100):
        deep = [deep]
    for obj, message in ((cyc, "twice"), (deep, "nested")):
        with pytest.raises(DataError, match=message):
            data.read_batch(write(tmp_path, pickle.dumps({"labels": obj}, protocol=3)), "python")


def test_a_pickle_cannot_modify_the_allowed_globals(tmp_path):
    attack = b"\x80\x02" + global_op("numpy", "ndarray") + b"}U\x05pwnedK\x01sb."
    with pytest.raises(DataError, match="refused"):
        data.read_batch(write(tmp_path, attack), "python")
    attack = b"\x80\x02" + global_op("numpy", "dtype") + b"N}U\x08__call__K\x01s\x86b."
    with pytest.raises(DataError, match="refused"):
        data.read_batch(write(tmp_path, attack), "python")
    assert data.read_batch(
        write(tmp_path, py2_pickle(batch_dict(*make_split(3, 1), "x"))), "python"
    ).images.shape == (3, 3072)


@pytest.mark.parametrize("labels", [[[1], [1, 2]], [1, "2"], [1, 2.0], [True, False], [2**70, 1]])
def test_odd_labels_are_a_data_error(tmp_path, labels):
    raw = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": labels}, protocol=3)
    with pytest.raises(DataError, match="labels are not a list of integers"):
        data.read_batch(write(tmp_path, raw), "python")


def test_bare_numpy_globals_are_not_data(tmp_path):
    raw = b"\x80\x02}(U\x04data" + global_op("numpy", "dtype") + b"U\x06labels]u."
    with pytest.raises(DataError, match="where plain data was expected"):
        data.read_batch(write(tmp_path, raw), "python")


def finishes(fn, seconds: float = 10.0, unblock=None):
    """Run ``fn`` in a thread; fail (after ``unblock`` frees it) if it has not returned in time,
    so a regression that blocks shows up as a failure, not as a hung test suite."""
    import threading

    outcome: list = []

    def run():
        try:
            outcome.append(fn())
        except BaseException as e:  # handed to the test
            outcome.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        if unblock is not None:
            unblock()
        pytest.fail(f"still running after {seconds} s (blocked?)")
    return outcome[0]


def test_a_fifo_batch_is_refused_not_waited_for(tmp_path):
    # The bug: open() of a FIFO blocks until a writer comes, so train hung forever.
    import os

    path = tmp_path / "data_batch_1"
    os.mkfifo(path)

    def unblock():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    e = finishes(lambda: data.read_batch(path, "python"), unblock=unblock)
    assert isinstance(e, DataError)
    assert str(e) == f"{path}: is a FIFO, not a regular file; expected a CIFAR-10 file"


def test_special_files_and_folders_are_refused(tmp_path):
    import os
    import socket

    sock_path = tmp_path / "s" / "data_batch_2"
    sock_path.parent.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    (tmp_path / "data_batch_3").mkdir()
    os.symlink("/dev/zero", tmp_path / "data_batch_4.bin")  # would never end
    try:
        for path, fmt, kind in (
            (sock_path, "python", "is a socket, not a regular file"),
            (tmp_path / "data_batch_3", "python", "is a folder"),
            (tmp_path / "data_batch_4.bin", "binary", "is a character device, not a regular file"),
        ):
            e = finishes(lambda p=path, f=fmt: data.read_batch(p, f))
            assert isinstance(e, DataError) and str(e).startswith(f"{path}: {kind}")
    finally:
        sock.close()


def test_a_fifo_swapped_in_after_the_stat_does_not_block(tmp_path, monkeypatch):
    # The race: the file is regular when stat'ed and a FIFO when opened; O_NONBLOCK + fstat.
    import os
    import stat

    path = tmp_path / "data_batch_1"
    os.mkfifo(path)
    a_file = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 10, 0, 0, 0))  # what stat saw
    real_stat = os.stat
    monkeypatch.setattr(data.os, "stat", lambda p, *a, **k: a_file if p == path else real_stat(p, *a, **k))

    def unblock():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    e = finishes(lambda: data.read_batch(path, "python"), unblock=unblock)
    assert isinstance(e, DataError)
    assert str(e) == f"{path}: is a FIFO, not a regular file; expected a CIFAR-10 file"


@pytest.mark.parametrize("name, fmt", [("data_batch_1", "python"), ("test_batch.bin", "binary")])
def test_a_huge_sparse_batch_is_refused_before_it_is_read(tmp_path, name, fmt):
    # The bug: a 20 GiB sparse file was read and hashed for a minute before being refused.
    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(20 << 30)
    e = finishes(lambda: data.read_batch(path, fmt), seconds=5)
    assert isinstance(e, DataError)
    assert str(e).startswith(
        f"{path}: 21,474,836,480 bytes, more than a CIFAR-10 file of its kind ever holds (67,108,864 bytes)"
    )


def test_a_huge_meta_file_is_refused(tmp_path, tiny_py):
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(tiny_py, folder)
    with open(folder / "batches.meta", "r+b") as f:
        f.truncate(2 << 20)
    with pytest.raises(DataError, match=r"batches.meta: 2,097,152 bytes, more than .* \(1,048,576 bytes\)"):
        data.read_class_names(data.Dataset(folder, "python"))


def test_the_size_cap_boundary(tmp_path, monkeypatch):
    raw = (bytes([3]) + bytes(3072)) * 2
    path = write(tmp_path, raw, "b.bin")
    monkeypatch.setattr(data, "MAX_BATCH_BYTES", len(raw))
    assert data.read_batch(path, "binary").labels.tolist() == [3, 3]
    monkeypatch.setattr(data, "MAX_BATCH_BYTES", len(raw) - 1)
    with pytest.raises(DataError, match=f"{len(raw):,} bytes, more than"):
        data.read_batch(path, "binary")


def test_a_file_that_reports_no_size_is_still_capped(tmp_path, monkeypatch):
    # /proc files say 0 bytes and hold more: the cap holds on what is read, not what stat says.
    import os

    if not os.path.exists("/proc/self/status"):
        pytest.skip("no /proc")
    os.symlink("/proc/self/status", tmp_path / "data_batch_1.bin")
    monkeypatch.setattr(data, "MAX_BATCH_BYTES", 100)
    with pytest.raises(DataError, match=r"more bytes than its size said, more than .* \(100 bytes\)"):
        data.read_batch(tmp_path / "data_batch_1.bin", "binary")


def test_cli_names_the_fifo_and_exits_1(tmp_path, tiny_py, runner):
    import os

    from cifarlin.cli import app

    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(tiny_py, folder)
    (folder / "data_batch_1").unlink()
    os.mkfifo(folder / "data_batch_1")
    r = finishes(lambda: runner.invoke(app, ["gradcheck", "--data-dir", str(tmp_path), "--n", "3"]))
    assert r.exit_code == 1
    assert (
        r.stderr
        == f"Error: {folder / 'data_batch_1'}: is a FIFO, not a regular file; expected a CIFAR-10 file\n"
    )


@pytest.mark.parametrize("rows", [0, 3, 2000])  # 2000 x 3072 float32 = 24 MB: in small pages
def test_empty_rows_is_an_ordinary_writable_array(rows, monkeypatch):
    monkeypatch.setattr(normalize, "SMALL_PAGES_FROM", 1 << 20)
    a = empty_rows((rows, data.D), np.float32)
    assert a.shape == (rows, data.D) and a.dtype == np.float32
    assert a.flags.writeable and a.flags.c_contiguous
    a[:] = np.arange(data.D, dtype=np.float32)
    view = a[rows // 2 :]
    del a  # a view keeps the memory alive
    assert np.array_equal(view, np.broadcast_to(np.arange(data.D, dtype=np.float32), view.shape))
    assert np.array_equal(pickle.loads(pickle.dumps(view)), view)


def test_normalised_splits_equal_those_in_numpys_own_memory(tiny_py, monkeypatch):
    cfg = config.TrainConfig()
    small = prepare_run(data.find(tiny_py), cfg)
    monkeypatch.setattr(normalize, "SMALL_PAGES_FROM", 1)
    mapped = prepare_run(data.find(tiny_py), cfg)
    for name in small.X:
        assert np.array_equal(mapped.X[name], small.X[name])
        owner = mapped.X[name]  # follow the views down to the memory they live in
        while isinstance(owner, np.ndarray | memoryview):
            owner = owner.base if isinstance(owner, np.ndarray) else owner.obj
        assert isinstance(owner, mmap.mmap), name


@pytest.mark.parametrize("failure", [OSError(errno.ENOMEM, "Cannot allocate memory"), MemoryError()])
def test_out_of_memory_for_the_splits_is_one_clear_error(tiny_py, monkeypatch, failure):
    """Catches: a machine without the memory for the normalised splits getting a traceback (or
    'a bug in cifarlin') instead of what to do."""
    monkeypatch.setattr(normalize, "SMALL_PAGES_FROM", 1)

    def no_memory(*a, **k):
        raise failure

    monkeypatch.setattr(mmap, "mmap", no_memory)
    with pytest.raises(
        CifarlinError, match=r"out of memory: cannot allocate .* MB for 50 rows of float32; free memory"
    ):
        prepare_run(data.find(tiny_py), config.TrainConfig())


def test_other_mapping_failures_are_not_called_out_of_memory(monkeypatch):
    monkeypatch.setattr(normalize, "SMALL_PAGES_FROM", 1)

    def refused(*a, **k):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(mmap, "mmap", refused)
    with pytest.raises(PermissionError):
        empty_rows((3, data.D), np.float32)
