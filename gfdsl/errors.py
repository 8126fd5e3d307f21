"""The one catalogue of gfdsl's error messages, with stable codes.

Codes are grouped by phase: E1xx syntax, E2xx names, E3xx arguments and values,
E4xx shapes and sizes, E5xx graph structure, E6xx capabilities, E7xx files and usage,
E8xx lowering and run time. A code never changes meaning once released; tests/bad/
holds one golden diagnostic per broken spec. `gfdsl explain CODE` prints an entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gfdsl.lang.source import NO_SPAN, Source, Span

# code -> (message template, hint template or "")
CATALOGUE: dict[str, tuple[str, str]] = {
    # -- syntax --------------------------------------------------------------
    "E101": ("unexpected character {char}", "remove it, or put it inside a string or a '#' comment"),
    "E102": ("expected {expected}, found {found}", "{hint}"),
    "E103": ("'{open}' opened here is never closed", "add '{close}' to close it"),
    "E104": ("expected '=' after '{name}'", "write `{name} = ...`"),
    "E105": ("unknown keyword '{word}'", "{hint}"),
    "E106": ("nesting is deeper than {limit} levels", "split the expression, or use a dim for a sub-expression"),
    "E107": ("the file declares no model", "a spec starts with `model NAME {{ ... }}`"),
    "E108": ("string is not closed before the end of the line", "add the closing '\"'"),
    "E109": ("'{close}' closes nothing", "remove it, or add the matching '{open}' before it"),
    "E110": ("only one model may be declared per file", "move the second model to a file of its own"),
    # -- names -----------------------------------------------------------------
    "E201": ("unknown name '{name}'", "{hint}"),
    "E202": ("'{name}' is already defined", "the first definition is at line {line}; rename one of them"),
    "E203": ("unknown {kind} '{name}'", "{hint}"),
    "E204": ("'{name}' is {actual}, but {expected} is needed here", "{hint}"),
    "E205": ("{message}", "{hint}"),
    "E206": ("the model has no {what}", "add {example}"),
    "E207": ("'{name}' is declared more than once", "keep one `{name}` declaration"),
    "E208": ("condition '{name}' is read by no net", "add `cond = [{name}]` to the nets that should see it"),
    # -- arguments and values ----------------------------------------------------
    "E301": ("{callee}() has no argument '{name}'", "{hint}"),
    "E302": ("{callee}() needs the argument '{name}'", "add `{name} = ...`"),
    "E303": ("bad value for '{name}' in {callee}(): {why}", "{hint}"),
    "E304": ("arguments of {callee}() must be named", "write `{callee}(name = value, ...)`"),
    "E305": ("{why}", "{hint}"),
    "E306": ("'{name}' is given twice", "remove one of them"),
    "E307": ("a call is not allowed here", "{hint}"),
    "E308": ("unknown value type '{name}'", "{hint}"),
    # -- shapes and sizes --------------------------------------------------------
    "E401": ("{what} must be a positive integer, got {value}", "{hint}"),
    "E402": ("net '{net}' {which} {got} values, but {kernel}() {why} needs {need}", "{hint}"),
    "E403": ("{kernel}() needs {need}, but the step goes from {src} to {dst}", "{hint}"),
    "E404": ("dataset {dataset}() yields {got}, but the data state {state} is {need}", "{hint}"),
    "E405": ("{ref} is outside the range of '{family}' ({range})", "{hint}"),
    "E406": ("schedule '{name}' has {got} steps, but this step runs {need} times", "set `steps = {need}` in the schedule"),
    "E407": ("{what} is {value}, above the limit of {limit}", "{hint}"),
    "E408": ("the range {range} is empty", "ranges are inclusive: `a..b` needs a <= b"),
    "E409": ("prior {prior}() cannot produce {type}", "{hint}"),
    "E410": ("{what} needs {need}, but the state {state} is {type}", "{hint}"),
    "E411": ("{arg} = {value} is outside the {what} of {state} ({range})", "{hint}"),
    "E412": ("condition '{name}' is {type}, but {use} needs {need}", "{hint}"),
    # -- graph structure -----------------------------------------------------------
    "E501": ("the steps form a cycle: {cycle}", "a GFlowNet is a DAG; remove or reverse one step"),
    "E502": ("the data state {data} cannot be reached from the source {start}", "add steps that lead from the source to the data"),
    "E503": ("this step has no {direction} kernel", "add `{direction} = ...` to the step"),
    "E504": ("state {state} is entered by more than one step", "{hint}"),
    "E505": ("state {state} is not on any path from the source to the data", "connect it with a step, or remove it"),
    "E506": ("context {ctx} is not an ancestor of {state}", "a step may only be given states that come before it"),
    "E507": ("{message}", "{hint}"),
    "E508": ("the {direction} kernel is given twice", "keep one `{direction} = ...`"),
    "E509": ("action {name} does the same as action {other}", "two actions with one effect make a multigraph; remove one"),
    "E510": ("a model with actions has exactly one state, {why}", "{hint}"),
    # -- capabilities ----------------------------------------------------------------
    "E601": ("inverse() needs a bijective forward kernel, but {kernel}() is not bijective", "{hint}"),
    "E602": ("objective {objective}() needs a learned backward policy, but {why}", "{hint}"),
    "E603": ("{kernel}() is a {allowed} kernel and cannot be used as a {direction} kernel", "{hint}"),
    "E604": ("objective {objective}() is exact only when each data point has one trajectory, but {why}", "{hint}"),
    "E605": ("{kernel}() needs a net that takes the step index, but net '{net}' has no time embedding", "set `time_embed = 64` (or more) on net '{net}'"),
    "E606": ("nothing in the model is learned", "use a kernel with a `net`, or a learned prior"),
    "E607": ("{message}", "{hint}"),
    "E609": ("{policy} is learned, but no objective term trains it", "{hint}"),
    "E610": ("the source {state} ({type}) needs a prior", "write `source {state} ~ normal()` (or another prior, a data "
                                                            "set, or a point: `source {state} = 0`)"),
    "E611": ("objective {objective}() needs a reward R(x), but this model is trained from data", "{hint}"),
    "E612": ("{what} belongs to {kind}, but this model {why}", "{hint}"),
    "E613": ("objective {objective}() trains from data, but this model has no data set", "{hint}"),
    "E614": ("a posterior needs a data set, a reward and an objective `<data terms> then rtb`, but {why}", "{hint}"),
    "E615": ("objective {objective}() needs {need}, but {why}", "{hint}"),
    "E616": ("condition '{name}' has no source: {why}", "{hint}"),
    "E608": ("the objective must be a weighted sum of terms, {why}", "write e.g. `elbo + 0.25 * tbc(k = 2)`"),
    # -- files and usage ---------------------------------------------------------------
    "E701": ("cannot read {path}: {why}", "check the path"),
    "E702": ("{path} is {size}, above the {limit} limit for a spec", "is this the right file?"),
    "E703": ("the file is not UTF-8 text: byte {byte} at offset {offset}", "save the spec as UTF-8"),
    "E704": ("cannot write {path}: {why}", "check that the folder exists and is writable"),
    "E705": ("writing {fmt} needs Graphviz's `dot` program, which is not installed", "install it (Debian: `apt-get install graphviz`), or write a .dot file"),
    "E706": ("bad override '{text}': {why}", "write `--set NAME=VALUE`: a dim (`--set T=4`) or a train setting "
                                                "(`--set lr=3e-4`, `--set optimizer=adamw`)"),
    "E707": ("unknown output format '{ext}'", "use a file name ending in .dot, .svg or .png"),
    "E708": ("the unrolled model has {n} states, above the limit of {limit}", "make the dims smaller (e.g. `--set T=10`)"),
    "E709": ("bad value for {flag}: {why}", "{hint}"),
    "E710": ("plugin '{plugin}' {why}", "{hint}"),
    # -- lowering and run time --------------------------------------------------------------
    "E801": ("bad data file {path}: {why}", "a data set holds an array (N, ...) of examples of the data state; a "
                                            "reward table one value per state of the action space"),
    "E802": ("{message}", "{hint}"),
    "E803": ("cannot use run directory {path}: {why}", "{hint}"),
    "E804": ("the run stopped at step {step}: {why}", "{hint}"),
    "E806": ("the batch of {batch} does not split evenly over {world} processes", "choose a batch divisible by {world}"),
    "E805": ("device '{device}' is not available: {why}", "use --device cpu, or --device auto"),
    "E807": ("{what} needs about {need}, above the limit of {limit}: {detail}", "{hint}"),
}


@dataclass(frozen=True)
class Diagnostic:
    """One error: a code from the catalogue, a message, where, and a hint."""

    code: str
    message: str
    path: str
    span: Span | None
    hint: str = ""
    excerpt: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def sort_key(self) -> tuple:
        s = self.span or NO_SPAN
        return (self.path, s.line, s.col, self.code, self.message)

    def render(self) -> str:
        where = f"{self.path}:{self.span.line}:{self.span.col}" if self.span else self.path
        out = [f"{where}: error[{self.code}]: {self.message}"]
        if self.excerpt:
            out.append(self.excerpt)
        for note in self.notes:
            out.append(f"  = note: {note}")
        if self.hint:
            out.append(f"  = hint: {self.hint}")
        return "\n".join(out)


class GfdslError(Exception):
    """One or more diagnostics, sorted by position. The CLI prints them and exits 1."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.diagnostics)
        body = "\n\n".join(d.render() for d in self.diagnostics)
        if n > 1:
            body += f"\n\n{n} errors"
        return body


