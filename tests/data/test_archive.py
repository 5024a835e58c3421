"""Each layer of the tar defence on its own.

The layers, in the order a member meets them: the name check (absolute, ``..`` and drive paths),
the member-type check (regular files and folders only), the "inside the dataset folder" check,
the resolve-relative-to-the-target check, tarfile's ``data`` filter, the size and count caps, and
the loader's validation of the extracted dataset. A hostile member that several layers refuse
proves nothing about any one of them, so each test below offers a member that only its layer
refuses, in an otherwise valid archive, and checks that layer's own message: with that layer
gone, the archive would be installed. The earlier layers are switched off (through the public
``check_member``) where a later layer is to be seen on its own. Archives are made here, member by
member; links only ever point into the test's own folders. Each test's docstring names the bug it
catches.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

import pytest

from cifar_files import write_python_dataset
from cifarlin.data import archive
from cifarlin.errors import DownloadError

FOLDER = "cifar-10-batches-py"
ARCHIVE = Path("a.tar.gz")


@pytest.fixture(scope="module")
def dataset_files(tmp_path_factory) -> dict[str, bytes]:
    """The files of a valid tiny dataset, by their name in the archive."""
    src = write_python_dataset(tmp_path_factory.mktemp("src") / FOLDER)
    return {f"{FOLDER}/{p.name}": p.read_bytes() for p in sorted(src.iterdir())}


def regular(name: str, payload: bytes = b"hello") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def write_archive(path: Path, dataset: dict[str, bytes], *extra) -> Path:
    """A .tar.gz of the dataset's files followed by the ``extra`` (TarInfo, payload) members."""
    with tarfile.open(path, "w:gz") as tar:
        for info, payload in [*(regular(n, b) for n, b in dataset.items()), *extra]:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "data"
    r.mkdir()
    return r


def installed(root: Path) -> list[str]:
    """Everything under ``root``, relative to it (the archive lives elsewhere)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------------------------------------
# Layer 1: the name check
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "/tmp/cifarlin-evil",
        f"/{FOLDER}/data_batch_1",
        f"\\{FOLDER}\\data_batch_1",
        "C:/evil",
        f"c:{FOLDER}/x",
        f"{FOLDER}/../evil",
        f"{FOLDER}/sub/../data_batch_1",  # lands inside the folder, but names a way out
        "..",
    ],
)
def test_name_check_refuses_absolute_dotdot_and_drive_paths(name):
    """Catches: the ``..`` test of the name check removed (or only a leading ``..`` tested), the
    absolute-path test removed (also for a backslash), the drive-letter test removed."""
    info, _ = regular(name)
    message = f"{ARCHIVE}: refused: member {name!r} points outside the target folder"
    with pytest.raises(DownloadError, match=f"^{re.escape(message)}$"):
        archive.check_member(ARCHIVE, info, FOLDER)


def test_name_check_alone_refuses_a_dotdot_path_back_into_the_folder(dataset_files, root, tmp_path):
    """Catches: the ``..`` test of the name check removed. This member stays inside the dataset
    folder and inside the target, so no later layer objects: without the name check the archive
    would be installed."""
    name = f"{FOLDER}/../{FOLDER}/readme"
    src = write_archive(tmp_path / "dotdot.tar.gz", dataset_files, regular(name))
    with pytest.raises(DownloadError, match=re.escape(f"member {name!r} points outside the target folder")):
        archive.extract(src, root, "python")
    assert installed(root) == []


# ---------------------------------------------------------------------------------------------
# Layer 2: the member-type check
# ---------------------------------------------------------------------------------------------

KINDS = [
    (tarfile.SYMTYPE, "symbolic link", "data_batch_1"),
    (tarfile.LNKTYPE, "hard link", f"{FOLDER}/data_batch_1"),
    (tarfile.CHRTYPE, "character device", ""),
    (tarfile.BLKTYPE, "block device", ""),
    (tarfile.FIFOTYPE, "FIFO", ""),
    (b"Z", "special file", ""),  # a type tarfile does not know
]


@pytest.mark.parametrize("kind, what, linkname", KINDS)
def test_type_check_names_the_kind_of_member(kind, what, linkname):
    """Catches: a member type let through (links and devices are not regular files), and a
    message that names the wrong kind."""
    info, _ = special(f"{FOLDER}/x", kind, linkname)
    message = (
        f"{ARCHIVE}: refused: member '{FOLDER}/x' is a {what}; only regular files and folders are allowed"
    )
    with pytest.raises(DownloadError, match=f"^{re.escape(message)}$"):
        archive.check_member(ARCHIVE, info, FOLDER)


@pytest.mark.parametrize("kind, what, linkname", KINDS[:2])
def test_type_check_alone_refuses_links_that_stay_inside(dataset_files, root, tmp_path, kind, what, linkname):
    """Catches: the member-type check removed. A link to a file of the dataset itself is allowed
    by tarfile's data filter and by every other check: only the type check refuses it."""
    src = write_archive(tmp_path / "link.tar.gz", dataset_files, special(f"{FOLDER}/link", kind, linkname))
    with pytest.raises(DownloadError, match=f"member '{FOLDER}/link' is a {what};"):
        archive.extract(src, root, "python")
    assert installed(root) == []


