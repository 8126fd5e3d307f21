"""Curated syntax messages: Lark's parse errors turned into diagnostics people can act on.

Lark reports "unexpected token X, expected one of {...}". For the slips people make most
often this module says what actually went wrong:

- a block whose '}' (or a ')' or ']') is missing           -> E103 at the opening bracket
- a closing bracket with nothing to close                   -> E109
- `steps 10` instead of `steps = 10`                         -> E104
- a misspelt keyword (`stte`, `forwad`, `objectve`)          -> E105 with did-you-mean
- a stray character (`$`, `@`, an unclosed string)           -> E101 / E108
- brackets nested absurdly deep                              -> E106
Everything else gets E102 "expected ..., found ..." with the expected tokens in words.
"""

from __future__ import annotations

from lark import Lark
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from gfdsl.errors import Diagnostic, GfdslError, diag, did_you_mean
from gfdsl.lang.source import Source, Span

MAX_DEPTH = 64  # brackets or operators nested deeper than this are refused (E106)
MAX_TOKENS = 100_000  # a spec longer than this is refused before parsing (E407): parsing is ~30 us a token
OPEN = {"(": ")", "[": "]", "{": "}"}
CLOSE = {v: k for k, v in OPEN.items()}
TERMINAL_WORDS = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": "a string",
    "$END": "the end of the file",
}
# keywords that start a model item: seeing one inside an open block means a '}' is missing
ITEM_KEYWORDS = {"dims", "schedule", "state", "source", "data", "net", "step", "dataset", "objective", "train", "model",
                 "action", "reward", "energy", "policy"}


def _tokens(source: Source, p: Lark):
    """Tokens of the whole text from Lark's basic lexer (no parser context)."""
    return p.lex(source.text, dont_ignore=False)


def precheck(source: Source, p: Lark) -> None:
    """Character-level and bracket-level problems, found before parsing."""

    stack: list[tuple[str, Span]] = []
    try:
        for n, tok in enumerate(_tokens(source, p)):
            if n == MAX_TOKENS:
                raise GfdslError([diag("E407", source, _tok_span(tok), what="the spec's length",
                                       value=f"more than {MAX_TOKENS:,} tokens", limit=f"{MAX_TOKENS:,}",
                                       hint="specs are short; generate a table into a data file instead")])
            ch = str(tok)
            if ch in OPEN:
                stack.append((ch, _tok_span(tok)))
                if len(stack) > MAX_DEPTH:
                    raise GfdslError([diag("E106", source, _tok_span(tok), limit=MAX_DEPTH)])
            elif ch in CLOSE:
                if not stack:
                    raise GfdslError([diag("E109", source, _tok_span(tok), close=ch, open=CLOSE[ch])])
                if stack[-1][0] != CLOSE[ch]:
                    # `(]` or `{ ... )`: the innermost opener is the one left unclosed
                    o, sp = stack[-1]
                    raise GfdslError([diag("E103", source, sp, open=o, close=OPEN[o])])
                stack.pop()
    except UnexpectedCharacters as e:
        raise GfdslError([_bad_char(source, e)]) from None


def _bad_char(source: Source, e: UnexpectedCharacters) -> Diagnostic:
    ch = source.text[e.pos_in_stream] if e.pos_in_stream < len(source.text) else ""
    span = source.span_at(e.pos_in_stream, 1)
    if ch == '"':
        end = source.text.find("\n", e.pos_in_stream)
        end = len(source.text) if end < 0 else end
        return diag("E108", source, source.span_at(e.pos_in_stream, end - e.pos_in_stream))
    shown = repr(ch) if ch.isprintable() and ch != "'" else f"U+{ord(ch):04X}" if ch else "<EOF>"
    return diag("E101", source, span, char=shown)


def _tok_span(tok) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)


