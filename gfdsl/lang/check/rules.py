"""Capability rules every model shares, run on an otherwise clean spec: something is
learned, every learned policy is trained by some term, and each term's needs are met
(a learned P_B for tbc and ipf, one trajectory per data point for mle, an action space
for fm, reparameterised kernels for reverse_kl, ode_flow kernels for cfm, the source's
density for likelihood terms, a flow net that reads the states for db and subtb)."""

from __future__ import annotations

from gfdsl.lang import ast
from gfdsl.library import REGISTRY


# a term's need -> (what it asks of every forward kernel, the hint where one lacks it)
FORWARD_CAPS = {
    "rsample": ("reparameterised forward kernels", "use tb, which needs no reparameterisation"),
    "velocity": ("ode_flow() forward kernels (a velocity to regress)",
                 "write `forward = ode_flow(net = v)` on every step, or use `mle`/`elbo`"),
}


class Rules:
    def _capabilities(self) -> None:
        ks = self.out.kernels
        steps = [e for e in self.out.edges if e.kind in ("step", "move")]
        fwd = [ks[e.forward] for e in steps if e.forward]
        bwd = [ks[e.backward] for e in steps if e.backward]
        learned_pf = any(k.learned for k in fwd) or (ks.get("prior") is not None and ks["prior"].learned)
        learned_pb = any(k.learned for k in bwd)
        trains: set[str] = set()
        terms = self.out.prior_objective + self.out.objective
        for t in terms:
            entry = REGISTRY.get("objective", t["term"])
            args = entry.args.model_construct(**t["args"])  # validated already (refs are names by now)
            trains |= entry.info["trains"](args)
            for need in entry.info["needs"] or ():
                self._need(t, need, fwd, bwd, learned_pb)
            if "flow" in t["args"]:
                self._flow_net(t)
        if not learned_pf and not learned_pb:
            self.error("E606", self.model.name_span)
            return
        span = terms[0]["span"] if terms else self.model.name_span
        if learned_pb and "pb" not in trains:
            hint = ('train it with `elbo(train = "both")` or add `tbc(k = 2)`' if self.out.dataset is not None else
                    f"{', '.join(t['term'] + '()' for t in terms)} trains P_F only: use a fixed backward policy "
                    "(`uniform()`), or tb/db/subtb")
            self.error("E609", span, policy="the backward policy P_B", hint=hint)
        if learned_pf and "pf" not in trains:
            self.error("E609", span, policy="the forward policy P_F", hint="add `elbo` (or `mle`) to the objective")

    def _need(self, t: dict, need: str, fwd, bwd, learned_pb: bool) -> None:
        name, span = t["term"], t["span"]
        if need == "learned_pb" and not learned_pb:
            fixed = sorted({k.entry + "()" for k in bwd})
            self.error("E602", span, objective=name, why=f"every backward kernel is fixed ({', '.join(fixed)})",
                       hint="use a learned backward kernel such as learned_noising() or gaussian()")
        elif need == "exact":
            stoch = next((k for k in bwd if "deterministic" not in k.caps), None)
            if stoch is not None:
                self.error("E604", span, objective=name, why=f"the backward kernel {stoch.entry}() is stochastic",
                           hint="use `elbo` (importance-weighted likelihood), or deterministic backward "
                                "kernels (inverse(forward), truncate())")
        elif need == "source_density" and self.out.source_data is not None:
            self.error("E615", span, objective=name, need="the source's density",
                       why=f"the source is drawn from the data set {self.out.source_data['entry']}()",
                       hint="a bridge between two data sets trains by `ipf(rounds = ...)`")
        elif need == "actions" and self.out.space is None:
            self.error("E615", span, objective=name, need="an action space (its edge flows are P_F's logits)",
                       why="this model has explicit steps", hint="use tb, db or subtb")
        elif need in FORWARD_CAPS:  # every forward kernel has the capability (none on an action space)
            what, hint = FORWARD_CAPS[need]
            k = next((k for k in fwd if need not in k.caps), None)
            if k is not None or self.out.space is not None:
                self.error("E615", span, objective=name, need=what,
                           why=f"{k.entry}() is not one" if k is not None else "actions are discrete", hint=hint)

    def _flow_net(self, t: dict) -> None:
        """db and subtb read log F(s) of every state through their `flow` net."""
        net = str(t["args"]["flow"])
        call = next((c for c in _calls(self.model) if c.name == t["term"]), None)
        if call is None:
            return
        if self.out.space is not None:
            state = self.out.nodes[self.out.space["state"]]
            self._space_net(net, call, t["term"], "as the state flow log F(s)", state, 1)
            if t["args"].get("forward_looking"):
                span = next((a.value.span for a in call.args if a.name == "forward_looking"), call.span)
                self.error("E615", span, objective=t["term"], need="a chain of explicit steps for forward_looking",
                           why="this model grows its state by actions",
                           hint="drop `forward_looking` (its flows interpolate log R along t = k / T)")
            return
        info = self.out.nets.get(net)
        nodes = self.out.nodes
        srcs = sorted({e.src for e in self.out.edges if e.kind == "step"})
        sizes = {nodes[n].type.numel for n in srcs}
        span = next((a.value.span for a in call.args if a.name == "flow"), call.span)
        if info is None or not srcs:
            return
        if len(sizes) != 1:
            self.error("E615", span, objective=t["term"], need="states of one size for its flow net",
                       why=f"the states have {', '.join(map(str, sorted(sizes)))} values", hint="use tb")
            return
        f, n = info["facts"], sizes.pop()
        if f.in_size != n or f.out_size != 1:
            which, got, need = ("takes", f.in_size, n) if f.in_size != n else ("outputs", f.out_size, 1)
            self.error("E402", span, net=net, which=which, got=got, kernel=t["term"],
                       why="as the state flow log F(s)", need=need,
                       hint=f.take_hint(net, n) if which == "takes" else f"make net '{net}' output 1 value")
        elif f.time_embed == 0 and len(srcs) > 1:
            self.error("E605", span, kernel=t["term"], net=net)


def _calls(model: ast.Model):
    for it in model.items:
        if isinstance(it, ast.ObjectiveDecl):
            stack = [it.expr] + ([it.then] if it.then is not None else [])
            while stack:
                e = stack.pop()
                if isinstance(e, ast.Call):
                    yield e
                elif isinstance(e, ast.BinOp):
                    stack += [e.left, e.right]
                elif isinstance(e, ast.Neg):
                    stack.append(e.operand)
