"""Hostile and unlucky inputs to ``cifarlin download``: archives whose headers would make tarfile
read gigabytes, gzip trailers that do not match, a full disk while unpacking, URLs whose names
collide with the user's files, servers that trickle bytes, and absurd option values."""

from __future__ import annotations

import errno
import io
import math
import os
import ssl
import subprocess
import tarfile
import tracemalloc
import zlib
from collections.abc import Iterable
from pathlib import Path

import pytest

from cifar_files import dataset_archive, md5, tar_gz
from cifarlin.data import archive as archive_mod
from cifarlin.data import download
from cifarlin.data import http as paced_http
from cifarlin.data.fetch import fetch
from cifarlin.data.source import DownloadConfig
from cifarlin.errors import ConfigError, DownloadError, WriteError
from servers import run

FOLDER = "cifar-10-batches-py"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    return dataset_archive(tmp_path_factory.mktemp("archive"))


def one_line(r) -> str:
    """The CLI's error: one line, the last on stderr (notices come before it)."""
    lines = r.stderr.splitlines()
    assert [ln for ln in lines if ln.startswith("Error:")] == lines[-1:], r.stderr
    return lines[-1]


def gzip_of(parts: Iterable[bytes]) -> bytes:
    """A gzip stream of ``parts``, compressed as they come (100 MB of zeros make 450 kB)."""
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    return b"".join([*(z.compress(p) for p in parts), z.flush()])


