"""Source text and spans: where in a `.gfn` file a construct came from.

Every AST node and IR element carries a `Span` so that any later phase (checker, IR
validation, lowering) can point at the exact characters a user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
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
