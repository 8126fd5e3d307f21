"""`gfdsl fmt`: print a spec in canonical form, keeping every comment.

Canonical form: two-space indentation, one statement per line, `=` aligned within a
block (dims, train, a step's kernels), trailing comments aligned within a run of
consecutive lines, at most one blank line where the source had any, minimal
parentheses, numbers as written. The guarantee tested over every shipped spec and
random mutations: parse(fmt(s)) == parse(s), and fmt(fmt(s)) == fmt(s).
"""

from __future__ import annotations

from dataclasses import dataclass

from gfdsl.lang import ast
from gfdsl.lang.parse import parse, parser
from gfdsl.lang.source import Source

PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "%": 2, "**": 4}
NEG_PREC = 3
ATOM = 5


def _prec(e) -> int:
    if isinstance(e, ast.BinOp):
        return PREC[e.op]
    if isinstance(e, ast.Neg):
        return NEG_PREC
    return ATOM


def expr(e) -> str:
    """An expression with the fewest parentheses that keep its tree."""
    if isinstance(e, ast.Num):
        return e.text
    if isinstance(e, ast.Str):
        return '"' + e.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(e, ast.Bool):
        return "true" if e.value else "false"
    if isinstance(e, ast.Name):
        return e.name
    if isinstance(e, ast.Index):
        return f"{e.name}[{expr(e.index)}]"
    if isinstance(e, ast.ListLit):
        return "[" + ", ".join(expr(x) for x in e.items) + "]"
    if isinstance(e, ast.Call):
        return call(e)
    if isinstance(e, ast.Neg):
        inner = expr(e.operand)
        return f"-({inner})" if _prec(e.operand) < NEG_PREC else f"-{inner}"
    if isinstance(e, ast.BinOp):
        p = PREC[e.op]
        left, right = expr(e.left), expr(e.right)
        if e.op == "**":
            if _prec(e.left) < ATOM:  # `atom ** unary`: the base must be an atom
                left = f"({left})"
            if _prec(e.right) < NEG_PREC:
                right = f"({right})"
        else:
            if _prec(e.left) < p:
                left = f"({left})"
            if _prec(e.right) <= p:  # left-associative
                right = f"({right})"
        return f"{left} {e.op} {right}"
    raise AssertionError(type(e))


def call(c: ast.Call) -> str:
    args = ", ".join(f"{a.name} = {expr(a.value)}" if a.name else expr(a.value) for a in c.args)
    return f"{c.name}({args})"


def ref(r: ast.StateRef) -> str:
    return r.name if r.index is None else f"{r.name}[{expr(r.index)}]"


def rng(r: ast.IndexRange) -> str:
    return f"{r.var} in {expr(r.lo)}..{expr(r.hi)}"


def type_(t: ast.TypeExpr) -> str:
    p = "(" + ", ".join(expr(x) for x in t.params) + ")" if t.params else ""
    return f"{t.name}{p}[{', '.join(expr(x) for x in t.shape)}]"


@dataclass
class _Line:
    indent: int
    code: str  # "" for a blank line
    comment: str = ""
    own: bool = False  # a comment on a line of its own


class _Emitter:
    def __init__(self, source: Source):
        self.comments = _comments(source)
        self.i = 0
        self.blank = {n for n, ln in enumerate(source.lines, start=1) if not ln.strip()}
        self.out: list[_Line] = []
        self.last = 0  # last source line emitted

    def _gap(self, line: int) -> None:
        """One blank line where the source had any, except right after an opening '{'."""
        if not self.out or self.out[-1].code == "" and not self.out[-1].own:
            return
        prev = self.out[-1]
        if not prev.own and prev.code.rstrip().endswith("{"):
            return
        if any(self.last < b < line for b in self.blank):
            self.out.append(_Line(0, ""))

    def leading(self, line: int, indent: int) -> None:
        while self.i < len(self.comments) and self.comments[self.i][0] < line:
            cl, text = self.comments[self.i]
            self._gap(cl)
            self.out.append(_Line(indent, "", text, own=True))
            self.last = cl
            self.i += 1

    def emit(self, indent: int, code: str, start: int, end: int) -> None:
        self.leading(start, indent)
        if code != "}":
            self._gap(start)
        trailing = []
        while self.i < len(self.comments) and self.comments[self.i][0] <= end:
            trailing.append(self.comments[self.i][1])
            self.i += 1
        for extra in trailing[:-1]:  # comments inside a multi-line statement
            self.out.append(_Line(indent, "", extra, own=True))
        self.out.append(_Line(indent, code, trailing[-1] if trailing else ""))
        self.last = max(self.last, end)

    def emit_wrapped(self, indent: int, lines: list[str], start: int, end: int) -> None:
        """A statement written over several lines: its head, one argument per line
        (indented once more), the closing ')'; comments inside go before it, a trailing
        one after the ')'."""
        self.emit(indent, lines[0], start, end)
        last = self.out.pop()
        self.out.append(_Line(indent, lines[0]))
        self.out.extend(_Line(indent + 1, ln) for ln in lines[1:-1])
        self.out.append(_Line(indent, lines[-1], last.comment))

    def rest(self, indent: int) -> None:
        self.leading(10**9, indent)

    def text(self) -> str:
        lines = self.out
        # align trailing comments within runs of consecutive code lines of one indent
        i = 0
        while i < len(lines):
            j = i
            while j < len(lines) and lines[j].code and not lines[j].own and lines[j].indent == lines[i].indent:
                j += 1
            run = [ln for ln in lines[i:j] if ln.comment]
            if run:
                col = max(len(ln.code) for ln in run) + 2
                for ln in run:
                    ln.code = ln.code.ljust(col)
            i = max(j, i + 1)
        out = []
        for ln in lines:
            pad = "  " * ln.indent
            if ln.own:
                out.append(pad + ln.comment)
            elif ln.comment:
                out.append(pad + ln.code + ln.comment)
            else:
                out.append((pad + ln.code) if ln.code else "")
        while out and not out[-1]:
            out.pop()
        return "\n".join(x.rstrip() for x in out) + "\n"


