"""The gradient steps of a run (gfdsl.engine.loop.train builds what they need).

Each step: the learning rate of the step (warm-up, cosine decay restarting per IPF
round, a posterior's stage), the loss on a batch drawn with a device-side generator,
backward, clipping, the optimizer, and health bookkeeping on the device -- whether the
loss, the gradient norm, each term and each log-probability slot was finite -- so that
no step reads a value back to the host. At log and checkpoint points the first bad
step, if any, is read and becomes E804 naming the step, the term and the kernel's
source position; a checkpoint is never written after a non-finite step.
"""

from __future__ import annotations

import json
import math
import time

import torch

from gfdsl.engine import distributed
from gfdsl.engine.checkpoint import save_checkpoint, spec_hash
from gfdsl.engine.evaluate import eval_point, ipf_round_metrics
from gfdsl.engine.rollout import NonFiniteLogits
from gfdsl.engine.rundir import metrics_records
from gfdsl.errors import GfdslError, diag


class Loop:
    def __init__(self, run, su, opts, ranks, device, trackers=None):
        self.run_, self.su, self.opts, self.ranks, self.device = run, su, opts, ranks, device
        self.trackers = trackers  # TensorBoard / MLflow: every record metrics.jsonl gets
        self.model, self.opt, self.params = run.model, run.opt, run.params
        s = su.c.graph.graph["train"]
        self.s = s
        self.warm, self.decay = s["warmup"], s["lr_decay"] == "cosine"
        self.period = self.model.objective.round_length  # cosine decay restarts each IPF round
        self.ipf = any(t["term"] == "ipf" for t in su.c.graph.graph["objective"])
        self.log_every = opts.log_every or max(1, min(500, su.steps // 50))
        self.labels = health_labels(self.model, su.c)
        self.shard = su.batch // ranks.world
        self.loss_fn = self._loss_fn()
        self.rounds = _rounds_so_far(su.out / "metrics.jsonl", run.start) if su.resume else []
        n_h = len(self.labels)
        self.acc, self.acc_terms = torch.zeros((), device=device), {}
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite value
        self.bad_health = torch.ones(n_h, dtype=torch.bool, device=device)
        self.bad_terms: dict[str, torch.Tensor] = {}
        self.bad_grad = torch.zeros((), dtype=torch.bool, device=device)
        self.good_step = self.last = run.start
        self.seconds = 0.0

    def _loss_fn(self):
        model = self.model
        if self.ranks.enabled:  # each rank its own noise stream (rank 0 keeps the single-process one)
            if self.ranks.rank:
                torch.manual_seed(self.su.seed + 7919 * self.ranks.rank + self.run_.start)
            fn = torch.nn.parallel.DistributedDataParallel(
                model, find_unused_parameters=_some_params_unused(model, self.run_.train_x[:self.shard]))
        else:
            fn = model.loss
        return torch.compile(fn) if self.su.compile else fn

    # -- the learning rate --------------------------------------------------------------------------

    def lr_factor(self, step: int) -> float:
        """Multiplier of each group's base rate at 1-based `step`: a pure function of the
        step, so a resumed run follows the same schedule."""
        f = min(1.0, step / self.warm) if self.warm else 1.0
        if self.decay:
            f *= 0.5 * (1 + math.cos(math.pi * ((step - 1) % self.period) / self.period))
        return f

    def set_lr(self, step: int) -> None:
        prior = self.su.prior_steps
        if prior and step == prior + 1:  # the posterior's stage begins: freeze the prior, fresh moments
            self.model.freeze_prior()
            self.opt.state.clear()
        if not (self.warm or self.decay or prior):
            return
        f = self.lr_factor(step)
        for i, g in enumerate(self.opt.param_groups):
            base = self.su.lr if i == 0 and prior and step > prior else g["base_lr"]
            g["lr"] = base * f

    # -- one step ---------------------------------------------------------------------------------

    def step(self, step: int) -> None:
        run, model = self.run_, self.model
        self.set_lr(step)
        idx = torch.randint(0, run.train_x.shape[0], (self.su.batch,), device=self.device, generator=run.gen)
        if self.ranks.enabled:  # every rank draws the global batch and takes its shard
            idx = idx[self.ranks.rank * self.shard:(self.ranks.rank + 1) * self.shard]
        conds = model.conditions
        # labels follow the batch's rows; drawn values use the process's own stream (as
        # its rollouts do: each DDP rank its own), checkpointed with the run
        values = conds.draw(idx.shape[0], self.device, None, None if run.train_y is None else run.train_y[idx]) \
            if conds else None
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.su.amp), model.given(values):
                loss, terms = self.loss_fn(run.train_x[idx], step - 1)
        except NonFiniteLogits as e:
            self.fail_if_bad()  # an earlier non-finite loss or gradient is the first cause: name it
            raise stopped(self.su.out, step, f"{e} (no action was drawn from them)", self.good_step) from None
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        gnorm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        if self.s["grad_clip"]:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.s["grad_clip"], gnorm)
        self.opt.step()
        if run.ema is not None:
            run.ema.update()
        # health bookkeeping stays on the device: no sync inside a step
        ok = torch.isfinite(loss) & torch.isfinite(gnorm)
        now_bad = (self.first_bad < 0) & ~ok
        self.first_bad = torch.where(now_bad, step, self.first_bad)
        self.bad_health = torch.where(now_bad, model.objective.health, self.bad_health)
        self.bad_grad = torch.where(now_bad, ~torch.isfinite(gnorm) & torch.isfinite(loss), self.bad_grad)
        for k, v in terms.items():
            self.bad_terms[k] = torch.where(now_bad, ~torch.isfinite(v), self.bad_terms.get(k, torch.zeros_like(ok)))
            self.acc_terms[k] = self.acc_terms.get(k, 0) + v
        self.acc = self.acc + loss.detach()

    # -- log, evaluation and checkpoint points ----------------------------------------------------

    def after(self, step: int, mf, bar) -> None:
        su, s = self.su, self.s
        if step % self.log_every == 0 or step == su.steps:
            self.fail_if_bad()
            n = step - self.last_step
            value = float(distributed.all_mean(self.ranks, self.acc)) / n
            now = time.perf_counter()
            rec = {"step": step, "loss": value, "steps_per_second": n / (now - self.last_t), "elapsed": now - self.t0,
                   **{f"loss_{k}": float(v) / n for k, v in self.acc_terms.items()}}
            self._write(mf, rec)
            bar.update(step, value, rec["steps_per_second"])
            self.acc, self.acc_terms = torch.zeros((), device=self.device), {}
            self.last_t, self.last_step = now, step
        if mf is not None and s["eval_every"] and step % s["eval_every"] == 0 and self.model.reward is not None:
            with self.run_.averaged():
                self._write(mf, {"step": step, "eval": eval_point(self.model, su.seed)})
        if mf is not None and self.ipf and step % self.period == 0 and self.run_.test_x is not None:
            with self.run_.averaged():
                rec = {"step": step, "round": step // self.period,
                       **ipf_round_metrics(self.model, self.run_.test_x, su.seed)}
            self.rounds.append({k: rec[k] for k in ("round", "step", "sliced_w2")})
            self._write(mf, rec)
        val = self.run_.val
        if val is not None and val.due(step, su.steps):
            self.fail_if_bad()  # a NaN model is not scored, nor kept as the best
            with self.run_.averaged():  # every rank scores the same weights on the same points: one decision
                rec = val.update(step, val.score(self.model, su.seed), self.model, su.out, su.c.source.text,
                                 write=self.ranks.main)
            self._write(mf, rec)
        stop = val is not None and val.stopped_at == step
        if step % s["checkpoint_every"] == 0 or step == su.steps or stop:
            self.fail_if_bad()  # never write a checkpoint after a non-finite step
            if self.ranks.main:
                save_checkpoint(su.out, self.model, self.opt, step, spec_hash(su.c.source.text), self.rng_state(),
                                extra=val.meta() if val is not None else None,
                                more=self.run_.ema.tensors() if self.run_.ema is not None else None)
                if self.opts.on_checkpoint is not None:
                    self.opts.on_checkpoint(step, self.model)
            self.good_step = step

    def _write(self, mf, rec: dict) -> None:
        if mf is not None:
            mf.write(json.dumps(rec) + "\n")
            mf.flush()
            if self.trackers is not None:
                self.trackers.record(rec)

    def rng_state(self) -> dict[str, torch.Tensor]:
        st = {"torch": torch.get_rng_state(), "data": self.run_.gen.get_state().cpu()}
        if self.device.type == "cuda":
            st["cuda"] = torch.cuda.get_rng_state()
        return st

    def fail_if_bad(self) -> None:
        b = int(distributed.first_bad(self.ranks, self.first_bad))  # a host sync, only at log and checkpoint points
        if b >= 0:
            raise bad_step_error(self.su.out, b, self.bad_health.tolist(),
                                 {k: bool(v) for k, v in self.bad_terms.items()}, bool(self.bad_grad), self.labels,
                                 self.good_step)

    def run(self) -> None:
        su = self.su
        mf = open(su.out / "metrics.jsonl", "a", encoding="utf-8") if self.ranks.main else None
        self.t0 = self.last_t = time.perf_counter()
        self.last_step = self.run_.start
        try:
            with Progress(self.opts.progress and self.ranks.main, su.steps, su.c.graph.graph["name"]) as bar:
                bar.update(self.run_.start, float("nan"), 0.0)
                for step in range(self.run_.start + 1, su.steps + 1):
                    self.step(step)
                    self.after(step, mf, bar)
                    self.last = step
                    if self.run_.val is not None and self.run_.val.stopped_at == step:
                        break  # early stopping: `patience` validation points without a lower NLL
        finally:
            if mf is not None:
                mf.close()
        self.seconds = time.perf_counter() - self.t0