def header(name: str, type_: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = type_, size
    return info.tobuf(tarfile.GNU_FORMAT)


def long_header_archive(type_: bytes, size: int) -> bytes:
    """An archive whose first header is of ``type_`` and declares ``size`` bytes of payload (all
    of them present, zeros), followed by a regular member."""

    def parts():
        yield header(f"{FOLDER}/x", type_, size)
        left = -(-size // 512) * 512
        zeros = bytes(1 << 20)
        while left:
            yield zeros[: min(left, len(zeros))]
            left -= min(left, len(zeros))
        yield header(f"{FOLDER}/readme", tarfile.REGTYPE, 0) + bytes(1024)

    return gzip_of(parts())


def install_file(folder: Path, body: bytes):
    """Install ``body`` from ``folder/in.tar.gz`` into ``folder/data``."""
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "in.tar.gz"
    src.write_bytes(body)
    return download.install(folder / "data", DownloadConfig(md5=md5(body)), from_file=src)


def refused_with_bounded_memory(folder: Path, body: bytes) -> tuple[str, float]:
    """(the error, peak MB Python allocated while refusing); nothing may be left unpacked."""
    tracemalloc.start()
    try:
        with pytest.raises(DownloadError) as e:
            install_file(folder, body)
        peak = tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()
    assert sorted(p.name for p in folder.iterdir()) == ["in.tar.gz"]  # not even the data folder
    assert "\n" not in str(e.value)
    return str(e.value), peak


# ---------------------------------------------------------------------------------------------
# 1a. Headers whose payload tarfile reads whole
# ---------------------------------------------------------------------------------------------

LONG = {
    b"x": "a PAX header",
    b"g": "a PAX global header",
    b"L": "a GNU long-name header",
    b"K": "a GNU long-link header",
}


@pytest.mark.parametrize("type_", list(LONG))
def test_a_huge_long_header_is_refused_before_its_payload_is_read(tmp_path, type_):
    # The bug: tarfile read the whole 100 MB payload into memory before any check (gigabytes
    # for a header of a few GB, from a .tar.gz of a few MB).
    body = long_header_archive(type_, 100_000_000)
    assert len(body) < 1_000_000
    message, peak = refused_with_bounded_memory(tmp_path, body)
    src = tmp_path / "in.tar.gz"
    assert message == f"{src}: refused: {LONG[type_]} at byte 0 declares 100,000,000 bytes (at most 16,384)"
    assert peak < 50


@pytest.mark.parametrize("size", [archive_mod.MAX_HEADER, archive_mod.MAX_HEADER + 1])
def test_the_long_header_cap_boundary(tmp_path, size):
    # A PAX header of MAX_HEADER bytes is read (this archive then lacks the dataset); one byte
    # more is refused unread.
    with pytest.raises(DownloadError) as e:
        install_file(tmp_path, long_header_archive(b"x", size))
    if size > archive_mod.MAX_HEADER:
        assert str(e.value).endswith(
            f"refused: a PAX header at byte 0 declares {size:,} bytes (at most 16,384)"
        )
    else:
        assert "does not hold a valid CIFAR-10 dataset" in str(e.value)


def test_a_chain_of_small_extended_headers_is_refused(tmp_path):
    # Each extended header makes tarfile read the next one recursively.
    chain = b"".join(
        header(f"{FOLDER}/n", tarfile.GNUTYPE_LONGNAME, 512) + b"a" * 511 + b"\0" for _ in range(9)
    )
    body = gzip_of([chain, header(f"{FOLDER}/readme", tarfile.REGTYPE, 0), bytes(1024)])
    message, _ = refused_with_bounded_memory(tmp_path, body)
    assert message.endswith(f"refused: more than 8 extended headers in a row at byte {8 * 1024}")


def test_extended_headers_are_capped_in_all(tmp_path, monkeypatch):
    monkeypatch.setattr(archive_mod, "MAX_HEADERS", 4096)
    members = []
    for i in range(3):
        name = f"{FOLDER}/long-{i}".encode().ljust(2048, b"\0")
        members += [header("././@LongLink", tarfile.GNUTYPE_LONGNAME, 2048), name]
        members += [header(f"{FOLDER}/f{i}", tarfile.REGTYPE, 0)]
    message, _ = refused_with_bounded_memory(tmp_path, gzip_of([*members, bytes(1024)]))
    assert message.endswith("refused: its extended headers hold more than 4,096 bytes in all")


def test_global_headers_are_capped_in_all(tmp_path):
    # tarfile copies every global record into every member after it.
    parts = []
    for i in range(3):
        record = b"2000 k%d=" % i
        record += b"v" * (2000 - len(record) - 1) + b"\n"
        parts += [header(f"{FOLDER}/g{i}", tarfile.XGLTYPE, len(record)), record + bytes(-len(record) % 512)]
    parts += [header(f"{FOLDER}/readme", tarfile.REGTYPE, 0), bytes(1024)]
    message, _ = refused_with_bounded_memory(tmp_path, gzip_of(parts))
    assert message.endswith("refused: its PAX global headers hold more than 4,096 bytes in all")


def test_negative_sizes_and_sparse_members_are_refused(tmp_path):
    negative = bytearray(header(f"{FOLDER}/neg", tarfile.REGTYPE, 0))
    negative[124:136] = b"\xff" * 12  # base-256: -1
    negative[148:156] = b"%06o\0 " % (sum(negative[:148]) + 256 + sum(negative[156:]))
    sparse = header(f"{FOLDER}/sparse", tarfile.GNUTYPE_SPARSE, 0)
    pax_sparse = tarfile.TarInfo(f"{FOLDER}/s10")
    pax_sparse.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "s"}
    # a sparse map of 10**9 entries that never ends: tarfile would read it forever
    pax_bytes = pax_sparse.tobuf(tarfile.PAX_FORMAT) + b"1000000000\n" + b"1\n" * 4000
    cases = [
        (gzip_of([bytes(negative), bytes(1024)]), "refused: a header at byte 0 declares a negative size"),
        (gzip_of([sparse, bytes(1024)]), f"refused: member '{FOLDER}/sparse' is a sparse file"),
        (gzip_of([pax_bytes, bytes(1024)]), "is a sparse file (GNU.sparse PAX records)"),
    ]
    for i, (body, what) in enumerate(cases):
        message, peak = refused_with_bounded_memory(tmp_path / str(i), body)
        assert what in message and peak < 50


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_archives_with_ordinary_pax_and_gnu_headers_install(tmp_path, good, fmt):
    # No false alarms: long names, PAX records and a small global header (as git archive writes
    # one) are well within the caps.
    with tarfile.open(fileobj=io.BytesIO(good)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt, pax_headers={"comment": "a" * 40}) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.pax_headers = len(content), {"mtime": "1700000000.5", "uname": "ünï"}
            tar.addfile(info, io.BytesIO(content))
        tar.addfile(tarfile.TarInfo(f"{FOLDER}/" + "long-name-" * 20), io.BytesIO(b""))
    result = install_file(tmp_path, buf.getvalue())
    assert result.status == "installed" and result.path == str(tmp_path / "data" / FOLDER)
    assert (tmp_path / "data" / FOLDER / ("long-name-" * 20)).is_file()


def test_a_member_larger_than_any_cifar_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(archive_mod, "MAX_MEMBER", 1000)
    body = tar_gz({f"{FOLDER}/data_batch_1": bytes(1001)})
    message, _ = refused_with_bounded_memory(tmp_path, body)
    assert message.endswith(
        f"refused: member '{FOLDER}/data_batch_1' has 1,001 bytes, more than any CIFAR-10 file (1,000)"
    )


def test_a_tarfile_without_the_hooks_reads_nothing(tmp_path, good, monkeypatch):
    # Fail closed: were tarfile's _proc_member renamed, the header checks would silently stop.
    monkeypatch.setattr(archive_mod, "_GUARDED", False)
    message, _ = refused_with_bounded_memory(tmp_path, good)
    assert "not unpacked: this Python's tarfile module lacks the hooks" in message
    assert archive_mod._HOOKS[0] in dir(tarfile.TarInfo)  # and on this Python it has them


def test_member_count_and_total_size_caps_still_hold(tmp_path, monkeypatch):
    # The caps of the first pass, with the new header checks in front of them.
    many = tar_gz({f"{FOLDER}/f{i}": b"" for i in range(archive_mod.MAX_MEMBERS + 1)})
    message, _ = refused_with_bounded_memory(tmp_path / "count", many)
    assert message.endswith("refused: it unpacks to more than 1024 MiB or 1000 files")
    monkeypatch.setattr(archive_mod, "MAX_UNPACKED", 2500)
    big = tar_gz({f"{FOLDER}/a": bytes(1000), f"{FOLDER}/b": bytes(1000), f"{FOLDER}/c": bytes(1000)})
    message, _ = refused_with_bounded_memory(tmp_path / "size", big)
    assert message.endswith("refused: it unpacks to more than 0 MiB or 1000 files")


# ---------------------------------------------------------------------------------------------
# 9. The gzip trailer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where, reason",
    [(-8, "CRC check failed"), (-5, "CRC check failed"), (-4, "Incorrect length of data produced")],
)
def test_a_wrong_gzip_trailer_is_refused_even_when_the_md5_matches(runner, tmp_path, good, where, reason):
    # The bug: tarfile stops at the end-of-archive blocks, so the CRC-32 and length at the end of
    # the gzip stream were never read, and data that were not what was compressed installed.
    bad = bytearray(good)
    bad[where] ^= 0x01
    src = tmp_path / "bad.tar.gz"
    src.write_bytes(bytes(bad))
    r, _ = run(runner, "--from-file", src, "--md5", md5(bytes(bad)), "--data-dir", tmp_path / "d")
    assert r.exit_code == 1
    assert one_line(r).startswith(f"Error: {src}: not a readable .tar.gz archive (BadGzipFile: {reason}")
    assert not (tmp_path / "d").exists()


