"""cifarlin download: a local HTTP server, tiny archives, and hostile ones."""

from __future__ import annotations

import io
import json
import socket
import tarfile
from pathlib import Path

import pytest

from cifar_files import dataset_archive, md5, tar_gz
from cifarlin.cli import app
from cifarlin.data import cifar as data
from cifarlin.data import download, fetch
from cifarlin.data.source import DownloadConfig
from cifarlin.errors import DownloadError, WriteError
from servers import run


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    return dataset_archive(tmp_path_factory.mktemp("archive"))


def test_download_verify_extract_load_then_nothing_twice(runner, serve, archive, tmp_path):
    s = serve(archive)
    r, out = run(runner, "--url", s.url, "--md5", md5(archive), "--data-dir", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    folder = tmp_path / "cifar-10-batches-py"
    assert out["status"] == "downloaded" and out["path"] == str(folder)
    assert out["md5"] == md5(archive) and out["bytes"] == len(archive) and out["format"] == "python"
    assert out["official_files"] is False  # tiny test files are not the official ones
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]  # archive removed
    assert data.find(tmp_path).folder == folder
    assert data.read_batch(folder / "data_batch_1", "python").images.shape == (50, 3072)
    r, out = run(runner, "--url", s.url, "--md5", md5(archive), "--data-dir", tmp_path, "--json")
    assert out["status"] == "already present" and out["bytes"] == 0
    assert len(s.ranges) == 1  # nothing downloaded the second time
    assert "already present" in r.stderr


def test_force_downloads_again(runner, serve, archive, tmp_path):
    s = serve(archive)
    run(runner, "--url", s.url, "--md5", md5(archive), "--data-dir", tmp_path)
    _, out = run(runner, "--url", s.url, "--md5", md5(archive), "--data-dir", tmp_path, "--force", "--json")
    assert out["status"] == "downloaded" and len(s.ranges) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]


def test_broken_connection_resumes_with_range(serve, archive, tmp_path):
    s = serve(archive)
    s.drop_after = len(archive) // 2
    download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive)))
    assert s.ranges == [None, f"bytes={len(archive) // 2}-"]
    assert (tmp_path / "cifar-10-batches-py" / "test_batch").is_file()


def test_next_run_resumes_the_part_file(runner, serve, archive, tmp_path):
    s = serve(archive)
    s.drop_after = 1000
    r, _ = run(runner, "--url", s.url, "--md5", md5(archive), "--data-dir", tmp_path, "--retries", "0")
    assert r.exit_code == 1 and "run again to resume" in r.stderr
    part = tmp_path / ".cifarlin-download" / "cifar-10-python.tar.gz.part"
    assert part.stat().st_size == 1000
    assert not (tmp_path / "cifar-10-batches-py").exists()
    r, out = run(runner, "--url", s.url, "--md5", md5(archive), "--data-dir", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    assert s.ranges[-1] == "bytes=1000-" and out["status"] == "downloaded"
    assert not part.exists()


def test_server_without_range_support_restarts_cleanly(serve, archive, tmp_path):
    s = serve(archive)
    s.support_range = False
    s.drop_after = len(archive) // 3
    download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive)))
    assert s.ranges[1] is not None  # it asked to resume, the server sent everything again
    assert data.verify_dataset(data.Dataset(tmp_path / "cifar-10-batches-py", "python"))


def test_wrong_md5_refused_nothing_extracted_no_archive(runner, serve, archive, tmp_path):
    s = serve(archive)
    r, _ = run(runner, "--url", s.url, "--data-dir", tmp_path)  # expects the official MD5
    assert r.exit_code == 1
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("Error:") and "MD5 mismatch" in line
    assert download.OFFICIAL_MD5["python"] in line and md5(archive) in line
    assert list(tmp_path.iterdir()) == []
    r, _ = run(runner, "--url", s.url, "--data-dir", tmp_path, "--md5", md5(archive))
    assert r.exit_code == 0