def _rounds_so_far(path, start: int) -> list[dict]:
    """The IPF rounds a resumed run logged before its checkpoint."""
    return [{k: rec[k] for k in ("round", "step", "sliced_w2")} for rec in metrics_records(path)
            if "round" in rec and rec["step"] <= start]


def _some_params_unused(model, x: torch.Tensor) -> bool:
    """Does one loss leave some parameter without a gradient (a detached policy, an IPF
    phase)? DDP must then look for unused parameters each step; otherwise it need not.
    The probe leaves the RNG and the gradients as they were. A conditional model is not
    probed (its loss needs a batch's conditions): DDP looks for unused parameters."""
    if model.conditions:
        return True
    state = torch.get_rng_state()
    try:
        loss, _ = model.loss(x, 0)
        loss.backward()
        unused = any(p.grad is None for p in model.parameters() if p.requires_grad)
        if any(t["term"] in ("ipf", "rtb") for t in model.spec["objective"]):
            unused = True  # the other policy rests in alternate rounds; a posterior's log Z in its prior stage
    finally:
        model.zero_grad(set_to_none=True)
        torch.set_rng_state(state)
    return unused


def health_labels(model, c) -> list[str]:
    """What each slot of Objective.health stands for: the source's prior, P_F and P_B of
    each step (one each for an action space), the target; as `kernel entry() at
    path:line:col (step a -> b)`."""
    G = c.graph.graph
    where = lambda span: f"{c.source.path}:{span[0]}:{span[1]}"  # noqa: E731
    r = G["reward"]
    target = [f"{r['form']} {r['entry']}() at {where(r['span'])}"] if r else ["the target"]
    if G["space"] is not None:
        move = c.graph.edges[G["space"]["state"], G["space"]["state"]]
        return [f"{pol} policy {G['kernels'][kid]['entry']}() at {where(G['kernels'][kid]['span'])}"
                for pol, kid in (("P_F", move["forward"]), ("P_B", move["backward"]))] + target
    names = model.space.plan.names
    out = [f"the prior of {G['source']}"]
    for direction in ("fwd", "bwd"):
        for s in model.space.plan.steps:
            fwd = s.fwd.replace(":", ".")  # ModuleDict key -> IR kernel id
            kid = fwd if direction == "fwd" else (s.bwd.replace(":", ".") if s.bwd else "inv:" + fwd)
            k = G["kernels"][kid]
            pol = "P_F" if direction == "fwd" else "P_B"
            out.append(f"{pol} kernel {k['entry']}() at {where(k['span'])} (step {names[s.src]} -> {names[s.dst]})")
    return out + target