# ---------------------------------------------------------------------------------------------
# Layer 3: inside the dataset folder
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["readme", "other/readme", f"{FOLDER}-old/data_batch_1", "./readme"])
def test_folder_check_alone_refuses_files_beside_the_dataset(dataset_files, root, tmp_path, name):
    """Catches: the "inside the dataset folder" check removed, or made a prefix test of the
    name (which lets ``cifar-10-batches-py-old/`` through). Such a member is a plain file inside
    the target: nothing else refuses it."""
    info, _ = regular(name)
    with pytest.raises(DownloadError, match=re.escape(f"member {name!r} is not inside {FOLDER}/")):
        archive.check_member(ARCHIVE, info, FOLDER)
    src = write_archive(tmp_path / "beside.tar.gz", dataset_files, regular(name))
    with pytest.raises(DownloadError, match=re.escape(f"member {name!r} is not inside {FOLDER}/")):
        archive.extract(src, root, "python")
    assert installed(root) == []


@pytest.mark.parametrize(
    "name, isdir", [(FOLDER, True), (f"{FOLDER}/data_batch_1", False), (f"{FOLDER}/a/b", False)]
)
def test_members_of_the_dataset_folder_pass(name, isdir):
    """Catches: a check that refuses the dataset's own folder or files (every install fails)."""
    info, _ = special(name, tarfile.DIRTYPE) if isdir else regular(name)
    archive.check_member(ARCHIVE, info, FOLDER)  # no exception


# ---------------------------------------------------------------------------------------------
# Layers 4 and 5: resolving against the target, and tarfile's data filter
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_member_check(monkeypatch):
    """The first three layers switched off, to see the later ones on their own."""
    monkeypatch.setattr(archive, "check_member", lambda archive_, m, folder: None)


def test_resolve_check_alone_refuses_a_way_out(dataset_files, root, tmp_path, no_member_check):
    """Catches: the resolve-relative-to-the-target check removed (tarfile's filter would then
    refuse it instead, with another message, and only after reading every member)."""
    name = f"{FOLDER}/../../evil"
    src = write_archive(tmp_path / "out.tar.gz", dataset_files, regular(name))
    with pytest.raises(DownloadError, match=re.escape(f"member {name!r} points outside the target") + "$"):
        archive.extract(src, root, "python")
    assert installed(root) == [] and not (tmp_path / "evil").exists()


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="tarfile has no data filter before 3.11.4")
def test_data_filter_alone_refuses_a_link_out_of_the_target(dataset_files, root, tmp_path, no_member_check):
    """Catches: tarfile's ``data`` filter dropped (filter="fully_trusted", or no filter): the
    link would be extracted and the permission pass after extraction would follow it and chmod
    a file outside the target.

    The link's own name is inside the dataset folder, so the resolve check passes it.
    """
    outside = tmp_path / "outside.txt"  # root/.cifarlin-extract-*/FOLDER/link -> ../../../outside.txt
    outside.write_text("mine")
    outside.chmod(0o600)
    link = special(f"{FOLDER}/link", tarfile.SYMTYPE, "../../../outside.txt")
    src = write_archive(tmp_path / "link.tar.gz", dataset_files, link)
    with pytest.raises(DownloadError, match=r"\(LinkOutsideDestinationError\)"):
        archive.extract(src, root, "python")
    assert installed(root) == []
    assert outside.read_text() == "mine" and outside.stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="tarfile has no data filter before 3.11.4")