def test_bad_md5_text_is_a_usage_error(runner, tmp_path):
    r, _ = run(runner, "--data-dir", tmp_path, "--md5", "xyz")
    assert r.exit_code == 2 and "--md5 'xyz'" in r.stderr


def test_http_error_is_reported(runner, serve, archive, tmp_path):
    s = serve(archive)
    r, _ = run(runner, "--url", s.url + "-missing", "--data-dir", tmp_path)
    assert r.exit_code == 1 and "404" in r.stderr


def test_unreachable_host_fails_cleanly(runner, tmp_path):
    r, _ = run(runner, "--url", "http://127.0.0.1:9/x.tar.gz", "--data-dir", tmp_path, "--retries", "1")
    assert r.exit_code == 1
    assert "failed after 2 attempts" in r.stderr and "--from-file" in r.stderr


def test_from_file_right_and_wrong(runner, archive, tmp_path):
    good = tmp_path / "mine.tar.gz"
    good.write_bytes(archive)
    dest = tmp_path / "data"
    r, _ = run(runner, "--from-file", good, "--data-dir", dest)
    assert r.exit_code == 1 and "MD5 mismatch" in r.stderr and not (dest / "cifar-10-batches-py").exists()
    r, out = run(runner, "--from-file", good, "--md5", md5(archive), "--data-dir", dest, "--json")
    assert r.exit_code == 0 and out["status"] == "installed" and out["origin"] == str(good)
    assert good.exists()  # the user's own archive is kept
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not an archive")
    r, _ = run(
        runner, "--from-file", bad, "--md5", md5(b"not an archive"), "--data-dir", tmp_path / "d2", "--force"
    )
    assert r.exit_code == 1 and "not a readable .tar.gz archive" in r.stderr


def test_binary_format(runner, serve, tmp_path):
    body = dataset_archive(tmp_path / "src", "binary")
    s = serve(body, "cifar-10-binary.tar.gz")
    r, out = run(
        runner,
        "--layout",
        "binary",
        "--url",
        s.url,
        "--md5",
        md5(body),
        "--data-dir",
        tmp_path / "d",
        "--json",
    )
    assert r.exit_code == 0, r.output
    assert out["path"] == str(tmp_path / "d" / "cifar-10-batches-bin") and out["official_files"] is None


def test_env_data_dir_is_used(runner, serve, archive, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLIN_DATA_DIR", str(tmp_path / "env"))
    s = serve(archive)
    _, out = run(runner, "--url", s.url, "--md5", md5(archive), "--json")
    assert out["path"] == str(tmp_path / "env" / "cifar-10-batches-py")


def test_data_dir_pointing_at_the_dataset_folder(runner, tiny_py):
    r, out = run(runner, "--data-dir", tiny_py, "--json")
    assert r.exit_code == 0 and out["status"] == "already present" and out["path"] == str(tiny_py)


def hostile(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("cifar-10-batches-py/readme")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"hi"))
        info = tarfile.TarInfo(
            {
                "dotdot": "cifar-10-batches-py/../../evil",
                "absolute": "/tmp/cifarlin-evil",
                "symlink": "cifar-10-batches-py/link",
                "hardlink": "cifar-10-batches-py/hard",
                "device": "cifar-10-batches-py/dev",
                "outside": "evil-top-level",
            }[kind]
        )
        data_bytes = b""
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        else:
            data_bytes = b"evil"
            info.size = 4
        tar.addfile(info, io.BytesIO(data_bytes))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device", "outside"])
def test_hostile_archives_are_refused(tmp_path, kind):
    body = hostile(kind)
    src = tmp_path / "hostile.tar.gz"
    src.write_bytes(body)
    target = tmp_path / "t" / "data"
    with pytest.raises(DownloadError, match="refused") as e:
        download.install(target, DownloadConfig(md5=md5(body)), from_file=src)
    assert "\n" not in str(e.value)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert written == ["hostile.tar.gz", "t"]  # nothing extracted, and the data folder it made is gone
    assert not Path("/tmp/cifarlin-evil").exists()


