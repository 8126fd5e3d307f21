"""Parse `.gfn` text into the AST (gfdsl.ast) with Lark's LALR(1) parser.

The grammar is `grammars/gfn.lark`, shipped inside the package. Lark's own exceptions
never escape: gfdsl.messages turns them into curated diagnostics (missing '}', missing
'=', misspelt keyword, ...). Expressions are built without recursion and their depth is
bounded, so adversarial input (10,000 nested parentheses, a 100k-term sum) ends in a
diagnostic, not a RecursionError.
"""

from __future__ import annotations

import functools
from dataclasses import fields
from importlib import resources

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedInput, VisitError

from gfdsl.lang import ast
from gfdsl.errors import GfdslError, diag
from gfdsl.lang import messages
from gfdsl.lang.messages import MAX_DEPTH
from gfdsl.lang.source import Source, Span



def grammar_text() -> str:
    return resources.files("gfdsl.grammars").joinpath("gfn.lark").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=2)
def parser(strict: bool = False) -> Lark:
    """The Lark parser, built once per process (the grammar is package data).

    strict=True makes Lark refuse any LALR conflict or terminal collision; a test builds
    it that way, so the grammar is known strict and start-up skips the 0.2 s check.
    """
    import lark.lexer as lark_lexer

    saved = lark_lexer.has_interegular
    # Lark re-checks terminal collisions with interegular on every build (~0.3 s) when
    # that package is installed; the strict build in tests/test_grammar.py already
    # proves there are none, so ordinary start-up skips it.
    lark_lexer.has_interegular = saved and strict
    try:
        return Lark(
            grammar_text(),
            parser="lalr",
            lexer="contextual",
            strict=strict,
            propagate_positions=True,
            maybe_placeholders=True,
        )
    finally:
        lark_lexer.has_interegular = saved


def span_of(meta_or_tok) -> Span:
    m = meta_or_tok
    return Span(m.line, m.column, m.end_line, m.end_column, m.start_pos, m.end_pos)


def _num(tok: Token) -> ast.Num:
    text = str(tok)
    value = int(text) if tok.type == "INT" else float(text)
    return ast.Num(value, text, span_of(tok))


