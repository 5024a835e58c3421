"""File-system faults while cifarlin writes (issue 25): a full disk (ENOSPC), a file size limit
(EFBIG), a read-only file system (EROFS), a folder without write permission (EACCES) and a name
too long (ENAMETOOLONG). Whatever the file (the HDF5 run files, sweep.h5, feature maps; PNG, PDF
and SVG figures; CSV, JSON, npz; the feature cache; a download's .part and the unpacked dataset),
the command ends with ONE line on stderr naming the file (or the folder it cannot write in) and
the cause, exit code 1, no temporary or half-written file anywhere, and every earlier file byte
for byte. A path given on the command line that the system cannot use at all is refused before
anything is written: exit 2, a usage error (as ever).

The faults of the matrix are real, made by the kernel, in a child process that runs the command
line (``python THIS_FILE SPEC``: the commands of one fault, one after another, in one interpreter):

    EFBIG         RLIMIT_FSIZE of half the file's size (no privilege needed)
    ENOSPC        a tmpfs per command, filled up but for half the file's size, in a user and
                  mount namespace (``unshare -Urm``)
    EROFS         a read-only bind mount of the command's folder, in such a namespace
    EACCES        folders of mode 555, written by a process without CAP_DAC_OVERRIDE (as root,
                  ``setpriv`` takes it out of the bounding set; another user has none anyway)
    ENAMETOOLONG  the issue's 6,000-byte path of short names

ENOSPC and EROFS are skipped where unprivileged namespaces are not available. The fast tests at
the end aim at what the matrix cannot: model.h5 and history.h5 at the end of a run, summary.json
and summary.md of --setting all, the figures train draws over earlier ones, a download whose file
fails as it is closed, and the cache's pair of files.
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import json
import os
import re
import resource
import select
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from cifar_files import dataset_archive, md5, write_python_dataset

LONG = "/".join(["abcdefghi"] * 600)  # the 6,000-character path of short components
LEFT_BEHIND = re.compile(r"\.tmp$|\.part(\.json)?$|\.cifarlin-(extract|probe)-|\.previous-run-|\.lock$")
UNCHANGED = "any earlier version of it is unchanged"
CAUSE = {
    "ENOSPC": "No space left on device",
    "EFBIG": "File too large",
    "EROFS": "Read-only file system",
    "EACCES": "Permission denied",
}


# ---------------------------------------------------------------------------------------------
# The driver: runs in a child process, under the fault, and prints one JSON line per command
# ---------------------------------------------------------------------------------------------


def listing(root: Path) -> dict[str, str]:
    """Every file under ``root``: its path relative to ``root`` -> the SHA-256 of its bytes."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            p = Path(folder) / name
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _fill(root: Path, leave: int) -> None:
    """Take every free byte of the file system of ``root`` but ``leave`` (about: tmpfs counts
    4 kB pages), so that a write fails part-way, as on a disk that fills up meanwhile."""
    with open(root / "filler", "wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while f.write(b"\0" * size):
                    pass
            except OSError:
                pass
        f.truncate(max(0, f.tell() - leave))


def _probe(root: Path, size: int) -> int | None:
    """The errno with which a new file of ``size`` bytes in ``root`` fails (None: it could be
    written): the proof that the fault is in effect."""
    p = root / ".fault-probe"
    try:
        with open(p, "wb") as f:
            f.write(b"x" * size)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e.errno
    finally:
        try:
            p.unlink()
        except OSError:
            pass
    return None


_pipes: list[int] = []  # read ends kept open: the helper process, which outlives a command, holds one


def _streams_to(err: int, out: int) -> None:
    """stderr to ``err`` and stdout to ``out`` (both closed here), Python's buffers flushed first."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(err, 2)
    os.dup2(out, 1)
    os.close(err)
    os.close(out)


def _run_cli(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """``cifarlin ARGV`` in this process: its exit code and what reached file descriptor 2."""
    from cifarlin.cli import main

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    r, w = os.pipe()  # a pipe, not a file: the size limit applies to files
    _pipes.append(r)
    err, out, null = os.dup(2), os.dup(1), os.open(os.devnull, os.O_WRONLY)
    _streams_to(w, null)
    got, done = bytearray(), threading.Event()

    def drain() -> None:  # while the command runs, then what it left in the pipe
        over = False
        while not over:
            over = done.is_set()  # before the last look: all the command wrote is in the pipe
            while select.select([r], [], [], 0 if over else 0.05)[0]:
                if not (chunk := os.read(r, 65536)):
                    return  # no writer left
                got.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    sys.argv = ["cifarlin", *argv]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        _streams_to(err, out)
        done.set()
        reader.join()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return code, got.decode(errors="replace")


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def drive(spec_file: str) -> None:
    """Run the jobs of one fault, each one command in its own folder under the fault."""
    from cifarlin.store import helper

    spec = json.loads(Path(spec_file).read_text())
    fault = spec["fault"]
    unlimited = resource.getrlimit(resource.RLIMIT_FSIZE)
    for job in spec["jobs"]:
        root = Path(job["root"])
        if fault == "ENOSPC":
            _mount("-t", "tmpfs", "-o", f"size={job['tmpfs']}", "tmpfs", str(root))
            shutil.copytree(job["earlier"], root, dirs_exist_ok=True)
            if job["fill"]:
                _fill(root, job["size"])
        elif fault == "EROFS":
            _mount("--bind", str(root), str(root))
            _mount("-o", "remount,bind,ro", str(root))
        elif fault == "EFBIG":
            resource.setrlimit(resource.RLIMIT_FSIZE, (job["size"], unlimited[1]))
        probe = _probe(root, job["size"] + 8192) if fault != "ENAMETOOLONG" and job["fill"] else None
        code, stderr = _run_cli(job["argv"], job["env"])
        if fault == "EFBIG":
            resource.setrlimit(resource.RLIMIT_FSIZE, unlimited)
            helper.stop_helper()  # the next command's helper gets the next limit
        if fault == "ENOSPC":
            (root / "filler").unlink(missing_ok=True)
        result = {"job": job["name"], "code": code, "stderr": stderr, "probe": probe, "files": listing(root)}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    drive(sys.argv[1])
    sys.exit(0)


# ---------------------------------------------------------------------------------------------
# What each writer is given, and what it must answer
# ---------------------------------------------------------------------------------------------

FAULTS = ["ENOSPC", "EFBIG", "EROFS", "EACCES", "ENAMETOOLONG"]
WRITERS = [
    "checkpoint.h5",  # train --resume: the run files (checkpoint.h5 is written first)
    "curves.png by train",  # a full disk after the run files (the 400 kB tmpfs): ENOSPC only
    "curves.png",  # visualize --format png, pdf, svg
    "curves.pdf",
    "curves.svg",
    "model.npz",  # export
    "history.csv",
    "kmeans.h5",  # features fit
    "feature cache",  # train --features: .npy and .json under $XDG_CACHE_HOME/cifarlin/features
    "sweep.h5",  # a sweep whose trials are done: sweep.h5 and results.csv
    "download .part",  # download --url
    "unpacked dataset",  # download --from-file
    "gradcheck.json",  # gradcheck --out
    "report.html",  # report -o, of the golden run folders
]
ONLY = {"curves.png by train": {"ENOSPC"}, "unpacked dataset": {"ENOSPC", "EFBIG", "EROFS", "EACCES"}}
XFAIL: dict[tuple[str, str], str] = {}  # (writer, fault) -> why it still fails
MATRIX = [
    pytest.param(
        w,
        f,
        id=f"{w}-{f}",
        marks=[pytest.mark.slow]
        + ([pytest.mark.xfail(reason=XFAIL[w, f], strict=True)] if (w, f) in XFAIL else []),
    )
    for w in WRITERS
    for f in FAULTS
    if f in ONLY.get(w, FAULTS)
]


def job(writer: str, fault: str, g: SimpleNamespace, base: Path) -> dict:
    """The command for ``writer`` under ``fault``: its folder (``root``), the earlier files put
    there (``earlier``), and the answer expected: the exit code, the path named (a regex), the
    cause, and the files it may add (``new``)."""
    root = base / "out"
    long = root / LONG
    data = ["--data-dir", str(g.data)]
    write_fault = fault in ("ENOSPC", "EFBIG")
    earlier: dict[str, Path] = {}  # name in root -> a golden file or folder
    env = {"XDG_CACHE_HOME": str(base / "xdg-default")}
    tail = ""  # a regex after the path named
    if writer == "checkpoint.h5":
        earlier = {"run": g.run}
        out = long if fault == "ENAMETOOLONG" else root / "run"
        argv = ["train", *data, "--batch-size", "10", "--epochs", "3", "--resume", "--out", str(out), "-q"]
        named = out / "checkpoint.h5" if write_fault else out
    elif writer == "curves.png by train":
        named, tail = root / "run", r"/(curves|montage)\.png"
        argv = ["train", *data, "--batch-size", "10", "--epochs", "2", "--out", str(named), "-q"]
    elif writer.startswith("curves."):
        earlier = {f"vis/{writer}": g.vis / writer}
        out = long if fault == "ENAMETOOLONG" else root / "vis"
        argv = ["visualize", str(g.run), "--what", "curves", "--format", writer[7:], "--out", str(out), "-q"]
        named = out if fault == "ENAMETOOLONG" else out / writer
    elif writer in ("model.npz", "history.csv"):
        earlier = {writer: g.root / writer}
        named = (long if fault == "ENAMETOOLONG" else root) / writer
        argv = ["export", str(g.run), "--to", str(named), "--overwrite", "-q"]  # over the earlier file
    elif writer == "kmeans.h5":
        earlier = {"kmeans.h5": g.kmeans}
        named = (long if fault == "ENAMETOOLONG" else root) / "kmeans.h5"
        argv = ["features", "fit", *data, *g.fit_args, "--out", str(named), "--overwrite", "-q"]
    elif writer == "feature cache":
        earlier = {"xdg": g.empty}
        env["XDG_CACHE_HOME"] = str(long if fault == "ENAMETOOLONG" else root / "xdg")
        named = Path(env["XDG_CACHE_HOME"]) / "cifarlin" / "features"
        tail = r"(/[0-9a-f]+-[0-9a-f]+\.npy)?" if write_fault else ""
        run = base / "elsewhere" / "run"  # the run itself goes where nothing fails (but EFBIG)
        argv = ["train", *data, "--features", str(g.kmeans), "--batch-size", "10", "--epochs", "1"]
        argv += ["--no-plots", "--out", str(run), "-q"]
    elif writer == "sweep.h5":
        earlier = {"sweep": g.sweep}
        out = long if fault == "ENAMETOOLONG" else root / "sweep"
        argv = ["sweep", *data, *g.sweep_args, "--out", str(out), "--no-plots", "-q"]
        named = out / "sweep.h5" if write_fault else out  # the folder whose lock cannot be made
    elif writer == "download .part":
        earlier = {"dl/cifar-10-batches-py": g.data}
        out = long if fault == "ENAMETOOLONG" else root / "dl"
        argv = ["download", "--url", g.url, "--md5", g.md5, "--data-dir", str(out), "--force"]
        argv += ["--retries", "0", "-q"]
        named = out if fault == "ENAMETOOLONG" else out / ".cifarlin-download"
        tail = r"(/cifar-10-python\.tar\.gz\.part(\.json)?)?" if write_fault else ""
    elif writer == "gradcheck.json":
        earlier = {writer: g.root / "gradcheck-ce.json"}
        named = (long if fault == "ENAMETOOLONG" else root) / writer
        argv = ["gradcheck", "--random", "--dims", "100", "--out", str(named), "-q"]
    elif writer == "report.html":
        earlier = {writer: g.report}
        named = (long if fault == "ENAMETOOLONG" else root) / writer
        argv = ["report", str(g.run.parent), "--no-draw", "-o", str(named), "-q"]
    else:  # the unpacked dataset
        earlier = {"dlf/cifar-10-batches-py": g.data}
        named = root / "dlf"
        argv = ["download", "--from-file", str(g.archive), "--md5", g.md5, "--data-dir", str(named)]
        argv += ["--force", "-q"]
    # the fault strikes part-way through the file (as the ulimit -f 100 did): a file size
    # limit, or the free space left, of half the size of the file (or of the first big one)
    sizes = {
        "checkpoint.h5": g.run / "checkpoint.h5",
        "kmeans.h5": g.kmeans,
        "sweep.h5": g.sweep / "sweep.h5",
    }
    sizes |= {"download .part": g.archive, "unpacked dataset": g.data / "data_batch_1"}
    sizes |= {w: g.vis / w for w in ("curves.png", "curves.pdf", "curves.svg")}
    sizes |= {w: g.root / w for w in ("model.npz", "history.csv")}
    sizes |= {"gradcheck.json": g.root / "gradcheck-ce.json", "report.html": g.report}
    size = sizes[writer].stat().st_size // 2 if writer in sizes else 1000
    size = 8192 if writer == "kmeans.h5" else size  # where HDF5 crashed, before the fix
    code, cause = 1, CAUSE.get(fault, "File name too long")
    if fault == "ENAMETOOLONG" and writer != "feature cache":  # refused before anything is written
        code, cause = 2, r"longer than \d+ bytes"
    by_train = writer == "curves.png by train"
    return {
        "name": writer,
        "root": str(root),
        "earlier": earlier,
        "argv": argv,
        "env": env,
        "code": code,
        "named": re.escape(str(named)) + tail,
        "cause": cause,
        "size": size,
        "fill": not by_train,  # the case: the run files fit, the figures do not
        "tmpfs": "400k" if by_train else "8m",
        "new": {f"run/{n}" for n in ("checkpoint.h5", "model.h5", "history.h5")} if by_train else set(),
    }


# ---------------------------------------------------------------------------------------------
# Fixtures: the earlier files, a server, and the drivers of the faults the session asks for
# ---------------------------------------------------------------------------------------------


class _Server:
    """Serves ``body`` at /cifar-10-python.tar.gz on 127.0.0.1."""

    def __init__(self, body: bytes):
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-10-python.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _cli(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> None:
    from cifarlin.cli import app

    r = runner.invoke(app, [str(a) for a in args], env=env)
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def golden(tmp_path_factory, tiny_py) -> Iterator[SimpleNamespace]:
    """The earlier versions: a 2-epoch run with its figures, visualize's figures in each format,
    an export, a feature map, a sweep whose one trial is done; an archive of the data, served."""
    g = tmp_path_factory.mktemp("golden")
    runner = CliRunner()
    env = {"XDG_CACHE_HOME": str(g / "xdg")}
    data = ["--data-dir", str(tiny_py)]
    _cli(runner, "train", *data, "--batch-size", "10", "--epochs", "2", "--out", g / "run", "-q", env=env)
    for fmt in ("png", "pdf", "svg"):
        _cli(runner, "visualize", g / "run", "--what", "curves", "--format", fmt, "--out", g / "vis", "-q")
    _cli(runner, "export", g / "run", "--to", g / "model.npz", "--to", g / "history.csv", "-q")
    fit_args = ["--centroids", "4", "--patches", "1000", "--iterations", "2", "--train-batches", "1"]
    fit_args += ["--val-size", "20"]
    _cli(runner, "features", "fit", *data, *fit_args, "--out", g / "kmeans.h5", "-q")
    sweep_args = ["--lam", "0", "--eta", "0.01", "--epochs", "1", "--batch-size", "10"]
    trial = ["--eta", "0.01", "--epochs", "1", "--batch-size", "10", "--no-plots"]  # its trial, done
    _cli(runner, "train", *data, *trial, "--out", g / "sweep" / "trial-001", "-q", env=env)
    _cli(runner, "sweep", *data, *sweep_args, "--out", g / "sweep", "--no-plots", "-q", env=env)
    _cli(runner, "gradcheck", "--random", "--dims", "100", "--out", g / "gradcheck-ce.json", "-q")
    (g / "reports").mkdir()  # the report of the runs above, beside them
    _cli(runner, "report", g, "--no-draw", "-o", g / "reports" / "report.html", "-q", env=env)
    archive = dataset_archive(g)
    (g / "cifar-10-python.tar.gz").write_bytes(archive)
    (g / "empty").mkdir()
    server = _Server(archive)
    yield SimpleNamespace(
        root=g,
        data=tiny_py,
        run=g / "run",
        vis=g / "vis",
        kmeans=g / "kmeans.h5",
        fit_args=fit_args,
        sweep=g / "sweep",
        sweep_args=sweep_args,
        empty=g / "empty",
        archive=g / "cifar-10-python.tar.gz",
        report=g / "reports" / "report.html",
        md5=md5(archive),
        url=server.url,
    )
    server.close()


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _prefix(fault: str, scratch: Path) -> list[str] | str:
    """How the driver of ``fault`` is started, or why it cannot be here."""
    if fault in ("ENOSPC", "EROFS"):
        scratch.mkdir(parents=True, exist_ok=True)
        if not _works(["unshare", "-Urm", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(scratch)]):
            return (
                f"{fault} needs a small tmpfs or a read-only bind mount, made without privileges in a "
                "user and mount namespace (unshare -Urm), which this system does not allow"
            )
        return ["unshare", "-Urm"]
    if fault == "EACCES" and os.geteuid() == 0:
        drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]
        if not _works([*drop, "true"]):
            return "EACCES as root needs setpriv to give up CAP_DAC_OVERRIDE, which failed here"
        return drop
    return []


def _place(j: dict, fault: str) -> None:
    """Put the earlier files in place: in the folder, or (ENOSPC) beside it, for the driver to
    copy into the tmpfs it mounts there."""
    root = Path(j["root"])
    stage = root.parent / "earlier"
    stage.mkdir(parents=True)
    for name, src in j["earlier"].items():
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, stage / name)
    root.mkdir()
    if fault != "ENOSPC":
        shutil.copytree(stage, root, dirs_exist_ok=True)
    if fault == "EACCES":
        for folder, _, _ in os.walk(root):
            os.chmod(folder, 0o555)
    j["earlier"] = str(stage)


@pytest.fixture(scope="module")
def faults(request, golden, tmp_path_factory) -> Iterator[dict[str, dict]]:
    """Each fault the session's tests ask for, driven once for all its writers (the drivers run
    at the same time): fault -> {"skip": why} or {"jobs": [job], "results": {writer: result},
    "code": the driver's exit code, "stderr": its own}."""
    wanted = {
        item.callspec.params["fault"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_a_write_fault_is_one_line_and_loses_nothing"
    }
    base = tmp_path_factory.mktemp("faults")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIFARLIN_")}
    import matplotlib  # the golden figures built its font cache: the drivers read it, not rebuild it

    env.update(NO_COLOR="1", COLUMNS="200", MPLCONFIGDIR=matplotlib.get_cachedir())
    started: dict[str, dict] = {}
    for fault in [f for f in FAULTS if f in wanted]:
        prefix = _prefix(fault, base / "scratch" / fault)
        if isinstance(prefix, str):
            started[fault] = {"skip": prefix}
            continue
        jobs = []
        for w in WRITERS:
            if fault in ONLY.get(w, FAULTS):
                j = job(w, fault, golden, base / fault / w.replace(" ", "-"))
                _place(j, fault)
                jobs.append(j)
        spec = base / fault / "spec.json"
        spec.write_text(json.dumps({"fault": fault, "jobs": jobs}, default=sorted))
        proc = subprocess.Popen(
            [*prefix, sys.executable, __file__, str(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        started[fault] = {"proc": proc, "jobs": jobs}

    def collect(s: dict) -> None:
        out, err = s["proc"].communicate(timeout=600)
        results = {r["job"]: r for r in map(json.loads, out.splitlines())}
        s.update(code=s["proc"].returncode, stderr=err, results=results)

    readers = [threading.Thread(target=collect, args=(s,)) for s in started.values() if "proc" in s]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    yield started
    for fault in started:  # let pytest remove what EACCES made read-only
        for folder, _, _ in os.walk(base / fault):
            os.chmod(folder, 0o755)


# ---------------------------------------------------------------------------------------------
# The matrix
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer, fault", MATRIX)
def test_a_write_fault_is_one_line_and_loses_nothing(faults, golden, writer, fault):
    """Bugs before the fix: EFBIG or ENOSPC part-way through an HDF5 file ended in 'unexpected
    RuntimeError' (h5py's close, the issue's case) or crashed the process (a segmentation fault,
    HDF5 closing a file whose writes failed) leaving its temporary file; a PDF on a full disk
    ended in 'unexpected AttributeError' (matplotlib's cleanup); the cache's .npy past a size
    limit was stored cut short, without an error; a download's .part that could not be written
    was retried as a broken connection and left behind; a 6,000-byte --out ended in 'unexpected
    OSError' (check_path's own is_dir); a read-only or forbidden feature cache or sweep folder
    ended in 'unexpected OSError' (the cache's mkdir, the sweep's lock file)."""
    state = faults[fault]
    if "skip" in state:
        pytest.skip(state["skip"])
    j = next(j for j in state["jobs"] if j["name"] == writer)
    r = state["results"].get(writer)
    assert r is not None, (
        f"the driver ended (exit {state['code']}) before this job: {state['stderr'][-3000:]}"
    )
    if fault in CAUSE and j["fill"]:
        assert r["probe"] == getattr(errno, fault), f"the fault is not in effect: {r['probe']}"
    lines = r["stderr"].splitlines()
    assert len(lines) == 1 and r["stderr"].endswith("\n"), r
    line = lines[0]
    assert r["code"] == j["code"], line
    assert re.match(rf"Error: (--[a-z-]+ ')?{j['named']}'?: ", line), line
    assert re.search(j["cause"], line), line
    assert "unexpected" not in line and "bug in cifarlin" not in line
    before = listing(Path(j["earlier"]))
    after = r["files"]
    assert not [name for name in after if LEFT_BEHIND.search(name)], after
    assert {k: v for k, v in after.items() if k not in j["new"]} == before  # every earlier file as it was


# ---------------------------------------------------------------------------------------------
# Fast tests, in this process
# ---------------------------------------------------------------------------------------------


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """RLIMIT_FSIZE for this process, for the block (Python ignores SIGXFSZ: a write past the
    limit fails with EFBIG). Nothing else of the test writes files meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_path_of_thousands_of_short_names_is_a_usage_error(tmp_path):
    """Bug: check_path called Path.is_dir() on the over-long parents, which raised ENAMETOOLONG,
    the error the check exists to catch ('unexpected OSError')."""
    from cifarlin.errors import ConfigError
    from cifarlin.store.files import check_path

    for field in ("out", "to"):
        with pytest.raises(ConfigError, match=rf"^{field}='.*': cannot be used .*\(longer than \d+ bytes\)$"):
            check_path(tmp_path / LONG, field)


def test_a_long_valid_file_name_is_written(tmp_path):
    """Bug: a 250-byte name (the limit is 255) could not be written: its temporary file's name,
    28 bytes longer, was too long."""
    from cifarlin.store.files import write_text

    target = tmp_path / ("n" * 246 + ".csv")
    write_text(target, "a,b\n")
    assert target.read_text() == "a,b\n" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_hdf5_past_a_file_size_limit_is_a_write_error(tmp_path):
    """Bug: h5py raised RuntimeError ('Can't decrement id ref count ... errno = 27') from its close
    when HDF5's own write had failed; shown as 'unexpected RuntimeError'. Now HDF5 builds the file
    in memory and one plain write puts it on disk (the same bytes)."""
    from cifarlin.core import kmeans
    from cifarlin.errors import WriteError
    from cifarlin.store import featuremap

    rng = np.random.default_rng(0)
    fmap = kmeans.FeatureMap(rng.random((4, 108), dtype=np.float32), np.zeros(108), np.eye(108))
    path = tmp_path / "kmeans.h5"
    featuremap.save(path, fmap)
    before = path.read_bytes()
    with pytest.raises(WriteError) as e, file_size_limit(20_000):
        featuremap.save(path, fmap, {"note": "again"})
    assert str(e.value) == f"{path}: cannot be written (File too large); {UNCHANGED}"
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["kmeans.h5"]
    assert featuremap.load(path, probe=False).checksum == fmap.checksum  # the file as HDF5 reads it


def test_h5py_errors_carrying_an_errno_are_write_errors(tmp_path):
    """What h5py raises when HDF5's write fails (an OSError or a RuntimeError whose text holds
    the errno) names the cause; a RuntimeError without one is no write failure, and stays itself."""
    from cifarlin.errors import WriteError
    from cifarlin.store.files import atomic_path

    closing = "Can't decrement id ref count (unable to extend file properly, errno = 27, error message = 'x')"
    with (
        pytest.raises(WriteError, match=r"x.h5: cannot be written \(File too large\)"),
        atomic_path(tmp_path / "x.h5"),
    ):
        raise RuntimeError(closing)
    with pytest.raises(RuntimeError, match="no errno"), atomic_path(tmp_path / "x.h5"):
        raise RuntimeError("no errno here")
    assert list(tmp_path.iterdir()) == []


def failing_rename(monkeypatch, name: str, code: int = errno.ENOSPC) -> list[str]:
    """Make the rename of a temporary file over ``name`` fail with ``code`` (the last step of
    every write; ENOSPC there: a full disk with no room for the folder to grow)."""
    real, seen = os.replace, []

    def replace(src, dst, *a, **k):
        if Path(dst).name == name:
            seen.append(str(dst))
            raise OSError(code, os.strerror(code), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    return seen


def run_cli(runner, *args):
    from cifarlin.cli import app

    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("name", ["model.h5", "history.h5", "curves.png", "montage.png"])
def test_the_last_files_of_a_run_keep_their_earlier_version(runner, tiny_py, tmp_path, monkeypatch, name):
    """model.h5 and history.h5 are written after the training, the figures after them: a failure
    there is one line naming the file, and a resumed run's earlier file stays as it was."""
    from cifarlin.store import helper

    monkeypatch.setattr(helper, "available", lambda: False)  # the figures drawn here, not by a child
    out = tmp_path / "run"
    common = ["train", "--data-dir", tiny_py, "--batch-size", "10", "--out", out, "-q"]
    assert run_cli(runner, *common, "--epochs", "2").exit_code == 0
    before = listing(out)
    seen = failing_rename(monkeypatch, name)
    r = run_cli(runner, *common, "--epochs", "3", "--resume")
    assert seen and r.exit_code == 1, r.output
    assert r.stderr == f"Error: {out / name}: cannot be written (No space left on device); {UNCHANGED}\n"
    after = listing(out)
    assert after[name] == before[name] and set(after) == set(before)


@pytest.mark.parametrize("name", ["summary.json", "summary.md"])
def test_the_summary_of_setting_all_keeps_its_earlier_version(runner, tmp_path, monkeypatch, name):
    """--setting all writes summary.json and summary.md after its runs: a failure there is one line
    (after the notes of the runs reused), and the earlier summary stays as it was."""
    data = write_python_dataset(tmp_path / "data" / "cifar-10-batches-py", n=100)  # batches of 100
    out = tmp_path / "all"
    args = ["train", "--setting", "all", "--data-dir", data, "--epochs", "1", "--no-plots", "-q"]
    args += ["--out", out]
    assert run_cli(runner, *args).exit_code == 0
    before = listing(out)
    seen = failing_rename(monkeypatch, name)
    r = run_cli(runner, *args)  # the runs are reused (a note each), the summary written again
    assert seen and r.exit_code == 1, r.output
    errors = [line for line in r.stderr.splitlines() if not line.startswith("note: ")]
    fault = f"Error: {out / name}: cannot be written (No space left on device); {UNCHANGED}"
    resume = "; once that is fixed, resume with 'cifarlin train --setting all --epochs 1 --out "
    assert len(errors) == 1 and errors[0].startswith(fault + resume), errors
    assert listing(out) == before


def test_a_download_that_fails_as_its_file_closes_is_not_retried(tmp_path):
    """Bug: the buffered .part is written when it is closed; a full disk or a size limit there was
    taken for a broken connection: retried, then 'download failed after 3 attempts (OSError ...)',
    the .part left behind."""
    from cifarlin.data.fetch import fetch
    from cifarlin.errors import DownloadError

    server = _Server(bytes(range(256)) * 20)  # 5,120 bytes: in the write buffer until close
    try:
        dest = tmp_path / "x.tar.gz"
        with pytest.raises(DownloadError) as e, file_size_limit(1000):
            fetch(server.url, dest, retries=2)
    finally:
        server.close()
    assert str(e.value).startswith(f"{dest}.part: cannot be written (File too large); the partial download")
    assert server.requests == 1 and list(tmp_path.iterdir()) == []


def test_the_feature_cache_keeps_no_values_without_their_digest(tmp_path, monkeypatch):
    """Bug: when the .json beside a cache entry's .npy could not be written, the .npy stayed (the
    entry a miss for ever, its space taken); and the cache's folder was made with a bare mkdir."""
    from cifarlin.errors import WriteError
    from cifarlin.features.cache import FeatureCache

    fmap = SimpleNamespace(checksum="0" * 64)
    cache = FeatureCache(tmp_path / "cache")
    failing_rename(monkeypatch, f"{cache.key(fmap, '1' * 32)}.json")
    with pytest.raises(WriteError, match=r"\.json: cannot be written .*XDG_CACHE_HOME"):
        cache.put(fmap, "1" * 32, np.ones((3, 16), dtype=np.float32))
    assert list((tmp_path / "cache").iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteError, match="cannot create the feature cache"):
        FeatureCache(tmp_path / "file" / "cache").put(fmap, "1" * 32, np.ones((3, 16), dtype=np.float32))


def test_a_cache_entry_past_a_file_size_limit_is_not_cut_short(tmp_path):
    """Bug: np.save given a real file writes with C stdio and does not check the end: past a file
    size limit (or on a full disk) the .npy was cut short without an error, and stored with the
    .json that vouches for the whole values."""
    from cifarlin.errors import WriteError
    from cifarlin.features.cache import FeatureCache

    fmap = SimpleNamespace(checksum="0" * 64, n_features=16)
    cache = FeatureCache(tmp_path / "cache")
    values = np.random.default_rng(0).random((50, 16), dtype=np.float32)  # 3,328 bytes as .npy
    with (
        pytest.raises(WriteError, match=r"\.npy: cannot be written \(File too large\)"),
        file_size_limit(1000),
    ):
        cache.put(fmap, "1" * 32, values)
    assert list((tmp_path / "cache").iterdir()) == []
    cache.put(fmap, "1" * 32, values)
    assert np.array_equal(cache.get(fmap, "1" * 32, 50), values)
