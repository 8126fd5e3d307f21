"""Every file gfdsl reads or writes by name: specs in, run outputs and diagrams out.

Reading refuses what is not a small UTF-8 text file with a positioned diagnostic;
writing is atomic (a temporary file beside the target, then a rename), so a reader or a
crash never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path, PurePosixPath

from gfdsl.errors import GfdslError, diag
from gfdsl.lang.source import NO_SPAN, Source

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: specs are small; a larger file is almost surely a mistake.
MAX_INPUT_BYTES = 4 << 30  # 4 GiB: a data file or reward table a spec names
COPY_INPUT_BYTES = 16 << 20  # inputs up to 16 MiB are copied into the run folder


def _regular(p: Path, name: str, code: str = "E701") -> os.stat_result:
    """stat() p and refuse what is not a regular file (a folder, a FIFO that would block
    the read, a device such as /dev/zero whose size says 0) before anything is opened."""
    try:
        st = p.stat()
    except FileNotFoundError:
        raise GfdslError([diag(code, None, NO_SPAN, path=name, why="no such file")]) from None
    except OSError as e:
        raise GfdslError([diag(code, None, NO_SPAN, path=name, why=e.strerror or str(e))]) from None
    if stat.S_ISDIR(st.st_mode):
        raise GfdslError([diag(code, None, NO_SPAN, path=name, why="it is a directory")])
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or \
            stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file"
        raise GfdslError([diag(code, None, NO_SPAN, path=name, why=f"it is {kind}, not a regular file")])
    return st


def shipped_specs() -> dict[str, Path]:
    """The specs installed with gfdsl (package data gfdsl.specs): name -> path."""
    from importlib import resources

    try:
        root = resources.files("gfdsl.specs")
    except ModuleNotFoundError:
        return {}
    return {Path(str(f)).stem: Path(str(f)) for f in root.iterdir() if str(f).endswith(".gfn")}


def resolve_spec(path: str | Path) -> Path:
    """A spec path as given, or -- where no such file exists and it is a bare name like
    `ddpm` or `ddpm.gfn` -- the shipped spec of that name (so an installed gfdsl can run
    `gfdsl run ddpm` from any folder)."""
    p = Path(path)
    if p.exists() or len(p.parts) != 1 or p.suffix not in ("", ".gfn"):
        return p
    return shipped_specs().get(p.stem, p)


def read_source(path: str | Path) -> Source:
    """Read a spec file as UTF-8 text, or raise a GfdslError that says why not."""
    p = resolve_spec(path)
    name = str(path) if p == Path(path) else str(p)
    size = _regular(p, name).st_size
    if size > MAX_SPEC_BYTES:
        raise GfdslError([diag("E702", None, NO_SPAN, path=name, size=f"{size / 2**20:.1f} MiB", limit="1 MiB")])
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)  # st_size may lie (a file that grows): read no more than the limit
        if len(data) > MAX_SPEC_BYTES:
            raise GfdslError([diag("E702", None, NO_SPAN, path=name, size="more than 1 MiB", limit="1 MiB")])
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


def umask() -> int:
    """The process's umask (os.umask can only be read by setting it)."""
    m = os.umask(0)
    os.umask(m)
    return m


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
            mode = 0o666 & ~umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        os.unlink(tmp)
        raise GfdslError([diag("E704", None, None, path=path, why=e.strerror or str(e))]) from None


# -- files a spec names ---------------------------------------------------------------------------


def relative_folder(v: str) -> str:
    """The checker's rule for a folder written in a spec: relative, inside the spec's folder."""
    p = PurePosixPath(v.replace("\\", "/"))
    if not v.strip() or p.is_absolute() or ".." in p.parts or ":" in v:
        raise ValueError("must be a relative path inside the spec's folder (no '..', no absolute path)")
    return v


def relative_input(v: str, suffixes: tuple[str, ...]) -> str:
    """The checker's rule for a path written in a spec (`file(path = ...)`,
    `table(file = ...)`): relative, inside the spec's folder, with a known suffix.
    Raises ValueError (the argument schemas turn it into E303)."""
    p = PurePosixPath(v.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or ":" in v:
        raise ValueError("must be a relative path inside the spec's folder (no '..', no absolute path)")
    if p.suffix not in suffixes:
        raise ValueError(f"must end in {' or '.join(suffixes)}, not '{p.suffix or v}'")
    return v


class Inputs:
    """The one resolver of the files a spec names. A path is relative to `base` (the
    spec's folder; for a run being evaluated or resumed, the folder its spec came from,
    recorded in run.json), must stay inside it after links are followed, and must be a
    regular file of at most MAX_INPUT_BYTES. `copies` (a run folder's inputs/) is looked
    in first: small inputs are copied there when a run starts, so a run stays usable
    when its data moves or the command runs from another folder."""

    def __init__(self, base: Path, copies: Path | None = None):
        self.base, self.copies = Path(base), copies

    @classmethod
    def beside(cls, spec_path: str | None) -> "Inputs":
        return cls(Path(spec_path).resolve().parent if spec_path else Path.cwd())

    def resolve_dir(self, rel: str) -> Path:
        """A folder the spec names (an image data set), inside the spec's folder."""
        p = self.base / rel
        if not p.is_dir():
            why = "no such folder" if not p.exists() else "it is not a folder"
            raise GfdslError([diag("E801", None, None, path=str(p), why=why)])
        if not p.resolve().is_relative_to(self.base.resolve()):
            raise GfdslError([diag("E801", None, None, path=str(p), why="it resolves to a folder outside the spec's folder")])
        return p

    def resolve(self, rel: str) -> Path:
        for root in ([self.copies] if self.copies is not None else []) + [self.base]:
            p = root / rel
            if p.exists() or root is self.base:
                break
        name = str(p)
        if p.exists() and not p.resolve().is_relative_to(root.resolve()):
            raise GfdslError([diag("E801", None, None, path=name, why="it resolves to a file outside the spec's folder")])
        size = _regular(p, name, "E801").st_size
        if size > MAX_INPUT_BYTES:
            raise GfdslError([diag("E801", None, None, path=name,
                                   why=f"it is {size / 2**30:.1f} GiB, above the {MAX_INPUT_BYTES >> 30} GiB limit")])
        return p


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_IMAGES = 1_000_000  # images a folder data set may hold


def image_files(folder: Path) -> list[Path]:
    """The images under a folder (its sub-folders one level down too), sorted; E801 past
    MAX_IMAGES or MAX_INPUT_BYTES in all."""
    out, total = [], 0
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and len(p.relative_to(folder).parts) <= 2:
            out.append(p)
            total += p.stat().st_size
            if len(out) > MAX_IMAGES or total > MAX_INPUT_BYTES:
                raise GfdslError([diag("E801", None, None, path=str(folder),
                                       why=f"it holds more than {MAX_IMAGES:,} images or {MAX_INPUT_BYTES >> 30} GiB")])
    return out


def folder_digest(folder: Path) -> str:
    """SHA-256 over the images of a folder data set: each one's relative name and bytes."""
    h = hashlib.sha256()
    for p in image_files(folder):
        h.update(str(p.relative_to(folder)).encode() + b"\0" + file_digest(p).encode())
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
