"""Unpickling CIFAR-10's python-version files without trusting them.

Before anything is unpickled, the opcodes are walked once without building an object (see
:func:`scan`): a pickle with more opcodes, or memo indices, than a CIFAR-10 file could use is
refused, since the unpickler would otherwise allocate memory for them first (its memo grows to the
largest index it is told to store). The unpickler then admits only the four numpy globals the
official files name, and even those are stand-ins that build arrays from validated raw bytes:
numpy's own unpickling code never sees the file. Containers are walked once afterwards and refused
when nested too deep, shared, or too many.
"""

from __future__ import annotations

import pickle
import pickletools
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cifarlin.errors import DataError

_PLAIN_DTYPES = {"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "b1"}


class _Refused(pickle.UnpicklingError):
    pass


def text(value: object) -> object:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _Global:
    """A stand-in for one of the allowed numpy globals: it can be called (building a stub) but
    not given state or attributes, so a pickle cannot modify it for later loads."""

    __slots__ = ("make", "name")

    def __init__(self, name: str, make: Callable[..., object] | None):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "make", make)

    def __call__(self, *args: object) -> object:
        if self.make is None:
            raise _Refused(f"{self.name} is called")
        return self.make(*args)

    def __setstate__(self, state: object) -> None:
        raise _Refused(f"{self.name} is given a state")

    def __setattr__(self, key: str, value: object) -> None:
        raise _Refused(f"{self.name} is given an attribute")


_NDARRAY = _Global("numpy.ndarray", None)


class _DTypeStub:
    """Stands for ``numpy.dtype(spec, align, copy)``: only plain numeric dtypes."""

    def __init__(self, spec: object, align: object = False, copy: object = True):
        spec = text(spec)
        if not isinstance(spec, str) or spec not in _PLAIN_DTYPES:
            raise _Refused(f"dtype {spec!r} is not a plain numeric dtype")
        self.spec = spec
        self.byteorder = "|"

    def __setstate__(self, state: object) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5 or any(s is not None for s in state[2:5]):
            raise _Refused("structured or sub-array dtypes are not allowed")
        order = text(state[1])
        if order not in ("<", ">", "|", "="):
            raise _Refused(f"byte order {order!r} is not valid")
        self.byteorder = order

    def dtype(self) -> np.dtype:
        dt = np.dtype(self.spec)
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt


class _ArrayStub:
    """Stands for ``numpy.core.multiarray._reconstruct(ndarray, shape, typecode)``.

    Its state is checked and turned into an array with ``np.frombuffer``: numpy's own
    ``ndarray.__setstate__`` never runs on data from the file.
    """

    def __init__(self, cls: object, shape: object = (0,), typecode: object = b"b"):
        if cls is not _NDARRAY:
            raise _Refused("_reconstruct of something other than numpy.ndarray")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("array state is not valid")
        shape, dtype, fortran, raw = state[-4:]
        if not (isinstance(shape, tuple) and len(shape) <= 2):
            raise _Refused(f"array shape {shape!r} is not valid")
        if not all(type(n) is int and n >= 0 for n in shape):
            raise _Refused(f"array shape {shape!r} is not valid")
        if not isinstance(dtype, _DTypeStub):
            raise _Refused("array dtype is not valid")
        if isinstance(raw, str):
            raw = raw.encode("latin-1")
        if not isinstance(raw, bytes | bytearray):
            raise _Refused("array data is not raw bytes")
        dt = dtype.dtype()
        want = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if len(raw) != want:
            raise _Refused(f"array data has {len(raw)} bytes, its shape {shape} needs {want}")
        self.array = np.frombuffer(raw, dtype=dt).reshape(shape, order="F" if fortran else "C")


_RECONSTRUCT = _Global("numpy.core.multiarray._reconstruct", _ArrayStub)
_GLOBALS: dict[tuple[str, str], _Global] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Global("numpy.dtype", _DTypeStub),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(
                f"it asks for the Python global {module}.{name}, which CIFAR-10 files never use"
            ) from None


