"""What a data file holds, read from its header alone (no numpy, no torch): the checker
matches a `file(path = ...)` data set to the data state before anything is loaded.

  .npy   the format's header: shape and dtype (NEP 1)
  .npz   the same, of one array inside the zip (`key`, or the only one)
  .csv   the first lines: how many columns, whether the first line is a header
  .pt    nothing (pickled tensors are only known once loaded)

Each returns a Peek, or raises ValueError saying what is wrong with the file.
"""

from __future__ import annotations

import ast
import io
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Peek:
    rows: int | None  # examples (None: unknown without reading the file, a CSV)
    numel: int  # values per example
    dtype: str  # "float", "int", "bool", or "?"
    columns: tuple[str, ...] = ()  # a CSV's header, if it has one


def peek(path: Path, key: str | None = None, label_field: str | None = None) -> Peek | None:
    suffix = path.suffix
    if suffix == ".npy":
        with open(path, "rb") as f:
            return _npy_header(f)
    if suffix == ".npz":
        return _npz(path, key)
    if suffix == ".csv":
        p = csv_layout(path)
        if label_field is not None:
            if label_field not in p.columns:
                raise ValueError(f"has no column '{label_field}'" + (f" (its columns: {', '.join(p.columns[:12])})"
                                                                      if p.columns else " (it has no header line)"))
            return Peek(None, p.numel - 1, p.dtype, p.columns)
        return p
    return None


def _npy_header(f) -> Peek:
    magic = f.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise ValueError("is not a .npy file (no NumPy magic bytes)")
    major = magic[6]
    n = struct.unpack("<H" if major == 1 else "<I", f.read(2 if major == 1 else 4))[0]
    if n > 1 << 16:
        raise ValueError("has an oversized .npy header")
    try:
        head = ast.literal_eval(f.read(n).decode("latin1"))
        shape, descr = tuple(head["shape"]), head["descr"]
    except (ValueError, SyntaxError, KeyError, TypeError):
        raise ValueError("has a damaged .npy header") from None
    if not isinstance(descr, str):
        raise ValueError("holds a structured array; store a plain numeric one")
    kind = descr.lstrip("<>|=")[:1]
    dtype = {"f": "float", "i": "int", "u": "int", "b": "bool"}.get(kind, "?")
    if dtype == "?":
        raise ValueError(f"has dtype {descr!r}, which is not numeric" + (" (complex)" if kind == "c" else ""))
    if not shape:
        raise ValueError("holds a single number, not an array of examples")
    numel = 1
    for s in shape[1:]:
        numel *= int(s)
    return Peek(int(shape[0]), numel, dtype)


def _npz(path: Path, key: str | None) -> Peek:
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError("is not a .npz file (not a zip archive)") from None
    with z:
        names = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
        if key is None and len(names) != 1:
            raise ValueError(f"holds {len(names)} arrays ({', '.join(names[:8])}); name one with `key = \"...\"`")
        key = key or names[0]
        if key not in names:
            raise ValueError(f"has no array '{key}' (it has {', '.join(names[:8]) or 'none'})")
        with z.open(key + ".npy") as f:
            return _npy_header(io.BytesIO(f.read(1 << 17)))


def csv_layout(path: Path) -> Peek:
    """Columns of a CSV from its first lines: a header when the first line is not all numbers."""
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as f:
        lines = [ln for ln in (f.readline() for _ in range(3)) if ln.strip()]
    if not lines:
        raise ValueError("is empty")
    first = [c.strip() for c in lines[0].split(",")]
    header = not all(_number(c) for c in first)
    if header and len(lines) < 2:
        raise ValueError("has a header line and no rows")
    width = len(first)
    return Peek(None, width, "float", tuple(first) if header else ())


def _number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
