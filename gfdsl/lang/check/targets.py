"""Targets: the data set a model learns from, and the reward or energy it is balanced
against. Both are checked against the state they read -- the data set against the data
state, the reward against the terminal state -- before anything is loaded."""

from __future__ import annotations

from gfdsl.lang import ast
from gfdsl.lang.evaluate import Bad
from gfdsl.library import REGISTRY


class Targets:
    def _dataset(self, d: ast.DatasetDecl) -> None:
        try:
            entry, args = self._call_args(d.call, "dataset", self.scope, refs=False)
        except Bad:
            return
        self.out.dataset = dict(entry=entry.name, args=args.model_dump(by_alias=True), span=d.span)
        if self.out.data_node is not None:
            self._dataset_yields(entry, args, d.call, self.out.data_node)

    def _dataset_yields(self, entry, args, call: ast.Call, nid: str) -> None:
        """E404 unless one example of the data set fits state nid."""
        yields = entry.info["yields"](args)
        self._peek_file(entry, args, call, nid)
        if yields is None:
            return
        t = self.out.nodes[nid].type
        if any(t.dtype == dt and t.classes == k and t.numel == n for dt, k, n in yields):
            return
        got = " or ".join(f"{n} {dt if dt != 'cat' else f'cat({k})'} values" for dt, k, n in yields)
        need = f"{t} ({t.numel} {t.dtype if t.dtype != 'cat' else f'cat({t.classes})'} values)"
        hint = f"declare the data state as {yields[0][0] if yields[0][0] != 'cat' else f'cat({yields[0][1]})'}" \
               f"[{yields[0][2]}]"
        role = "data state" if nid == self.out.data_node else "source"
        self.error("E404", call.span, dataset=entry.name, got=got, state=f"{role} {nid}" if role == "source" else nid,
                   need=need, hint=hint)

    def _peek_file(self, entry, args, call: ast.Call, nid: str) -> None:
        """A data set read from a file: it exists and its header fits the state (E801, E404),
        where the spec is checked -- not first at `run`."""
        peek = entry.info.get("peek")
        if peek is None or self.inputs is None:  # spec text with no folder: its files are not at hand
            return
        try:
            path, numel = peek(args, self.inputs)
        except ValueError as e:
            rel, why = e.args
            arg = next((a for a in call.args if a.name in ("path", "labels", "folder")
                        and rel in self._text(a.value.span)), None)
            self.error("E801", arg.value.span if arg else call.span, path=rel, why=why)
            return
        t = self.out.nodes[nid].type
        if numel is not None and numel != t.numel:
            arg = next((a for a in call.args if a.name == "path"), None)
            role = "data state" if nid == self.out.data_node else "source"
            self.error("E404", arg.value.span if arg else call.span, dataset=entry.name,
                       got=f"{numel} values per example ({path})", state=f"{role} {nid}" if role == "source" else nid,
                       need=f"{t} ({t.numel} values)",
                       hint=f"declare the {role} with {numel} values, or check the file")

    def _reward(self, d: ast.RewardDecl) -> None:
        kind = "energy" if d.form == "energy" else "reward"
        if d.call is None:
            return  # another shape than a (tempered) call: the condition rules say so
        try:
            entry, args = self._call_args(d.call, kind, self.scope, refs=False)
        except Bad:
            return
        nid = self.out.data_node
        t = self.out.nodes[nid].type if nid is not None else None
        if t is not None and t.dtype not in entry.info["types"]:
            readers = [e.name for k in ("reward", "energy") for e in REGISTRY.all(k) if t.dtype in e.info["types"]]
            self.error("E410", d.call.name_span, what=f"{kind} {entry.name}()", need=entry.info["need"],
                       state=nid, type=str(t),
                       hint=f"for {t.dtype} states use {', '.join(r + '()' for r in readers)}" if readers else "")
            return
        rule = entry.info.get("rule")
        p = rule(args, t) if rule is not None and t is not None else None
        if p is not None:
            span = next((a.value.span for a in d.call.args if a.name == p.arg), d.call.span)
            self.error(p.code, span, **{**p.fields, "state": nid})
            return
        self.out.reward = dict(entry=entry.name, args=args.model_dump(), form=d.form, span=d.span, temper=None)