def bad_step_error(out, step: int, health: list[bool], terms: dict[str, bool], grad: bool,
                   labels: list[str], good_step: int) -> GfdslError:
    bad = [lab for lab, ok in zip(labels, health) if not ok]
    which = [k for k, v in terms.items() if v]
    if grad and not which:
        why = "the gradient is not finite"
    else:
        why = "the loss is not finite" + (f" in objective term {', '.join(which)}" if which else "")
    if bad and bad[0] == labels[-1]:
        why += f"; the first non-finite value: log R of the sampled states, from the {bad[0]}"
    elif bad:
        why += f"; first non-finite log-probability: {bad[0]}"
    return stopped(out, step, why, good_step)


def stopped(out, step: int, why: str, good_step: int) -> GfdslError:
    """E804: the run stopped at `step` for `why`, saying which checkpoint is kept."""
    kept = f"the last good checkpoint (step {good_step}) is kept in {out}" if good_step else \
        "no checkpoint had been written yet"
    return GfdslError([diag("E804", None, None, path=str(out), step=step, why=why,
                            hint=f"lower the learning rate or set grad_clip in the train block; {kept}")])


class Progress:
    """A rich progress bar with loss and speed, or nothing when not wanted."""

    def __init__(self, enabled: bool, total: int, name: str):
        self.enabled, self.total, self.name = enabled, total, name

    def __enter__(self):
        if not self.enabled:
            return self
        from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        self.p = Bar(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                     TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} it/s"),
                     TimeRemainingColumn(), transient=False)
        self.p.__enter__()
        self.task = self.p.add_task(self.name, total=self.total, loss="-", speed="-")
        return self

    def update(self, step: int, loss: float, speed: float) -> None:
        if self.enabled:
            self.p.update(self.task, completed=step, loss=f"{loss:.4f}", speed=f"{speed:.0f}")

    def __exit__(self, *exc):
        if self.enabled:
            self.p.__exit__(*exc)
        return False