def test_archive_with_broken_files_is_refused(tmp_path):
    body = tar_gz({"cifar-10-batches-py/data_batch_1": b"garbage"})
    src = tmp_path / "a.tar.gz"
    src.write_bytes(body)
    with pytest.raises(
        DownloadError, match=r"does not hold a valid CIFAR-10 dataset \(cifar-10-batches-py/data_batch_1: "
    ):
        download.install(tmp_path / "d", DownloadConfig(md5=md5(body)), from_file=src)
    assert not (tmp_path / "d").exists()


def test_damaged_folder_is_fetched_again(serve, archive, tmp_path):
    s = serve(archive)
    download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive)))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"broken")
    notes = []
    res = download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive)), on_notice=notes.append)
    assert res.status == "downloaded" and "incomplete or damaged" in notes[0]
    assert data.verify_dataset(data.Dataset(tmp_path / "cifar-10-batches-py", "python"))


def test_train_fetches_missing_data(runner, serve, archive, tmp_path, monkeypatch):
    s = serve(archive)
    monkeypatch.setenv("CIFARLIN_URL", s.url)
    monkeypatch.setenv("CIFARLIN_MD5", md5(archive))
    r = runner.invoke(app, ["gradcheck", "--data-dir", str(tmp_path), "--n", "3", "--dims", "30"])
    assert r.exit_code == 0, r.output
    assert "downloading it there" in r.stderr and (tmp_path / "cifar-10-batches-py").is_dir()


def test_no_download_gives_the_one_line_error(runner, tmp_path):
    r = runner.invoke(app, ["gradcheck", "--data-dir", str(tmp_path), "--no-download"])
    assert r.exit_code == 1 and "no CIFAR-10 data in" in r.stderr and r.stderr.count("\n") == 1


def test_failed_auto_download_says_what_to_do(runner, tmp_path):
    r = runner.invoke(app, ["gradcheck", "--data-dir", str(tmp_path)])
    assert r.exit_code == 1
    line = r.stderr.strip().splitlines()[-1]
    assert "fetching it failed" in line and "--from-file" in line and "--data-dir" in line


def test_ctrl_c_keeps_the_part_and_the_next_run_resumes(runner, serve, archive, tmp_path):
    s = serve(archive)
    seen = []

    def press_ctrl_c(done, total):
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(download.Interrupted, match="run the same command again to resume") as e:
        download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive)), on_progress=press_ctrl_c)
    assert e.value.exit_code == 130
    part = tmp_path / ".cifarlin-download" / "cifar-10-python.tar.gz.part"
    kept = part.stat().st_size
    assert 0 < kept < len(archive) and not (tmp_path / "cifar-10-batches-py").exists()
    r, out = run(runner, "--url", s.url, "--md5", md5(archive), "--data-dir", tmp_path, "--json")
    assert r.exit_code == 0 and s.ranges[-1] == f"bytes={kept}-"
    assert out["status"] == "downloaded" and not part.exists()


def test_cli_exits_130_when_interrupted(runner, monkeypatch, tmp_path):
    def interrupted(*a, **k):
        raise download.Interrupted("download interrupted; x.part keeps what arrived")

    monkeypatch.setattr(download, "install", interrupted)
    r, _ = run(runner, "--data-dir", tmp_path)
    assert r.exit_code == 130 and r.stderr.strip() == "Error: download interrupted; x.part keeps what arrived"


def test_unknown_host_fails_at_once_without_retries(runner, monkeypatch, tmp_path):
    import urllib.error

    calls = []

    def no_dns(*a, **k):
        calls.append(1)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(fetch, "paced_urlopen", no_dns)
    r, _ = run(runner, "--url", "https://cifar.example.invalid/x.tar.gz", "--data-dir", tmp_path)
    assert r.exit_code == 1 and len(calls) == 1
    line = r.stderr.strip().splitlines()[-1]
    assert "cannot resolve cifar.example.invalid" in line and "--from-file" in line