def _depth(*children) -> int:
    return 1 + max((getattr(c, "depth", 1) for c in children), default=0)


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    """Lark tree -> gfdsl.ast, bottom-up and without recursion."""

    # expressions
    def int_lit(self, meta, c):
        return _num(c[0])

    float_lit = int_lit

    def string_lit(self, meta, c):
        raw = str(c[0])[1:-1]
        value = raw.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        return ast.Str(value, span_of(meta))

    def true_lit(self, meta, c):
        return ast.Bool(True, span_of(meta))

    def false_lit(self, meta, c):
        return ast.Bool(False, span_of(meta))

    def name(self, meta, c):
        return ast.Name(str(c[0]), span_of(meta))

    def index(self, meta, c):
        return ast.Index(str(c[0]), c[1], span_of(meta), span_of(c[0]), _depth(c[1]))

    def list_lit(self, meta, c):
        items = tuple(x for x in c if x is not None)
        return ast.ListLit(items, span_of(meta), _depth(*items))

    def kwarg(self, meta, c):
        return ast.Arg(str(c[0]), c[1], span_of(meta), span_of(c[0]))

    def posarg(self, meta, c):
        return ast.Arg(None, c[0], span_of(meta), None)

    def call(self, meta, c):
        args = tuple(a for a in c[1:] if a is not None)
        return ast.Call(str(c[0]), args, span_of(meta), span_of(c[0]), _depth(*(a.value for a in args)))

    def _bin(op):
        def f(self, meta, c):
            return ast.BinOp(op, c[0], c[1], span_of(meta), _depth(c[0], c[1]))

        return f

    add, sub, mul, div, mod, pow = _bin("+"), _bin("-"), _bin("*"), _bin("/"), _bin("%"), _bin("**")

    def neg(self, meta, c):
        return ast.Neg(c[0], span_of(meta), _depth(c[0]))

    # declarations
    def assign(self, meta, c):
        return ast.Assign(str(c[0]), c[1], span_of(meta), span_of(c[0]))

    def dims_block(self, meta, c):
        return ast.DimsBlock(tuple(c), span_of(meta))

    def train_block(self, meta, c):
        return ast.TrainBlock(tuple(c), span_of(meta))

    def schedule_decl(self, meta, c):
        return ast.ScheduleDecl(str(c[0]), c[1], span_of(meta), span_of(c[0]))

    def index_range(self, meta, c):
        return ast.IndexRange(str(c[0]), c[1], c[2], span_of(meta), span_of(c[0]))

    for_clause = index_range

    def type_params(self, meta, c):
        return tuple(c)

    def type(self, meta, c):
        params = c[1] or ()
        shape = tuple(x for x in c[2:] if x is not None)
        return ast.TypeExpr(str(c[0]), params, shape, span_of(meta), span_of(c[0]))

    def state_decl(self, meta, c):
        return ast.StateDecl(str(c[0]), c[1], c[2], span_of(meta), span_of(c[0]))

    def state_ref(self, meta, c):
        return ast.StateRef(str(c[0]), c[1], span_of(meta), span_of(c[0]))

    def source_decl(self, meta, c):
        what = c[1]
        if isinstance(what, ast.Call) or what is None:
            return ast.SourceDecl(c[0], what, span_of(meta))
        return ast.SourceDecl(c[0], None, span_of(meta), value=what)

    def data_state_decl(self, meta, c):
        return ast.DataStateDecl(c[0], span_of(meta))

    def net_decl(self, meta, c):
        return ast.NetDecl(str(c[0]), c[1], c[2], span_of(meta), span_of(c[0]))

    def given_clause(self, meta, c):
        return tuple(c)

    def step_field(self, meta, c):
        return ast.StepField(str(c[0]), c[1], span_of(meta))

    def step_decl(self, meta, c):
        src, dst, loop, given, *fields = c
        return ast.StepDecl(src, dst, loop, given or (), tuple(fields), span_of(meta))

    def dataset_decl(self, meta, c):
        return ast.DatasetDecl(c[0], span_of(meta))

    def objective_decl(self, meta, c):
        return ast.ObjectiveDecl(c[0], span_of(meta), then=c[1])

    def action_decl(self, meta, c):
        return ast.ActionDecl(str(c[0]), c[1], c[2], span_of(meta), span_of(c[0]))

    def reward_decl(self, meta, c):
        form, e = str(c[0]), c[1]
        call, temper = (e, None) if isinstance(e, ast.Call) else (None, None)
        if isinstance(e, ast.BinOp) and form == "reward" and e.op == "**":
            call, temper = e.left, e.right  # R(x) ** beta
        elif isinstance(e, ast.BinOp) and form == "energy" and e.op == "*":
            call, temper = e.right, e.left  # beta * E(x)
        if not (isinstance(call, ast.Call) and (temper is None or isinstance(temper, ast.Name))):
            call, temper = None, None  # another shape: the checker reports it at e
        return ast.RewardDecl(call, span_of(meta), form=form, temper=temper, expr=e)

    def cond_type(self, meta, c):
        params = c[1] or ()
        shape = (c[2],) if len(c) > 2 and c[2] is not None else ()
        return ast.TypeExpr(str(c[0]), params, shape, span_of(meta), span_of(c[0]))

    def condition_decl(self, meta, c):
        return ast.ConditionDecl(str(c[0]), c[1], c[2], span_of(meta), span_of(c[0]))

    def policy_decl(self, meta, c):
        return ast.PolicyDecl(str(c[0]), c[1], span_of(meta))

    def model(self, meta, c):
        return ast.Model(str(c[0]), tuple(c[1:]), span_of(meta), span_of(c[0]))

    def start(self, meta, c):
        return c[0]


def parse(source: Source) -> ast.Model:
    """Parse one spec. Raises GfdslError (never a Lark or Python error) on bad input."""
    p = parser()
    if not source.text.strip() or _only_comments(source.text):
        raise GfdslError([diag("E107", source, source.span_at(0, 0))])
    messages.precheck(source, p)  # characters, bracket balance and depth
    try:
        tree = p.parse(source.text)
    except UnexpectedInput as e:
        raise GfdslError([messages.syntax_diagnostic(source, p, e)]) from None
    try:
        model = _ToAst().transform(tree)
    except VisitError as e:  # a bug in a callback, not in the user's input
        raise e.orig_exc from None
    _check_depth(source, model)
    return model


def _only_comments(text: str) -> bool:
    return all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.split("\n"))


def _check_depth(source: Source, model: ast.Model) -> None:
    """Refuse expressions nested deeper than MAX_DEPTH (long operator chains included).

    Walks the AST with an explicit stack, stopping at the first (outermost) node that is
    too deep, so later phases may recurse over expressions safely.
    """
    stack: list = [model]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):
            stack.extend(node)
            continue
        if not hasattr(node, "__dataclass_fields__"):
            continue
        if getattr(node, "depth", 1) > MAX_DEPTH:
            raise GfdslError([diag("E106", source, node.span, limit=MAX_DEPTH)])
        for f in fields(node):
            if f.name not in ("span", "name_span", "var_span", "depth"):
                stack.append(getattr(node, f.name))


__all__ = ["parse", "parser", "grammar_text", "span_of"]