_SCALARS = frozenset({bool, int, float, str, bytes, bytearray, type(None)})  # plain data, as is
MAX_DEPTH = 4  # the official files nest dict -> list -> item
MAX_ITEMS = 1_000_000  # list and dict entries in one file (an official batch has about 20,000)


def _unstub(obj: object) -> object:
    """Plain data for the unpickled object: arrays for array stubs, str keys; anything else that is
    not plain data (a bare global, a container met twice, a cycle, deep nesting) is refused, so
    a small file cannot expand into a huge structure."""
    seen: set[int] = set()
    items = 0

    def walk(o: object, depth: int) -> object:
        nonlocal items
        if isinstance(o, _ArrayStub):
            if o.array is None:
                raise _Refused("an array without data")
            return o.array
        if isinstance(o, dict | list | tuple):
            if depth > MAX_DEPTH:
                raise _Refused(f"containers nested more than {MAX_DEPTH} deep")
            if id(o) in seen:
                raise _Refused("a container referenced twice (or a cycle)")
            seen.add(id(o))
            items += len(o)
            if items > MAX_ITEMS:
                raise _Refused(f"more than {MAX_ITEMS} list or dict entries")
            if isinstance(o, dict):
                return {text(k): walk(v, depth + 1) for k, v in o.items()}
            if set(map(type, o)) <= _SCALARS:  # labels, file names: nothing inside to check
                return list(o)
            return [walk(v, depth + 1) for v in o]
        if isinstance(o, bool | int | float | str | bytes | bytearray) or o is None:
            return o
        raise _Refused(f"a {type(o).__name__} where plain data was expected")

    return walk(obj, 0)


MAX_OPS = 250_000  # opcodes before STOP: an official batch has about 30,000; each may build an object
MAX_MEMO = 100_000  # memo entries and indices (an official batch memoizes about 10,000 strings)

_PUTS = {ord("p"), ord("q"), ord("r")}  # PUT (a decimal line), BINPUT (1 byte), LONG_BINPUT (4)
_GETS = {ord("g"), ord("h"), ord("j")}  # GET, BINGET, LONG_BINGET: the same argument forms
_DECIMAL = {ord("p"), ord("g")}
_MEMOIZE, _STOP = 0x94, ord(".")
_MEMO_OPS = _PUTS | _GETS | {_MEMOIZE}
_LINE, _LENGTH = -1, -2  # argument kinds beside a fixed size >= 0


def _arg_forms() -> list[tuple[int, int, bool] | None]:
    """For each opcode byte: (kind or fixed size, lines or length bytes, length signed), from
    pickletools' table of every opcode's argument (None: not an opcode)."""
    length_bytes = {
        pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
        pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
        pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
        pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
    }
    forms: list[tuple[int, int, bool] | None] = [None] * 256
    for op in pickletools.opcodes:
        arg = op.arg
        if arg is None:
            form = (0, 0, False)
        elif arg.n >= 0:
            form = (arg.n, 0, False)
        elif arg.n == pickletools.UP_TO_NEWLINE:  # GLOBAL and INST take two lines
            form = (_LINE, 2 if arg.name.endswith("_pair") else 1, False)
        else:
            form = (_LENGTH, *length_bytes[arg.n])
        forms[op.code.encode("latin-1")[0]] = form
    return forms


_FORMS = _arg_forms()


def _memo_index(code: int, arg: bytes) -> int:
    if code not in _DECIMAL:
        return int.from_bytes(arg, "little")
    try:  # a decimal line, parsed as the unpickler parses it
        return int(arg) if len(arg) <= 20 else MAX_MEMO + 1
    except ValueError:
        raise pickle.UnpicklingError(f"memo index {arg!r} is not a number") from None


