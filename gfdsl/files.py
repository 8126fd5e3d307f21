"""Every file gfdsl reads or writes by name: specs in, run outputs and diagrams out.

Reading refuses what is not a small UTF-8 text file with a positioned diagnostic;
writing is atomic (a temporary file beside the target, then a rename), so a reader or a
crash never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gfdsl.errors import GfdslError, diag
from gfdsl.lang.source import NO_SPAN, Source

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: specs are small; a larger file is almost surely a mistake.


def read_source(path: str | Path) -> Source:
    """Read a spec file as UTF-8 text, or raise a GfdslError that says why not."""
    name = str(path)
    p = Path(path)
    try:
        if p.is_dir():
            raise GfdslError([diag("E701", None, NO_SPAN, path=name, why="it is a directory")])
        size = p.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise GfdslError(
                [diag("E702", None, NO_SPAN, path=name, size=f"{size / 2**20:.1f} MiB", limit="1 MiB")]
            )
        data = p.read_bytes()
    except FileNotFoundError:
        raise GfdslError([diag("E701", None, NO_SPAN, path=name, why="no such file")]) from None
    except PermissionError:
        raise GfdslError([diag("E701", None, NO_SPAN, path=name, why="permission denied")]) from None
    except OSError as e:
        raise GfdslError([diag("E701", None, NO_SPAN, path=name, why=e.strerror or str(e))]) from None
    return decode_source(name, data)


def decode_source(name: str, data: bytes) -> Source:
    """Decode bytes as UTF-8; report the first bad byte's line and column."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        good = data[: e.start].decode("utf-8", errors="replace")
        src = Source(name, good)
        span = src.span_at(len(good), 0)
        raise GfdslError([diag("E703", src, span, byte=f"0x{data[e.start]:02x}", offset=e.start)]) from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a UTF-8 byte-order mark is harmless; drop it
    src = Source(name, text)
    nul = text.find("\x00")
    if nul >= 0:
        raise GfdslError([diag("E703", src, src.span_at(nul), byte="0x00", offset=nul)])
    return src


def atomic_write(path: str, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".gfdsl-", dir=folder)
    except OSError as e:
        raise GfdslError([diag("E704", None, None, path=path, why=e.strerror or str(e))]) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes the file private (0600); give it the mode a plain open() would,
        # or keep the mode of the file it replaces
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        os.unlink(tmp)
        raise GfdslError([diag("E704", None, None, path=path, why=e.strerror or str(e))]) from None