def _describe(p: Lark, terminals) -> list[str]:
    words = []
    for t in terminals:
        if t in TERMINAL_WORDS:
            words.append(TERMINAL_WORDS[t])
            continue
        try:
            pat = p.get_terminal(t).pattern
        except KeyError:
            words.append(t.lower())
            continue
        words.append(f"'{pat.value}'" if pat.type == "str" else t.lower())
    # keywords first, then punctuation, then word classes; stable and short
    return sorted(set(words), key=lambda w: (not w[1:2].isalpha(), w.startswith("a"), w))


def _words(ws: list[str]) -> str:
    if len(ws) > 7:
        ws = ws[:6] + ["..."]
    return ws[0] if len(ws) == 1 else ", ".join(ws[:-1]) + " or " + ws[-1]


def _keyword_terminals(p: Lark, expected) -> dict[str, str]:
    out = {}
    for t in expected:
        try:
            pat = p.get_terminal(t).pattern
        except KeyError:
            continue
        if pat.type == "str" and pat.value.isidentifier():
            out[pat.value] = t
    return out


def _open_brackets_before(source: Source, p: Lark, pos: int) -> list[tuple[str, Span]]:
    stack: list[tuple[str, Span]] = []
    for tok in _tokens(source, p):
        if tok.start_pos >= pos:
            break
        ch = str(tok)
        if ch in OPEN:
            stack.append((ch, _tok_span(tok)))
        elif ch in CLOSE and stack:
            stack.pop()
    return stack


def _prev_token(source: Source, p: Lark, pos: int):
    prev = None
    for tok in _tokens(source, p):
        if tok.start_pos >= pos:
            break
        prev = tok
    return prev


def syntax_diagnostic(source: Source, p: Lark, e: UnexpectedInput) -> Diagnostic:
    """Turn one Lark parse error into the most helpful diagnostic we can."""
    if isinstance(e, UnexpectedCharacters):
        return _bad_char(source, e)
    expected = set(getattr(e, "expected", None) or getattr(e, "accepts", None) or ())
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        opened = _open_brackets_before(source, p, len(source.text))
        if opened:
            o, sp = opened[-1]
            return diag("E103", source, sp, open=o, close=OPEN[o])
        span = source.span_at(len(source.text.rstrip()), 0)
        return diag("E102", source, span, expected=_words(_describe(p, expected)), found="the end of the file")
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    text = str(tok)
    span = _tok_span(tok)

    if text == "model" and tok.type != "NAME":
        return diag("E110", source, span)

    # A statement keyword inside a block that still wants its '}': the block is unclosed.
    if "RBRACE" in expected and text in ITEM_KEYWORDS:
        opened = [b for b in _open_brackets_before(source, p, tok.start_pos) if b[0] == "{"]
        if len(opened) >= 2:
            o, sp = opened[-1]
            return diag("E103", source, sp, open=o, close="}",
                        notes=(f"'{text}' at line {tok.line} starts a new declaration inside the block",))

    # `name value` where `name = value` was meant.
    if expected and "EQUAL" in expected and tok.type != "EQUAL":
        prev = _prev_token(source, p, tok.start_pos)
        if prev is not None and str(prev).isidentifier():
            return diag("E104", source, span, name=str(prev))

    # A word where only keywords may stand: a misspelt keyword.
    keywords = _keyword_terminals(p, expected)
    if tok.type == "NAME" and keywords and "NAME" not in expected:
        hint = did_you_mean(text, keywords)
        if not hint.startswith("did you"):
            hint = f"expected {_words(_describe(p, expected))}"
        return diag("E105", source, span, word=text, hint=hint)

    found = f"'{text}'" if tok.type not in TERMINAL_WORDS else f"{TERMINAL_WORDS[tok.type]} '{text}'"
    hint = ""
    if text == "=" and "PLUS" in expected:
        hint = "each statement stands on its own; is a name missing before '='?"
    elif tok.type in ("INT", "FLOAT") and "NAME" in expected:
        hint = "names start with a letter or '_'"
    return diag("E102", source, span, expected=_words(_describe(p, expected)), found=found, hint=hint)