def scan(raw: bytes | bytearray) -> int:
    """Walk the opcodes of the pickle ``raw`` up to its STOP without building any object; returns
    the number of bytes up to and including the STOP.

    Refuses more than :data:`MAX_OPS` opcodes, memo indices above :data:`MAX_MEMO` and more than
    that many memo entries: CPython's unpickler sizes its memo by the largest index a pickle names
    (a 5-byte LONG_BINPUT can make it allocate gigabytes) and its stack by the opcodes. A malformed
    or truncated pickle raises :class:`pickle.UnpicklingError` or :class:`EOFError`. Arguments are
    skipped by their declared lengths, never copied, so the walk needs no memory of its own.
    """
    end, pos, ops, memo = len(raw), 0, 0, 0
    while pos < end:
        code = raw[pos]
        form = _FORMS[code]
        if form is None:
            raise pickle.UnpicklingError(f"invalid opcode {bytes([code])!r} at byte {pos}")
        ops += 1
        if ops > MAX_OPS:
            raise _Refused(f"more than {MAX_OPS} pickle opcodes")
        kind, count, signed = form
        start = pos = pos + 1
        if kind >= 0:
            pos += kind
        elif kind == _LINE:
            for _ in range(count):
                pos = raw.find(b"\n", pos) + 1
                if pos == 0:
                    raise EOFError(f"the pickle ends inside the opcode at byte {start - 1}")
        else:
            size = int.from_bytes(raw[pos : pos + count], "little", signed=signed)
            if size < 0:
                raise pickle.UnpicklingError(f"negative length at byte {start - 1}")
            pos += count + size
        if pos > end:
            raise EOFError(f"the pickle ends inside the opcode at byte {start - 1}")
        if code in _MEMO_OPS:
            if code != _MEMOIZE:
                index = _memo_index(code, raw[start : pos - (kind == _LINE)])
                if not 0 <= index <= MAX_MEMO:
                    raise _Refused(f"memo index {index} is outside 0..{MAX_MEMO}")
            if code not in _GETS:
                memo += 1
                if memo > MAX_MEMO:
                    raise _Refused(f"more than {MAX_MEMO} memo entries")
        elif code == _STOP:
            return pos
    raise EOFError("the pickle ends before its STOP opcode")


class _View:
    """A read-only file over bytes whose reads are memoryviews, not copies: the unpickler copies
    only what it keeps (a batch's 30 MB of pixels once, not twice). ``peek`` lets it prefetch."""

    def __init__(self, raw: bytes | bytearray):
        self.raw, self.view, self.pos = raw, memoryview(raw), 0

    def _take(self, n: int, advance: bool = True) -> memoryview:
        end = len(self.raw) if n is None or n < 0 else min(self.pos + n, len(self.raw))
        out = self.view[self.pos : end]
        if advance:
            self.pos = end
        return out

    def read(self, n: int = -1) -> memoryview:
        return self._take(n)

    def peek(self, n: int = 0) -> memoryview:
        return self._take(max(n, 1), advance=False)

    def readline(self, n: int = -1) -> memoryview:
        end = self.raw.find(b"\n", self.pos) + 1 or len(self.raw)
        return self._take(end - self.pos if n < 0 else min(n, end - self.pos))

    def readinto(self, buf: bytearray | memoryview) -> int:
        data = self._take(len(buf))
        memoryview(buf).cast("B")[: len(data)] = data
        return len(data)


def safe_unpickle(raw: bytes | bytearray | BinaryIO, path: Path) -> dict:
    """Unpickle a CIFAR-10 python-version file (its bytes, or a stream of them) without trusting it.

    Returns a dict with str keys; raises :class:`DataError` naming ``path`` for anything that is
    not a plain pickle of a dict of numbers, strings, lists and numeric arrays. The opcodes are
    scanned (:func:`scan`) before the unpickler sees any of them.
    """
    if not isinstance(raw, bytes | bytearray):
        raw = raw.read()
    try:
        scan(raw)
        obj = _unstub(_SafeUnpickler(_View(raw), encoding="bytes").load())
    except _Refused as e:
        raise DataError(f"{path}: refused to load: {e} (the file may be hostile)") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        OverflowError,
        RecursionError,
        UnicodeDecodeError,
    ) as e:
        raise DataError(f"{path}: truncated or not a CIFAR-10 pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}, expected a dict")
    return obj
