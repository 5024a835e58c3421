"""The opcode scan that runs before any unpickling: memo indices, opcode counts, declared lengths.

CPython's C unpickler grows its memo array to the largest index a pickle names, so a 5-byte
``LONG_BINPUT 4294967295`` used to make cifarlin allocate tens of gigabytes (and a 200-million
index 3 GB, after which the load succeeded). These tests craft such pickles opcode by opcode.
"""

from __future__ import annotations

import pickle
import pickletools
import struct
import tracemalloc

import numpy as np
import pytest

from cifar_files import batch_dict, make_split, py2_pickle
from cifarlin.data import cifar as data
from cifarlin.data import safepickle
from cifarlin.data.safepickle import MAX_MEMO, scan
from cifarlin.errors import DataError

BATCH = py2_pickle(batch_dict(*make_split(3, seed=1), "a batch"))


def with_prefix(ops: bytes, body: bytes = BATCH) -> bytes:
    """``ops`` run (and their results popped) between the PROTO opcode and a valid batch."""
    return body[:2] + ops + body[2:]


def load(tmp_path, raw: bytes):
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw)
    return data.read_batch(path, "python")


def peak_mb(fn) -> float:
    """Peak memory (MB) Python allocated while ``fn`` ran; the unpickler's memo is included."""
    tracemalloc.start()
    try:
        fn()
    except DataError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 1e6


def memo_op(name: str, index: int) -> bytes:
    """One memo opcode with ``index``: the puts store the None pushed before them."""
    return {
        "BINPUT": b"Nq" + bytes([index]) + b"0" if index < 256 else b"",
        "LONG_BINPUT": b"Nr" + struct.pack("<I", index) + b"0",
        "PUT": b"Np%d\n0" % index,
        "BINGET": b"h" + bytes([index]) + b"0" if index < 256 else b"",
        "LONG_BINGET": b"j" + struct.pack("<I", index) + b"0",
        "GET": b"g%d\n0" % index,
    }[name]


@pytest.mark.parametrize("op", ["LONG_BINPUT", "PUT", "LONG_BINGET", "GET"])
@pytest.mark.parametrize("index", [MAX_MEMO + 1, 20_000_000, 2**32 - 1])
def test_memo_indices_beyond_the_cap_are_refused_before_unpickling(tmp_path, op, index):
    # The bug: the unpickler allocated 16 bytes per index up to the index (320 MB for 20 million,
    # 64 GB for 2**32 - 1) and then loaded the file as if nothing had happened.
    path = tmp_path / "data_batch_1"
    path.write_bytes(with_prefix(memo_op(op, index)))
    with pytest.raises(DataError) as e:
        data.read_batch(path, "python")
    assert str(e.value) == (
        f"{path}: refused to load: memo index {index} is outside 0..{MAX_MEMO} (the file may be hostile)"
    )
    assert peak_mb(lambda: data.read_batch(path, "python")) < 50


@pytest.mark.parametrize("op", ["BINPUT", "LONG_BINPUT", "PUT"])
def test_memo_indices_up_to_the_cap_load(tmp_path, op):
    # The boundary: an index of MAX_MEMO is allowed (official batches use about 10,000).
    index = 255 if op == "BINPUT" else MAX_MEMO
    batch = load(tmp_path, with_prefix(memo_op(op, index)))
    assert batch.images.shape == (3, 3072)


def test_a_get_of_a_stored_index_loads(tmp_path):
    raw = with_prefix(b"Nr" + struct.pack("<I", MAX_MEMO) + b"0j" + struct.pack("<I", MAX_MEMO) + b"0")
    assert load(tmp_path, raw).labels.shape == (3,)


def test_a_negative_put_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(with_prefix(b"Np-1\n0"))
    with pytest.raises(DataError, match=r"memo index -1 is outside 0\.\.100000"):
        data.read_batch(path, "python")


@pytest.mark.parametrize("line", [b"1e9", b"x", b"9" * 5000])
def test_a_put_that_is_not_a_number_is_refused(tmp_path, line):
    # Includes a 5,000-digit index: no huge integer is ever built from the file.
    path = tmp_path / "data_batch_1"
    path.write_bytes(with_prefix(b"Np" + line + b"\n0"))
    with pytest.raises(DataError, match="refused to load|truncated or not a CIFAR-10 pickle") as e:
        data.read_batch(path, "python")
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_too_many_memo_entries_are_refused(tmp_path):
    # MEMOIZE (protocol 4) stores at the next free index: harmless one by one, but counted
    # (here the same object is stored again and again).
    assert load(tmp_path, with_prefix(b"N" + b"\x94" * MAX_MEMO + b"0")).labels.shape == (3,)
    path = tmp_path / "data_batch_1"
    path.write_bytes(with_prefix(b"N" + b"\x94" * (MAX_MEMO + 1) + b"0"))
    with pytest.raises(DataError, match=f"refused to load: more than {MAX_MEMO} memo entries"):
        data.read_batch(path, "python")