def diag(code: str, source: Source | None, span: Span | None, notes: tuple[str, ...] = (), **kw) -> Diagnostic:
    """Build the diagnostic `code` from the catalogue, formatting its templates with kw."""
    template, hint_t = CATALOGUE[code]
    kw.setdefault("hint", "")
    message = template.format(**kw)
    hint = hint_t.format(**kw) if hint_t else ""
    path = source.path if source is not None else kw.get("path", "<input>")
    excerpt = source.excerpt(span) if (source is not None and span is not None) else ""
    if source is None and span is NO_SPAN:
        span = None
    return Diagnostic(code, message, path, span, hint, excerpt, tuple(notes))


def article(word: str) -> str:
    """'a net', 'an energy': a noun with its indefinite article, for messages."""
    return ("an " if word[:1] in "aeiou" else "a ") + word


def did_you_mean(name: str, candidates) -> str:
    """A 'did you mean' hint from close matches, or a list of what exists."""
    import difflib

    cands = sorted(set(candidates))
    close = difflib.get_close_matches(name, cands, n=1, cutoff=0.6)
    if not close:
        low = {c.lower(): c for c in cands}
        if name.lower() in low:
            close = [low[name.lower()]]
    if close:
        return f"did you mean '{close[0]}'?"
    if not cands:
        return ""
    shown = ", ".join(cands[:12]) + (", ..." if len(cands) > 12 else "")
    return f"known: {shown}"
