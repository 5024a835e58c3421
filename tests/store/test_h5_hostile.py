"""Hostile and damaged HDF5 files: refused with one line, in bounded memory, without a crash or a hang.

Each test names the bug it would catch.
"""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cifarlin.cli import app
from cifarlin.core import config
from cifarlin.core.config import TrainConfig
from cifarlin.data import cifar as data
from cifarlin.errors import ModelFileError
from cifarlin.store import checkpoint, h5safe, helper
from cifarlin.work import runs
from cifarlin.work.prepare import prepare


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_py) -> Path:
    prepared = prepare(data.Dataset(tiny_py, "python"), config.SplitSpec())
    out = tmp_path_factory.mktemp("h5") / "run"
    runs.run(TrainConfig(epochs=2, batch_size=10, eta=0.01), out, prepared)
    return out


def copy_with(src: Path, dst: Path, edit) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "a", libver="latest") as f:  # "latest": attributes of any size
        edit(f)
    return dst


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_history_declared_huge_is_refused_before_reading(run_dir, tmp_path):
    """Bug: history datasets read whole before any size check (2**28 elements cost 2 GB, 2**40 a
    MemoryError). Chunked datasets that store nothing declare any size for free."""
    for n in (2**28, 2**40):

        def huge(f, n=n):
            del f["train_cost"]
            f.create_dataset("train_cost", shape=(n,), dtype="f8", chunks=(1024,))

        path = copy_with(run_dir / "history.h5", tmp_path / f"h{n}.h5", huge)
        before = peak_rss_mb()
        with pytest.raises(ModelFileError, match=rf"dataset 'train_cost' has shape \({n},\)"):
            checkpoint.load_history(path, probe=False)
        assert peak_rss_mb() - before < 200


def test_checkpoint_history_group_declared_huge(run_dir, tmp_path):
    """Bug: the history inside checkpoint.h5 read whole before its size is checked."""

    def huge(f):
        del f["history/val_acc"]
        f.create_dataset("history/val_acc", shape=(2**33,), dtype="f8", chunks=(4096,))

    path = copy_with(run_dir / "checkpoint.h5", tmp_path / "c.h5", huge)
    with pytest.raises(ModelFileError, match="'val_acc' has shape"):
        checkpoint.load_snapshot(path, probe=False)


@pytest.mark.parametrize("kind", ["external link", "soft link"])
def test_links_are_refused(run_dir, tmp_path, kind):
    """Bug: an external link makes cifarlin read any file on the machine (drawn into a montage)."""
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as s:
        s["W"] = np.ones((10, 3072), np.float32)

    def link(f):
        del f["W"]
        f["W"] = h5py.ExternalLink(str(secret), "/W") if kind == "external link" else h5py.SoftLink("/b")

    path = copy_with(run_dir / "model.h5", tmp_path / "m.h5", link)
    word = "an external" if kind == "external link" else "a soft"
    with pytest.raises(ModelFileError, match=f"'/W' is {word} link"):
        checkpoint.load_snapshot(path)


def test_external_raw_storage_is_refused(run_dir, tmp_path):
    """Bug: a dataset whose raw data live in another file is read from that file."""
    raw = tmp_path / "raw.bin"
    np.ones((10, 3072), np.float32).tofile(raw)

    def external(f):
        del f["W"]
        f.create_dataset("W", shape=(10, 3072), dtype="f4", external=[(str(raw), 0, h5py.h5f.UNLIMITED)])

    path = copy_with(run_dir / "model.h5", tmp_path / "m.h5", external)
    with pytest.raises(ModelFileError, match="'/W' keeps its data in another file"):
        checkpoint.load_snapshot(path)