def test_too_many_opcodes_are_refused(tmp_path, monkeypatch):
    # Each opcode can build an object: a 1 MB file of EMPTY_SET opcodes made 226 MB of sets.
    monkeypatch.setattr(safepickle, "MAX_OPS", 1000)
    n_ops = len(list(pickletools.genops(BATCH)))
    filler = b"N0" * ((1000 - n_ops) // 2)
    assert load(tmp_path, with_prefix(filler)).images.shape == (3, 3072)
    path = tmp_path / "data_batch_1"
    path.write_bytes(with_prefix(filler + b"N0"))
    with pytest.raises(DataError, match="refused to load: more than 1000 pickle opcodes"):
        data.read_batch(path, "python")


@pytest.mark.parametrize(
    "op",
    [
        b"T" + struct.pack("<i", 2**31 - 1),  # BINSTRING
        b"T" + struct.pack("<i", -5),
        b"B" + struct.pack("<I", 2**32 - 1),  # BINBYTES
        b"\x8e" + struct.pack("<Q", 2**63),  # BINBYTES8
        b"\x96" + struct.pack("<Q", 2**40),  # BYTEARRAY8
        b"\x8d" + struct.pack("<Q", 2**40),  # BINUNICODE8
        b"\x8b" + struct.pack("<i", 2**31 - 1),  # LONG4
        b"\x95" + struct.pack("<Q", 2**40),  # FRAME
    ],
)
def test_lengths_beyond_the_end_of_the_file_are_refused_without_allocating(tmp_path, op):
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x04" + op + b"x" * 10)
    with pytest.raises(DataError) as e:
        data.read_batch(path, "python")
    assert str(e.value).startswith(f"{path}: truncated or not a CIFAR-10 pickle")
    assert peak_mb(lambda: data.read_batch(path, "python")) < 50


def test_every_truncation_is_a_one_line_data_error(tmp_path):
    raw = py2_pickle({b"labels": [1, 2, 300, 70000], b"batch_label": b"x" * 300, b"n": False})
    path = tmp_path / "data_batch_1"
    for cut in range(len(raw)):
        path.write_bytes(raw[:cut])
        with pytest.raises(DataError) as e:
            data.read_batch(path, "python")
        assert str(path) in str(e.value) and "\n" not in str(e.value)


SAMPLES = [
    {"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "labels": [1, 2], "name": "a\nb"},
    [1, -1, 255, 256, 65536, 2**31, 2**70, -(2**70), 1.5, -0.0, True, False, None],
    ("text", "ünïcödé\n", b"bytes\n\x00", bytearray(b"ba"), "x" * 300, b"y" * 70000),
    {frozenset({1, 2}), 3},
    [[]] * 3 + [{}] * 3,  # shared references: memo puts and gets
]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_scan_walks_every_protocol_like_pickletools(protocol):
    # The scan must agree with the standard disassembler on where each opcode ends, else a
    # hostile pickle could hide a memo opcode inside another's argument.
    for obj in SAMPLES:
        raw = pickle.dumps(obj, protocol=protocol) + b"trailing bytes"
        stop = next(pos for op, _, pos in pickletools.genops(raw) if op.name == "STOP")
        assert scan(raw) == stop + 1


def test_a_python_3_batch_with_memoized_filenames_loads(tmp_path):
    # Official batches memoize each of their 10,000 filenames: indices up to about 10,000.
    images = np.random.default_rng(2).integers(0, 256, (10_000, 3072), dtype=np.uint8)
    labels = np.arange(10_000) % 10
    filenames = [f"file_{i}.png" for i in range(10_000)]
    raw = pickle.dumps({"data": images, "labels": labels.tolist(), "filenames": filenames}, protocol=3)
    assert max(arg for op, arg, _ in pickletools.genops(raw) if op.name == "LONG_BINPUT") > 9000
    batch = load(tmp_path, raw)
    assert np.array_equal(batch.images, images) and np.array_equal(batch.labels, labels)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pickletools on mutated escapes
def test_scan_agrees_with_pickletools_on_mutated_pickles():
    # Random byte flips, insertions and deletions: wherever the standard disassembler reads a
    # whole pickle, the scan ends at the same STOP (or refuses): it never loses step with it.
    import random

    seeds = [
        BATCH[:800] + b".",
        pickle.dumps({"a": [1, 2.5, "x\ny", b"\0" * 300, (None, True)], "b": {frozenset({1}), 3}}, 0),
        pickle.dumps({"a": [1, 2.5, "x", b"\0" * 300, bytearray(b"q")] * 3}, 5),
        pickle.dumps([[]] * 5 + ["s" * 300] * 3 + [2**100, -5], 2),
    ]
    rng = random.Random(0)
    checked = 0
    for _ in range(3000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at, kind = rng.randrange(len(raw)), rng.randrange(3)
            if kind == 0:
                raw[at] = rng.randrange(256)
            elif kind == 1:
                raw.insert(at, rng.randrange(256))
            else:
                del raw[at]
        try:
            stop = next(pos for op, _, pos in pickletools.genops(bytes(raw)) if op.name == "STOP")
        except Exception:  # the disassembler cannot read it either
            continue
        checked += 1
        try:
            assert scan(bytes(raw)) == stop + 1
        except safepickle._Refused:
            pass
    assert checked > 300