def test_data_filter_alone_refuses_a_fifo(dataset_files, root, tmp_path, no_member_check):
    """Catches: tarfile's ``data`` filter dropped: a FIFO in the dataset folder would be made."""
    src = write_archive(tmp_path / "fifo.tar.gz", dataset_files, special(f"{FOLDER}/fifo", tarfile.FIFOTYPE))
    with pytest.raises(DownloadError, match=r"\(SpecialFileError\)"):
        archive.extract(src, root, "python")
    assert installed(root) == []


# ---------------------------------------------------------------------------------------------
# Layer 6: the caps on size and count
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def extractions(monkeypatch) -> list[int]:
    """Records every extractall call (its number of members)."""
    calls: list[int] = []
    real = tarfile.TarFile.extractall

    def spy(self, path=".", members=None, **kw):
        calls.append(len(members) if members is not None else -1)
        return real(self, path, members=members, **kw)

    monkeypatch.setattr(tarfile.TarFile, "extractall", spy)
    return calls


@pytest.mark.parametrize("cap", ["MAX_MEMBERS", "MAX_UNPACKED"])
def test_caps_refuse_one_over_before_extracting_anything(
    dataset_files, root, tmp_path, monkeypatch, extractions, cap
):
    """Catches: a cap removed, checked with >= (refusing an archive exactly at the cap) or one
    too late (> cap + 1), and caps checked only after extraction (a huge archive fills the
    disk before it is refused)."""
    exact = len(dataset_files) if cap == "MAX_MEMBERS" else sum(map(len, dataset_files.values()))
    src = write_archive(tmp_path / "a.tar.gz", dataset_files)
    monkeypatch.setattr(archive, cap, exact - 1)
    with pytest.raises(DownloadError, match=r"refused: it unpacks to more than"):
        archive.extract(src, root, "python")
    assert extractions == [] and installed(root) == []
    monkeypatch.setattr(archive, cap, exact)  # exactly at the cap: accepted
    dataset, _ = archive.extract(src, root, "python")
    assert extractions == [len(dataset_files)]
    assert dataset.folder == root / FOLDER
    assert installed(root) == [FOLDER, *sorted(dataset_files)]


# ---------------------------------------------------------------------------------------------
# Layer 7: the loader's validation of what was extracted
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda files: files.pop(f"{FOLDER}/batches.meta"), "batches.meta: missing"),
        (
            lambda files: files.__setitem__(f"{FOLDER}/data_batch_4", files[f"{FOLDER}/data_batch_4"][:-100]),
            "data_batch_4: ",
        ),
        (
            lambda files: files.__setitem__(f"{FOLDER}/test_batch", b"\x80\x02}q\x00."),
            "test_batch: no data or labels",
        ),
    ],
    ids=["no batches.meta", "a truncated batch", "a batch without data"],
)
def test_loader_validation_alone_refuses_a_broken_dataset_and_keeps_the_old_one(
    dataset_files, root, tmp_path, edit, message
):
    """Catches: the extracted dataset installed without the loader's validation (a truncated
    batch or a missing file would be found only when training), and a refused archive that
    removes or touches the dataset already installed. Every member here is a regular file
    inside the dataset folder: only the validation refuses it."""
    good = write_archive(tmp_path / "good.tar.gz", dataset_files)
    archive.extract(good, root, "python")
    before = {p: (root / p).read_bytes() for p in installed(root) if (root / p).is_file()}
    files = dict(dataset_files)
    edit(files)
    bad = write_archive(tmp_path / "bad.tar.gz", files)
    pattern = (
        rf"{re.escape(str(bad))}: refused: it does not hold a valid CIFAR-10 dataset \({FOLDER}/.*{message}"
    )
    with pytest.raises(DownloadError, match=pattern):
        archive.extract(bad, root, "python")
    assert {p: (root / p).read_bytes() for p in installed(root) if (root / p).is_file()} == before
    assert sorted(os.listdir(root)) == [FOLDER]  # no temporary folder left