def test_a_wrong_trailer_downloaded_is_refused_and_deleted(runner, serve, tmp_path, good):
    bad = good[:-8] + bytes([good[-8] ^ 1]) + good[-7:]
    s = serve(bad)
    r, _ = run(runner, "--url", s.url, "--md5", md5(bad), "--data-dir", tmp_path)
    assert r.exit_code == 1 and "CRC check failed" in one_line(r)
    assert list(tmp_path.iterdir()) == []


def test_what_follows_the_tar_data_is_capped_and_checked(tmp_path, good, monkeypatch):
    padded = gzip_of([zlib.decompress(good, 31), bytes(5000)])  # a longer last record: fine
    assert install_file(tmp_path / "a", padded).status == "installed"
    message, _ = refused_with_bounded_memory(tmp_path / "c", good + b"garbage after the gzip stream")
    assert "not a readable .tar.gz archive (BadGzipFile: Not a gzipped file" in message
    monkeypatch.setattr(archive_mod, "MAX_TRAILING", 4096)
    message, _ = refused_with_bounded_memory(tmp_path / "b", padded)
    assert message.endswith("refused: more than 4,096 bytes follow the end of its tar data")


# ---------------------------------------------------------------------------------------------
# 8. A full disk while unpacking
# ---------------------------------------------------------------------------------------------

SPACE = [
    (errno.ENOSPC, "No space left on device"),
    (errno.EFBIG, "File too large"),
    (errno.EDQUOT, "Disk quota exceeded"),
]