def test_virtual_dataset_with_missing_source_is_refused(run_dir, tmp_path):
    """Bug: a virtual dataset whose source is missing evaluates as zero weights."""

    def virtual(f):
        del f["W"]
        layout = h5py.VirtualLayout(shape=(10, 3072), dtype="f4")
        layout[:] = h5py.VirtualSource(str(tmp_path / "missing.h5"), "W", shape=(10, 3072))
        f.create_virtual_dataset("W", layout, fillvalue=0)

    path = copy_with(run_dir / "model.h5", tmp_path / "m.h5", virtual)
    with pytest.raises(ModelFileError, match="'/W' is a virtual dataset"):
        checkpoint.load_snapshot(path)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("epochs", 40.0, "attribute 'epochs' is not of type int"),
        ("epochs", "40", "attribute 'epochs' is not of type int"),
        ("shuffle", 1, "attribute 'shuffle' is not of type bool"),
        ("lam", "0.1", "attribute 'lam' is not of type float"),
        ("format_version", "1", "format version is not a whole number"),
        ("format_version", 1.0, "format version is not a whole number"),
        ("epoch", 1.5, "attribute 'epoch' has shape"),
        ("epochs", np.arange(3), "attribute 'epochs' is not of type int"),
        ("class_names", np.arange(10), "does not hold 10 names"),
        ("rng_state", "{not json", "'rng_state' is not a generator state"),
    ],
)
def test_types_read_from_files_are_checked(run_dir, tmp_path, name, value, message):
    """Bug: types read from files trusted (a float `epochs` crashed --resume with a TypeError, a
    string format version gave a self-contradicting message)."""
    path = copy_with(run_dir / "checkpoint.h5", tmp_path / "c.h5", lambda f: f.attrs.__setitem__(name, value))
    with pytest.raises(ModelFileError, match=message) as e:
        checkpoint.load_snapshot(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_oversized_attributes_are_refused_before_reading(run_dir, tmp_path):
    """Bug: attributes read whole whatever their declared size."""
    path = copy_with(
        run_dir / "model.h5",
        tmp_path / "m.h5",
        lambda f: f.create_group("junk").attrs.__setitem__("blob", np.zeros(300_000)),
    )
    with pytest.raises(ModelFileError, match="attribute 'blob' is larger than"):
        checkpoint.load_snapshot(path)


@pytest.mark.parametrize("make", ["fifo", "folder", "device", "huge", "empty", "not-hdf5"])
def test_not_a_model_file_is_refused_before_opening(tmp_path, make):
    """Bug: a FIFO where a model is expected hangs forever in open()."""
    path = tmp_path / "model.h5"
    if make == "fifo":
        os.mkfifo(path)
    elif make == "folder":
        path.mkdir()
    elif make == "device":
        path = Path("/dev/null")
    elif make == "huge":
        with open(path, "wb") as f:
            f.truncate(h5safe.MAX_FILE_BYTES + 1)  # sparse: costs nothing
    elif make == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\xff" * 200)
    expect = {
        "fifo": "not a regular file",
        "folder": "is a folder",
        "device": "not a regular file",
        "huge": "more than a cifarlin model can hold",
        "empty": "not an HDF5 file",
        "not-hdf5": "not an HDF5 file",
    }[make]
    t0 = time.monotonic()
    with pytest.raises(ModelFileError, match=expect):
        checkpoint.load_snapshot(path)
    assert time.monotonic() - t0 < 5


def test_truncated_superblock_says_truncated(run_dir, tmp_path):
    """Bug: a file cut short reaches the HDF5 library, whose error names nothing useful."""
    raw = (run_dir / "model.h5").read_bytes()
    for cut in (len(raw) - 1, len(raw) // 3, 200):
        path = tmp_path / f"cut{cut}.h5"
        path.write_bytes(raw[:cut])
        with pytest.raises(ModelFileError, match=rf"truncated \({cut} of its {len(raw)} bytes\)"):
            checkpoint.load_snapshot(path)


# The reads a probe runs in its child must be importable by name (the helper process unpickles them).
def crash(path):
    os.kill(os.getpid(), signal.SIGSEGV)


def hang(path):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        time.sleep(0.01)


def refuse(path):
    raise ModelFileError(f"{path}: refused for a reason")


def fails(path):
    raise ValueError("an error of the library")


def slow(path, seconds=0.2):
    time.sleep(seconds)
    return {"read": str(path)}


def read_model(path):
    checkpoint.load_snapshot(path, probe=False)
    return "read"


def test_probe_turns_a_crash_into_an_error(tmp_path):
    """Bug: a segfault in the HDF5 library kills the command without a word."""
    with pytest.raises(ModelFileError, match=r"crashed reading it \(SIGSEGV\)"):
        h5safe.probe(tmp_path / "x.h5", crash, "model")


def test_probe_turns_a_hang_into_an_error(tmp_path):
    """Bug: an endless loop in the HDF5 library that ignores Ctrl-C freezes the command."""
    t0 = time.monotonic()
    with pytest.raises(ModelFileError, match=r"did not finish reading it in 0.3 s"):
        h5safe.probe(tmp_path / "x.h5", hang, "model", seconds=0.3)
    assert time.monotonic() - t0 < 3


def test_probe_passes_errors_and_successes_through(tmp_path):
    with pytest.raises(ModelFileError, match="^" + str(tmp_path / "x.h5") + ": refused for a reason$"):
        h5safe.probe(tmp_path / "x.h5", refuse, "model")
    with pytest.raises(ModelFileError, match=r"x.h5: damaged cifarlin model \(ValueError\)$"):
        h5safe.probe(tmp_path / "x.h5", fails, "model")
    assert h5safe.probe(tmp_path / "x.h5", slow, "model") == {"read": str(tmp_path / "x.h5")}


def test_probe_of_a_good_file_ignores_what_other_threads_hold(run_dir):
    """Bug (3 runs in 4 on AVX-512 machines): the probe forked the command while another of its
    threads (a run of --setting all, the metrics or MD5 thread) held h5py's global lock; the
    child waited for it forever and a good checkpoint was refused as a hang. Held here on
    purpose: the probe's child must not share this process's locks."""
    import h5py._objects

    held, release = threading.Event(), threading.Event()

    def hold():
        with h5py._objects.phil:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        for name in ("model.h5", "checkpoint.h5"):
            assert h5safe.probe(run_dir / name, read_model, "model", seconds=5) == "read"
    finally:
        release.set()
        thread.join()


def test_the_probe_deadline_counts_from_the_childs_start_not_the_helpers(tmp_path):
    """Bug: the deadline also counted the helper's own start (an interpreter and its imports, a
    second or more on a loaded machine), so the first read of a command could be refused."""
    helper.stop_helper()  # the next probe starts the helper again (about 0.15 s here)
    assert h5safe.probe(tmp_path / "x.h5", slow, "model", seconds=0.4) == {"read": str(tmp_path / "x.h5")}


def test_cifarlin_never_forks_a_process_that_may_have_threads():
    """Bug: h5safe, drawer and catalog called os.fork() in a command whose threads (run pool,
    metrics, MD5, views, BLAS, Dask) could hold a lock at that moment. The one fork left is the
    helper process's safe_fork (cifarlin.store.forking), which refuses unless its process has one thread."""
    import ast

    package = Path(helper.__file__).parent
    calls = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("fork", "forkpty", "register_at_fork"):
                calls.append(f"{path.relative_to(package)}:{node.lineno}")
            if isinstance(node, ast.Constant) and node.value in ("fork", "forkserver"):  # start methods
                calls.append(f"{path.relative_to(package)}:{node.lineno}")
    where = [c for c in calls if not c.startswith("forking.py:")]
    assert where == [], f"fork outside cifarlin.store.forking.safe_fork: {where}"
    assert len([c for c in calls if c.startswith("forking.py:")]) >= 1  # safe_fork (and can_fork)


def test_safe_fork_refuses_a_process_with_threads():
    release = threading.Event()
    thread = threading.Thread(target=release.wait, args=(30,))
    thread.start()
    try:
        assert helper.threads() is None or helper.threads() >= 2
        assert helper.safe_fork() is None
    finally:
        release.set()
        thread.join()


@pytest.mark.slow
def test_byte_mutated_models_fail_cleanly(run_dir, tmp_path):
    """Bug: among byte-mutated model files, one segfaulted and one looped forever in HDF5. Every
    mutant must load or give a ModelFileError; none may crash or hang the process."""
    raw = bytearray((run_dir / "model.h5").read_bytes())
    rng = np.random.default_rng(0)
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(80):
        mutant = bytearray(raw)
        hot = int(rng.integers(0, 4096)) if i % 2 else int(rng.integers(0, len(raw)))  # headers first
        for at in rng.integers(max(0, hot - 64), min(len(raw), hot + 64), size=int(rng.integers(1, 9))):
            mutant[at] = int(rng.integers(0, 256))
        path = tmp_path / f"m{i}.h5"
        path.write_bytes(bytes(mutant))
        try:
            checkpoint.load_snapshot(path)
            outcomes["loaded"] += 1
        except ModelFileError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 10  # the mutations did damage


def test_cli_evaluate_on_a_linked_model_is_one_line(runner, run_dir, tmp_path, tiny_py):
    """The command line: exit 1 and one line naming the file."""

    def link(f):
        del f["W"]
        f["W"] = h5py.ExternalLink("/etc/passwd", "/W")

    path = copy_with(run_dir / "model.h5", tmp_path / "m.h5", link)
    r = runner.invoke(app, ["evaluate", str(path), "--data-dir", str(tiny_py)])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and str(path) in r.stderr and "link" in r.stderr