def test_resume_that_starts_at_the_wrong_byte_starts_over(serve, archive, tmp_path):
    s = serve(archive)
    s.drop_after = 5000
    s.wrong_start = 100
    download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive)))
    assert s.ranges[:2] == [None, "bytes=5000-"] and s.ranges[2] is None  # discarded, fetched anew
    assert (tmp_path / "cifar-10-batches-py").is_dir()


def test_a_file_changed_between_attempts_is_fetched_anew(serve, archive, tmp_path):
    s = serve(archive)
    s.drop_after = 5000
    s.etag = '"v1"'
    with pytest.raises(DownloadError):
        download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive), retries=0))
    s.etag = '"v2"'  # the server's file changed
    download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive)))
    assert s.ranges[-1] == "bytes=5000-"  # it asked to resume, with If-Range, and got the whole file
    assert (tmp_path / "cifar-10-batches-py").is_dir()


def test_more_bytes_than_announced_are_not_accepted(serve, archive, tmp_path):
    s = serve(archive)
    s.drop_after = 5000
    s.extra = b"junk" * 1000
    download.install(
        tmp_path, DownloadConfig(url=s.url, md5=md5(archive))
    )  # the overlong resume is discarded
    assert s.ranges == [None, "bytes=5000-", None]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]


def test_a_complete_part_is_not_fetched_again(serve, archive, tmp_path):
    s = serve(archive)
    (tmp_path / ".cifarlin-download").mkdir()
    (tmp_path / ".cifarlin-download" / "cifar-10-python.tar.gz.part").write_bytes(archive)
    (tmp_path / ".cifarlin-download" / "cifar-10-python.tar.gz.part.json").write_text(
        json.dumps({"url": s.url, "etag": s.etag, "last_modified": None, "total": len(archive)})
    )
    download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive)))
    assert s.ranges == [f"bytes={len(archive)}-"]  # answered 416 */N: nothing more to fetch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]


def test_a_part_of_unknown_origin_is_not_resumed(serve, archive, tmp_path):
    s = serve(archive)
    (tmp_path / ".cifarlin-download").mkdir()
    (tmp_path / ".cifarlin-download" / "cifar-10-python.tar.gz.part").write_bytes(b"something else entirely")
    download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive)))
    assert s.ranges == [None]


def test_ctrl_c_while_unpacking_keeps_the_verified_archive(serve, archive, tmp_path, monkeypatch):
    s = serve(archive)
    real = download.extract

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "extract", interrupted)
    with pytest.raises(download.Interrupted, match="is kept"):
        download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive)))
    assert (tmp_path / ".cifarlin-download" / "cifar-10-python.tar.gz").is_file()
    monkeypatch.setattr(download, "extract", real)
    download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive)))
    assert len(s.ranges) == 1  # not downloaded again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]


def test_failed_swap_keeps_the_old_dataset(serve, archive, tmp_path, monkeypatch):
    s = serve(archive)
    download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive)))
    marker = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    before = marker.read_bytes()
    real = download.os.replace
    calls = []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # moving the new folder in fails
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(download.os, "replace", flaky)
    kept = tmp_path / ".cifarlin-download" / "cifar-10-python.tar.gz"
    with pytest.raises(WriteError) as e:  # the data folder's fault: the verified download is kept
        download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(archive)), force=True, from_file=None)
    assert str(e.value) == (
        f"{tmp_path / 'cifar-10-batches-py'}: cannot be replaced (No space left on device); "
        f"the verified download stays in {kept} for the next run"
    )
    monkeypatch.setattr(download.os, "replace", real)
    assert marker.read_bytes() == before and kept.read_bytes() == archive
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cifarlin-download", "cifar-10-batches-py"]


@pytest.mark.parametrize("url", ["notaurl", "http://[::1", "gopher://x/y", "http:///nohost"])
def test_bad_urls_are_usage_errors(runner, tmp_path, url):
    r, _ = run(runner, "--url", url, "--data-dir", tmp_path)
    assert r.exit_code == 2 and "--url" in r.stderr and r.stderr.count("\n") == 1
