"""Source text and spans: where in a `.gfn` file a construct came from.

Every AST node and IR element carries a `Span` so that any later phase (checker, IR
validation, lowering) can point at the exact characters a user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: specs are small; a larger file is almost surely a mistake.


@dataclass(frozen=True, order=True)
class Span:
    """A half-open character range, with 1-based line and column of both ends."""

    line: int
    col: int
    end_line: int
    end_col: int
    start: int = 0  # character offsets into Source.text
    end: int = 0

    def __str__(self) -> str:
        return f"{self.line}:{self.col}"

    def to(self, other: "Span") -> "Span":
        """The span from the start of self to the end of other."""
        return Span(self.line, self.col, other.end_line, other.end_col, self.start, other.end)

    def as_tuple(self) -> tuple[int, int, int, int]:
        """Plain data for the IR: (line, col, end_line, end_col)."""
        return (self.line, self.col, self.end_line, self.end_col)


NO_SPAN = Span(1, 1, 1, 1)


@dataclass(frozen=True)
class Source:
    """The text of one spec and the name it is reported under."""

    path: str
    text: str

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    def span_at(self, offset: int, length: int = 1) -> Span:
        """The span of `length` characters from character `offset`."""
        offset = max(0, min(offset, len(self.text)))
        end = max(offset, min(offset + length, len(self.text)))
        line = self.text.count("\n", 0, offset) + 1
        col = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        end_line = self.text.count("\n", 0, end) + 1
        end_col = end - (self.text.rfind("\n", 0, end) + 1) + 1
        return Span(line, col, end_line, end_col, offset, end)

    def excerpt(self, span: Span) -> str:
        """The line of `span` with the span underlined by carets, rustc-style."""
        lines = self.lines
        if not 1 <= span.line <= len(lines):
            return ""
        # tabs and control characters become one column each, so the carets line up
        text = "".join(c if c.isprintable() else " " if c == "\t" else "?" for c in lines[span.line - 1])
        width = len(str(span.line))
        if span.end_line == span.line:
            n = max(1, span.end_col - span.col)
        else:
            n = max(1, len(text) - span.col + 1)
        # Very long lines (minified or generated input) are cut around the span.
        shift = 0
        if len(text) > 120:
            shift = max(0, span.col - 40)
            text = ("..." if shift else "") + text[shift : shift + 110] + "..."
            shift -= 3 if shift else 0
        pad = " " * (span.col - 1 - shift)
        return (
            f"{' ' * width} |\n"
            f"{span.line} | {text}\n"
            f"{' ' * width} | {pad}{'^' * min(n, 110)}"
        )


def read_source(path: str | Path) -> Source:
    """Read a spec file as UTF-8 text, or raise a GfdslError that says why not."""
    from gfdsl.errors import GfdslError, diag

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
    from gfdsl.errors import GfdslError, diag

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