def disk_fills_after(monkeypatch, code: int, files: int = 3):
    """Make the extraction's writes fail with ``code`` from the ``files``-th member on, half-way
    through its data."""
    real = tarfile.copyfileobj
    calls = []

    def copy(src, dst, length=None, *args, **kwargs):
        calls.append(length)
        if len(calls) > files:
            real(src, dst, (length or 0) // 2, *args, **kwargs)
            raise OSError(code, os.strerror(code))
        return real(src, dst, length, *args, **kwargs)

    monkeypatch.setattr(tarfile, "copyfileobj", copy)


@pytest.mark.parametrize("code, reason", SPACE)
def test_a_full_disk_is_named_and_the_verified_download_kept(
    runner, serve, tmp_path, good, monkeypatch, code, reason
):
    # The bug: reported as "not a readable .tar.gz archive (OSError)", and the verified archive,
    # fetched with --url, was deleted: the next run downloaded it again.
    s = serve(good)
    disk_fills_after(monkeypatch, code)
    r, _ = run(runner, "--url", s.url, "--md5", md5(good), "--data-dir", tmp_path)
    kept = tmp_path / ".cifarlin-download" / "cifar-10-python.tar.gz"
    assert r.exit_code == 1
    assert one_line(r) == (
        f"Error: {tmp_path}: cannot unpack cifar-10-python.tar.gz there ({reason}); free some space "
        f"or pass --data-dir DIR; the verified download stays in {kept} for the next run"
    )
    assert kept.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cifarlin-download"]  # nothing half-unpacked
    monkeypatch.undo()
    r, out = run(runner, "--url", s.url, "--md5", md5(good), "--data-dir", tmp_path, "--json")
    assert r.exit_code == 0 and out["status"] == "downloaded"
    assert "was downloaded and verified before" in r.stderr and len(s.ranges) == 1  # not fetched again
    assert sorted(p.name for p in tmp_path.iterdir()) == [FOLDER]


@pytest.mark.parametrize("code, reason", SPACE)
def test_a_full_disk_leaves_the_users_archive_and_the_old_dataset(
    runner, tmp_path, good, monkeypatch, code, reason
):
    src = tmp_path / "mine.tar.gz"
    src.write_bytes(good)
    data_dir = tmp_path / "d"
    r, _ = run(runner, "--from-file", src, "--md5", md5(good), "--data-dir", data_dir)
    assert r.exit_code == 0
    before = {p.name: p.read_bytes() for p in (data_dir / FOLDER).iterdir()}
    disk_fills_after(monkeypatch, code, files=0)
    r, _ = run(runner, "--from-file", src, "--md5", md5(good), "--data-dir", data_dir, "--force")
    assert r.exit_code == 1
    assert one_line(r) == (
        f"Error: {data_dir}: cannot unpack mine.tar.gz there ({reason}); "
        "free some space or pass --data-dir DIR"
    )
    assert src.read_bytes() == good
    assert {p.name: p.read_bytes() for p in (data_dir / FOLDER).iterdir()} == before
    assert sorted(p.name for p in data_dir.iterdir()) == [FOLDER]


def test_no_room_for_the_extraction_folder_is_a_write_error(tmp_path, good, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive_mod.tempfile, "mkdtemp", full)
    with pytest.raises(WriteError, match=r"cannot unpack in.tar.gz there \(No space left on device\)"):
        install_file(tmp_path, good)


# ---------------------------------------------------------------------------------------------
# 7. Where the download goes
# ---------------------------------------------------------------------------------------------

URL_TAILS = ["notes.txt", "mydir", "mydir/", "..", "", "x?name=notes.txt", "a%2F..%2Fnotes.txt", FOLDER]


def users_files(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
        if FOLDER not in p.parts and ".cifarlin-download" not in p.parts
    }


@pytest.fixture
def user_root(tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "mydir").mkdir(parents=True)
    (root / "notes.txt").write_text("my notes\n")
    (root / "mydir" / "notes.txt").write_text("more notes\n")
    (tmp_path / "notes.txt").write_text("outside\n")
    return root


@pytest.mark.parametrize("tail", URL_TAILS)
def test_the_url_never_names_a_local_file(runner, serve, good, user_root, tail):
    # The bug: the archive was named after the URL's last segment and unlinked first: a --url
    # ending in notes.txt deleted the user's notes.txt, even on a 404; '..' named the parent.
    s = serve(good)
    s.any_path = True
    url = s.url.rsplit("/", 1)[0] + "/" + tail
    before = users_files(user_root.parent)
    r, out = run(runner, "--url", url, "--md5", md5(good), "--data-dir", user_root, "--json")
    assert r.exit_code == 0, r.output
    assert out["status"] == "downloaded" and out["path"] == str(user_root / FOLDER)
    assert users_files(user_root.parent) == before
    assert sorted(p.name for p in user_root.iterdir()) == [FOLDER, "mydir", "notes.txt"]


@pytest.mark.parametrize("tail", URL_TAILS)
def test_a_failed_download_leaves_the_users_files(runner, serve, good, user_root, tail):
    s = serve(good, name="nothing-here")
    url = s.url.rsplit("/", 1)[0] + "/" + tail
    before = users_files(user_root.parent)
    r, _ = run(runner, "--url", url, "--data-dir", user_root)
    assert r.exit_code == 1 and "404" in one_line(r)
    assert users_files(user_root.parent) == before
    assert sorted(p.name for p in user_root.iterdir()) == ["mydir", "notes.txt"]


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_a_download_folder_that_is_not_cifarlins_is_refused(runner, serve, good, tmp_path, kind):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "data"
    root.mkdir()
    if kind == "symlink":
        (root / ".cifarlin-download").symlink_to(elsewhere)
    else:
        (root / ".cifarlin-download").write_text("mine\n")
    s = serve(good)
    r, _ = run(runner, "--url", s.url, "--md5", md5(good), "--data-dir", root)
    assert r.exit_code == 1
    assert one_line(r) == (
        f"Error: {root / '.cifarlin-download'}: is not a folder cifarlin made; move it away and run again"
    )
    assert list(elsewhere.iterdir()) == [] and s.ranges == []


def test_a_server_announcing_more_than_an_archive_is_refused(serve, tmp_path):
    s = serve(bytes(1001))
    with pytest.raises(DownloadError, match="the server announces 1,001 bytes, more than a CIFAR-10 archive"):
        fetch(s.url, tmp_path / "a.tar.gz", max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["fifo", "sparse"])
def test_from_file_that_is_a_pipe_or_huge_is_refused_at_once(runner, tmp_path, kind):
    src = tmp_path / "a.tar.gz"
    if kind == "fifo":  # as <(curl ...) gives: hashing it would consume it, or wait forever
        os.mkfifo(src)
    else:
        with open(src, "wb") as f:
            f.truncate(20 << 30)
    r, _ = run(runner, "--from-file", src, "--data-dir", tmp_path / "d")
    line = one_line(r)
    if kind == "fifo":
        assert r.exit_code == 2 and line == (
            f"Error: --from-file '{src}': is not a regular file; save the archive to a file first"
        )
    else:
        assert r.exit_code == 1 and line.startswith(
            f"Error: {src}: 21,474,836,480 bytes, more than a CIFAR-10"
        )
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------------------------------------
# 4. Servers that trickle
# ---------------------------------------------------------------------------------------------


def test_a_trickling_body_fails_the_attempt_and_keeps_what_arrived(serve, good, tmp_path):
    # The bug: one byte every half second never timed out, as the timeout bounds each read.
    s = serve(good)
    s.slow = ["trickle"]
    calls = []
    with pytest.raises(DownloadError) as e:
        download.install(
            tmp_path,
            DownloadConfig(url=s.url, md5=md5(good), timeout=0.3, retries=0),
            on_progress=lambda done, total: calls.append((done, total)),
        )
    part = tmp_path / ".cifarlin-download" / "cifar-10-python.tar.gz.part"
    assert "(too slow: " in str(e.value) and "fewer than 300)" in str(e.value)
    assert f"{part} keeps what arrived, run again to resume" in str(e.value)
    assert 0 < part.stat().st_size < 100
    assert len(calls) > 3 and calls[0] == (0, len(good)) and calls[-1][0] == part.stat().st_size


def test_silence_keeps_reporting_progress_and_then_times_out(serve, good, tmp_path, monkeypatch):
    monkeypatch.setattr(paced_http, "TICK", 0.05)
    s = serve(good)
    s.slow = ["silent"]
    calls = []
    with pytest.raises(
        DownloadError, match=r"failed after 1 attempt \(too slow: \d+ bytes in 0\.3\d* s, fewer than 300\)"
    ):
        fetch(
            s.url,
            tmp_path / "a.tar.gz",
            timeout=0.3,
            retries=0,
            on_progress=lambda done, total: calls.append((done, total)),
        )
    assert len(calls) >= 4 and set(calls) == {(0, len(good))}  # the display keeps being told


def test_a_server_that_never_answers_times_out(tmp_path):
    import socket

    listener = socket.create_server(("127.0.0.1", 0))  # accepts (by the kernel), never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/a.tar.gz"
        with pytest.raises(DownloadError, match=r"failed after 1 attempt \(timed out: no data for 0\.3"):
            fetch(url, tmp_path / "a.tar.gz", timeout=0.3, retries=0)
    finally:
        listener.close()


def test_trickled_headers_fail_too(serve, good, tmp_path):
    s = serve(good)
    s.slow = ["trickle-headers"]
    with pytest.raises(DownloadError, match=r"failed after 1 attempt \(too slow: \d+ bytes in 0\.3"):
        fetch(s.url, tmp_path / "a.tar.gz", timeout=0.3, retries=0)
    assert list(tmp_path.iterdir()) == []


def test_a_slow_attempt_is_retried_and_resumed(serve, good, tmp_path):
    s = serve(good)
    s.slow = ["trickle"]
    download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(good), timeout=0.3, retries=1))
    assert s.ranges[0] is None and s.ranges[1].startswith("bytes=") and s.ranges[1] != "bytes=0-"
    assert sorted(p.name for p in tmp_path.iterdir()) == [FOLDER]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> Path:
    """A self-signed certificate for 127.0.0.1 (its key beside it), made by the openssl tool."""
    folder = tmp_path_factory.mktemp("tls")
    try:
        key, cert = folder / "key.pem", folder / "cert.pem"
        args = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
        args += " -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
        subprocess.run(
            ["openssl", *args.split(), "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the openssl tool cannot make a test certificate here")
    return cert


@pytest.fixture
def https(serve, certificate, monkeypatch):
    """Start an https:// server whose certificate the client trusts (through SSL_CERT_FILE)."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certificate, certificate.with_name("key.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
    return lambda body: serve(body, tls=tls)


def test_https_downloads_through_the_paced_connection(https, good, tmp_path):
    # The paced HTTPS connection: a real TLS handshake, the certificate checked, resume included.
    s = https(good)
    s.drop_after = len(good) // 2
    result = download.install(tmp_path, DownloadConfig(url=s.url, md5=md5(good)))
    assert result.status == "downloaded" and s.url.startswith("https://")
    assert s.ranges == [None, f"bytes={len(good) // 2}-"]


def test_https_trickle_fails_and_an_untrusted_certificate_is_refused(https, good, tmp_path, monkeypatch):
    s = https(good)
    s.slow = ["trickle"]
    with pytest.raises(DownloadError, match=r"failed after 1 attempt \(too slow: "):
        fetch(s.url, tmp_path / "a.tar.gz", timeout=0.3, retries=0)
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(DownloadError, match="the server's TLS certificate could not be verified"):
        fetch(s.url, tmp_path / "b.tar.gz", retries=0)


def test_cli_reports_a_trickling_server_in_one_line(runner, serve, good, tmp_path):
    s = serve(good)
    s.slow = ["trickle"]
    r, _ = run(
        runner,
        "--url",
        s.url,
        "--md5",
        md5(good),
        "--data-dir",
        tmp_path,
        "--timeout",
        "0.3",
        "--retries",
        "0",
    )
    assert r.exit_code == 1
    line = one_line(r)
    assert f"Error: {s.url}: download failed after 1 attempt (too slow: " in line
    assert "run again to resume" in line


# ---------------------------------------------------------------------------------------------
# 13. Absurd option values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, shown",
    [("inf", "inf"), ("1e300", "1e+300"), ("nan", "nan"), ("0", "0.0"), ("-1", "-1.0"), ("-inf", "-inf")],
)
def test_absurd_timeouts_are_usage_errors(runner, tmp_path, value, shown):
    r, _ = run(runner, "--timeout", value, "--data-dir", tmp_path / "d")
    assert r.exit_code == 2
    assert one_line(r) == f"Error: --timeout {shown}: use a number of seconds > 0 and <= 86400"
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("value", ["-1", "101", "99999999999999999999"])
def test_absurd_retries_are_usage_errors(runner, tmp_path, value):
    r, _ = run(runner, "--retries", value, "--data-dir", tmp_path / "d")
    assert r.exit_code == 2 and one_line(r) == f"Error: --retries {value}: use 0 to 100"
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("timeout", [math.inf, -math.inf, math.nan, 0, -1.0, 1e300, "30"])
def test_download_config_refuses_absurd_timeouts(timeout):
    with pytest.raises(ConfigError, match=r"^timeout="):
        DownloadConfig(timeout=timeout)