def _comments(source: Source) -> list[tuple[int, str]]:
    toks = parser().lex(source.text, dont_ignore=True)
    return [(t.line, str(t).rstrip()) for t in toks if t.type == "COMMENT"]


def _assigns(em: _Emitter, assigns, indent: int) -> None:
    width = max((len(a.name) for a in assigns), default=0)
    for a in assigns:
        em.emit(indent, f"{a.name.ljust(width)} = {expr(a.value)}", a.span.line, a.span.end_line)


def format_source(source: Source) -> str:
    """The canonical text of a spec (raises GfdslError if it does not parse)."""
    m = parse(source)
    em = _Emitter(source)
    em.emit(0, f"model {m.name} {{", m.span.line, m.name_span.line)
    for it in m.items:
        s, e = it.span.line, it.span.end_line
        if isinstance(it, (ast.DimsBlock, ast.TrainBlock)):
            kw = "dims" if isinstance(it, ast.DimsBlock) else "train"
            head_end = it.assigns[0].span.line - 1 if it.assigns and it.assigns[0].span.line > s else s
            if not it.assigns:
                em.emit(1, f"{kw} {{}}", s, e)
                continue
            em.emit(1, f"{kw} {{", s, head_end)
            _assigns(em, it.assigns, 2)
            em.leading(e, 2)
            em.emit(1, "}", e, e)
        elif isinstance(it, ast.StepDecl):
            head = f"step {ref(it.src)} -> {ref(it.dst)}"
            if it.loop:
                head += f" for {rng(it.loop)}"
            if it.given:
                head += " given " + ", ".join(ref(g) for g in it.given)
            if not it.fields:
                em.emit(1, head + " {}", s, e)
                continue
            head_end = it.fields[0].span.line - 1 if it.fields[0].span.line > s else s
            em.emit(1, head + " {", s, head_end)
            width = max(len(f.direction) for f in it.fields)
            for f in it.fields:
                em.emit(2, f"{f.direction.ljust(width)} = {call(f.call)}", f.span.line, f.span.end_line)
            em.leading(e, 2)
            em.emit(1, "}", e, e)
        else:
            code = _item(it)
            lines = _wrap(it, code)
            if lines:
                em.emit_wrapped(1, lines, s, e)
            else:
                em.emit(1, code, s, e)
    em.leading(m.span.end_line, 1)
    em.emit(0, "}", m.span.end_line, m.span.end_line)
    em.rest(0)
    return em.text()


WIDTH = 100  # statements longer than this are written one argument per line


def _wrap(it, code: str) -> list[str] | None:
    """The lines of a statement whose call does not fit on one line, or None."""
    c = getattr(it, "call", None) or getattr(it, "prior", None)
    if len(code) + 2 <= WIDTH or not isinstance(c, ast.Call) or not c.args or not code.endswith(")"):
        return None
    head = code[: len(code) - len(call(c))] + c.name + "("
    width = max(len(a.name) for a in c.args if a.name) if any(a.name for a in c.args) else 0
    args = [(f"{a.name.ljust(width)} = {expr(a.value)}" if a.name else expr(a.value)) + "," for a in c.args]
    return [head, *args, ")"]


def _named(name: str, r: ast.IndexRange | None) -> str:
    """`name` or `name[v in lo..hi]`: the head of a state, net or action declaration."""
    return f"{name}[{rng(r)}]" if r else name


def _item(it) -> str:
    if isinstance(it, ast.ScheduleDecl):
        return f"schedule {it.name} = {call(it.call)}"
    if isinstance(it, ast.StateDecl):
        return f"state {_named(it.name, it.range)} : {type_(it.type)}"
    if isinstance(it, ast.SourceDecl):
        tail = f" ~ {call(it.prior)}" if it.prior else f" = {expr(it.value)}" if it.value is not None else ""
        return f"source {ref(it.ref)}" + tail
    if isinstance(it, ast.DataStateDecl):
        return f"data {ref(it.ref)}"
    if isinstance(it, ast.NetDecl):
        return f"net {_named(it.name, it.range)} = {call(it.call)}"
    if isinstance(it, ast.DatasetDecl):
        return f"dataset = {call(it.call)}"
    if isinstance(it, ast.ObjectiveDecl):
        return f"objective = {expr(it.expr)}" + (f" then {expr(it.then)}" if it.then is not None else "")
    if isinstance(it, ast.ActionDecl):
        return f"action {_named(it.name, it.range)} = {call(it.call)}"
    if isinstance(it, ast.RewardDecl):
        return f"{it.form} = {expr(it.expr)}"
    if isinstance(it, ast.ConditionDecl):
        t = it.type
        p = "(" + ", ".join(expr(x) for x in t.params) + ")" if t.params else ""
        shape = f"[{expr(t.shape[0])}]" if t.shape else ""
        return f"condition {it.name} : {t.name}{p}{shape}" + (f" ~ {call(it.prior)}" if it.prior else "")
    if isinstance(it, ast.PolicyDecl):
        return f"policy {it.direction.ljust(8)} = {call(it.call)}"
    raise AssertionError(type(it))
