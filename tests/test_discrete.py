"""Discrete spaces compiled from action declarations, checked on every state of small
spaces against independent pure-Python definitions; objectives against hand-computed
values; exact evaluation against brute-force enumeration of trajectories."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch

from gfdsl.driver import check_source
from gfdsl.compile.lower import lower
from gfdsl.engine import objectives as O
from gfdsl.engine.trajectory import Trajectory
from gfdsl.runtime.spaces import Space, terminating_distribution


def _acts(*moves, when="anytime"):
    out = [{"entry": e, "args": a} for e, a in moves]
    return out + [{"entry": "exit", "args": {"when": when}}]


SPACES = {
    "grid": lambda: Space("int", [0, 3], 3, _acts(*[("increment", {"coord": i}) for i in range(3)]), "anytime"),
    "grid_offset": lambda: Space("int", [2, 4], 2, _acts(("increment", {"coord": 1}), ("increment", {"coord": 0})),
                                 "anytime"),
    "grid_complete": lambda: Space("int", [0, 2], 2, _acts(*[("increment", {"coord": i}) for i in range(2)],
                                                        when="complete"), "complete"),
    "set": lambda: Space("set", [], 4, _acts(*[("add", {"item": i}) for i in range(4)]), "anytime"),
    "seq": lambda: Space("seq", [3], 4, _acts(*[(e, {"token": v}) for e in ("append", "prepend") for v in range(3)],
                                               when="complete"), "complete"),
}


# -- independent definitions: states as Python tuples ---------------------------------------


def py_moves(sp: Space):
    """[(forward fn, backward fn)] per move, written directly from the action's meaning."""
    out = []
    for m in range(sp.M):
        if sp.dtype == "seq":
            v, app = int(sp.tok[m]), bool(sp.is_append[m])

            def fwd(s, v=v, app=app, L=sp.n):
                return (s + (v,) if app else (v,) + s) if len(s) < L else None

            def bwd(s, v=v, app=app):
                return (s[:-1] if app else s[1:]) if s and (s[-1] if app else s[0]) == v else None
        else:
            c, lo, hi = int(sp.coord[m]), sp.lo, sp.hi

            def fwd(s, c=c, hi=hi):
                return s[:c] + (s[c] + 1,) + s[c + 1:] if s[c] < hi else None

            def bwd(s, c=c, lo=lo):
                return s[:c] + (s[c] - 1,) + s[c + 1:] if s[c] > lo else None
        out.append((fwd, bwd))
    return out


def to_py(sp: Space, row) -> tuple:
    r = [int(v) for v in row]
    return tuple(v for v in r if v >= 0) if sp.dtype == "seq" else tuple(r)


@pytest.mark.parametrize("name", SPACES)
def test_enumeration_and_index_agree(name):
    sp = SPACES[name]()
    S = sp.enumerate()
    assert S.shape[0] == sp.n_states
    assert torch.equal(sp.index(S), torch.arange(sp.n_states))
    assert len({to_py(sp, r) for r in S}) == sp.n_states  # all distinct


@pytest.mark.parametrize("name", SPACES)
def test_derived_backward_inverts_forward_on_every_state(name):
    sp = SPACES[name]()
    S = sp.enumerate()
    N = S.shape[0]
    fm, bm = sp.move_mask(S), sp.backward_mask(S)
    py = py_moves(sp)
    n_fwd = n_bwd = 0
    for m in range(sp.M):
        a = torch.full((N,), m)
        child, parent = sp.step(S, a), sp.back(S, a)
        for i in range(N):
            s = to_py(sp, S[i])
            want_c, want_p = py[m][0](s), py[m][1](s)
            # masks are exactly where the move (or its inverse) is defined
            assert bool(fm[i, m]) == (want_c is not None), (s, m)
            assert bool(bm[i, m]) == (want_p is not None), (s, m)
            if want_c is not None:
                n_fwd += 1
                assert to_py(sp, child[i]) == want_c
                # the derived backward step undoes it, and the backward mask allows it there
                assert torch.equal(sp.back(child[i:i + 1], a[:1])[0], S[i])
                assert bool(sp.backward_mask(child[i:i + 1])[0, m])
            if want_p is not None:
                n_bwd += 1
                assert to_py(sp, parent[i]) == want_p
                assert torch.equal(sp.step(parent[i:i + 1], a[:1])[0], S[i])
                assert bool(sp.move_mask(parent[i:i + 1])[0, m])
    assert n_fwd == n_bwd > 0  # every edge of the DAG is seen from both ends


@pytest.mark.parametrize("name", SPACES)
def test_every_move_raises_the_level(name):
    sp = SPACES[name]()
    S = sp.enumerate()
    ok = sp.move_mask(S)
    for m in range(sp.M):
        c = sp.step(S, torch.full((S.shape[0],), m))
        assert torch.equal(sp.levels(c)[ok[:, m]], sp.levels(S)[ok[:, m]] + 1)


def _brute_force_uniform(sp: Space) -> dict:
    """P_T of the uniform forward policy by enumerating every trajectory (Python)."""
    py = py_moves(sp)
    start = to_py(sp, sp.s0(1, "cpu")[0])
    out: dict = {}

    def walk(s, p):
        kids = [f(s) for f, _ in py]
        kids = [k for k in kids if k is not None]
        can_exit = sp.exit_when == "anytime" or not kids
        n = len(kids) + can_exit
        if can_exit:
            out[s] = out.get(s, 0.0) + p / n
        for k in kids:
            walk(k, p / n)

    walk(start, 1.0)
    return out


@pytest.mark.parametrize("name", SPACES)
def test_exact_terminating_distribution_of_uniform_policy(name):
    sp = SPACES[name]()

    def uniform(S):
        m = sp.forward_mask(S)
        return torch.where(m, -m.sum(1, keepdim=True).double().log(), -math.inf)

    p_t, can_exit = terminating_distribution(sp, uniform)
    want = _brute_force_uniform(sp)
    S = sp.enumerate()
    got = {to_py(sp, S[i]): float(p_t[i]) for i in range(S.shape[0]) if p_t[i] > 0}
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9)
    assert float(p_t.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((p_t[~can_exit] == 0).all())


# -- the compiled model ----------------------------------------------------------------------

GRID = """
model g {
  dims { D = 2  H = 3 }
  state s : int(0, H - 1)[D]
  action inc[i in 0..D - 1] = increment(coord = i)
  action stop = exit()
  reward = hypergrid(r0 = 0.1, r1 = 0.5, r2 = 2.0)
  net pf = mlp(in = D * H, out = D + 1, hidden = [8])
  net pb = mlp(in = D * H, out = D, hidden = [8])
  net fl = mlp(in = D * H, out = 1, hidden = [8])
  policy forward = softmax(net = pf)
  policy backward = %s
  objective = %s
  train { %s }
}
"""


def grid_model(objective="tb", backward="softmax(net = pb)", train="", seed=0):
    torch.manual_seed(seed)
    c = check_source(GRID % (backward, objective, train))
    return lower(c.graph, c.source)


def term(m, name: str, t, lr, args: dict):
    """The objective term `name` on trajectory t (log-probabilities set), as the engine computes it."""
    if name == "fm":
        return m.space.flow_matching(t, lr, args.get("dedup"))[0]
    t.log_pf, t.log_pb = m.log_probs(t) if t.log_pf is None or t.log_pb is None else (t.log_pf, t.log_pb)
    if name == "tb":
        return O.trajectory_balance(t, m.log_Z, lr)
    if name == "vargrad":
        return O.vargrad(t, lr)
    f, node = m.space.log_flows(t, lr, m.nets["fl"])
    return O.detailed_balance(t, f) if name == "db" else O.subtrajectory_balance(t, f, node, args["lamda"])


def hand_traj(m):
    """s0=(0,0) -inc[0]-> (1,0) -inc[1]-> (1,1) -exit-> x=(1,1), padded by one step."""

    st = torch.tensor([[0, 0], [1, 0], [1, 1], [1, 1], [1, 1]])[:, None, :]
    return Trajectory(st, actions=torch.tensor([0, 1, m.space.space.M, -1])[:, None])


def test_log_probs_of_a_hand_trajectory():
    m = grid_model()
    t = hand_traj(m)
    lpf, lpb = (v.detach() for v in m.log_probs(t))
    S = t.states[:, 0]
    want_f = [m.space.log_pf_all(S[0:1])[0, 0], m.space.log_pf_all(S[1:2])[0, 1], m.space.log_pf_all(S[2:3])[0, 2], 0.0]
    want_b = [m.space.log_pb_all(S[1:2])[0, 0], m.space.log_pb_all(S[2:3])[0, 1], 0.0, 0.0]
    assert torch.allclose(lpf[:, 0], torch.tensor([float(v.detach()) if torch.is_tensor(v) else v for v in want_f]))
    assert torch.allclose(lpb[:, 0], torch.tensor([float(v.detach()) if torch.is_tensor(v) else v for v in want_b]))
    # (1, 0) has one parent: P_B there is 1 whatever the net says
    assert float(lpb[0, 0]) == 0.0


def test_uniform_backward_policy_counts_parents():
    m = grid_model(backward="uniform()")
    lp = m.space.log_pb_all(torch.tensor([[1, 1], [0, 2], [0, 0]]))
    assert torch.allclose(lp[0], torch.full((2,), -math.log(2)))
    assert lp[1, 1] == 0 and lp[1, 0] == -math.inf
    assert torch.isinf(lp[2]).all()  # the start state has no parent


@pytest.mark.parametrize("objective", ["tb", "db(flow = fl)", "subtb(flow = fl, lamda = 0.5)", "vargrad", "fm"])
def test_objectives_match_hand_computation(objective):
    m = grid_model(objective, backward="uniform()" if objective == "fm" else "softmax(net = pb)")
    with torch.no_grad():
        m.log_Z.fill_(0.7) if m.log_Z is not None else None
    t = hand_traj(m)
    lpf, lpb = m.log_probs(t)
    lr = m.reward(t.states[-1])
    name = objective.split("(")[0]
    args = {"lamda": 0.5} if name == "subtb" else {}
    t.log_pf, t.log_pb = lpf, lpb
    got = float(term(m, name, t, lr, args).detach())
    f, b, r = lpf[:, 0].tolist(), lpb[:, 0].tolist(), float(lr[0])
    if name == "tb":
        want = (0.7 + sum(f) - r - sum(b)) ** 2
    elif name == "vargrad":
        want = 0.0  # one trajectory: no variance
    elif name in ("db", "subtb"):
        S = t.states[:, 0]
        F = [float(m.space.log_flow(S[k:k + 1], m.nets["fl"])[0].detach()) for k in range(3)] + [r]  # nodes s0, s1, s2, x
        if name == "db":
            want = ((F[0] + f[0] - F[1] - b[0]) ** 2 + (F[1] + f[1] - F[2] - b[1]) ** 2 + (F[2] + f[2] - F[3]) ** 2) / 3
        else:
            C = [0.0, f[0] - b[0], f[0] - b[0] + f[1] - b[1], f[0] - b[0] + f[1] - b[1] + f[2]]
            num = den = 0.0
            for i, j in itertools.combinations(range(4), 2):
                w = 0.5 ** (j - i)
                num += w * (F[i] + C[j] - C[i] - F[j]) ** 2
                den += w
            want = num / den
    else:  # fm: flows into (1,0) and (1,1) against flows out, and the exit flow of x
        S = t.states[:, 0]
        E = m.nets["pf"](m.space.space.encode(torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]]))).tolist()
        s00, s10, s01, s11 = E

        def lse(*v):
            return math.log(sum(math.exp(u) for u in v))

        bal10 = lse(s00[0]) - lse(s10[0], s10[1], s10[2])
        bal11 = lse(s10[1], s01[0]) - lse(s11[0], s11[1], s11[2])
        want = (bal10 ** 2 + bal11 ** 2) / 2 + (s11[2] - r) ** 2
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_backward_rollout_gives_valid_forward_trajectories():
    m = grid_model()
    torch.manual_seed(1)
    x = m.space.space.enumerate()
    t = m.space.backward_rollout(x)
    T = t.actions.shape[0]
    for b in range(x.shape[0]):
        s = t.states[0, b]
        assert torch.equal(s, m.space.space.s0(1, "cpu")[0])
        for k in range(T):
            a = int(t.actions[k, b])
            if a < 0:
                assert torch.equal(t.states[k + 1, b], x[b])
                continue
            if a == m.space.space.M:
                assert torch.equal(t.states[k, b], x[b])
                continue
            assert bool(m.space.space.forward_mask(t.states[k, b][None])[0, a])
            assert torch.equal(m.space.space.step(t.states[k, b][None], torch.tensor([a]))[0], t.states[k + 1, b])
        assert int((t.actions[:, b] == m.space.space.M).sum()) == 1
    assert torch.equal(t.states[-1], x)


@pytest.mark.parametrize("how", ["table", "compact", "steps"])
@pytest.mark.parametrize("explore", ["", "epsilon = 0.5", "temperature = 2.0", "epsilon = 0.3 temperature = 0.5"])
def test_every_rollout_samples_the_policy_and_scores_it(how, explore):
    """The table, compact and step-by-step rollouts all sample P_T of the current P_F
    (or of its exploratory mixture), produce consistent states, and the log P_F (and,
    for the compact rollout's kept pass, log P_B) they keep equals rescoring the
    trajectories afterwards."""

    m = grid_model(train=explore)
    torch.manual_seed(0)
    n = 4000
    on = bool(explore)
    roll = {"table": lambda: m.space._rollout_table(n, on, True), "compact": lambda: m.space._rollout_compact(n, on, True),
            "steps": lambda: m.space._rollout_steps(n, on, True)}[how]
    t = roll()
    x = t.states[-1]
    p = torch.bincount(m.space.space.index(x), minlength=9).float() / n
    if on:  # the mixture stops at a different distribution than P_F
        eps, tau = m.space.epsilon, m.space.temperature
        m.space.epsilon, m.space.temperature = 0.0, 1.0
        p_f, _ = terminating_distribution(m.space.space, m.space.log_pf_all)
        m.space.epsilon, m.space.temperature = eps, tau
        q = lambda S: m.space._explore(m.space.log_pf_all(S), m.space.space.forward_mask(S))  # noqa: E731
        p_t, _ = terminating_distribution(m.space.space, q)
        assert (p_t - p_f).abs().sum() > 0.05
    else:
        p_t, _ = terminating_distribution(m.space.space, m.space.log_pf_all)
    assert (p - p_t.float()).abs().max() < 0.03
    assert ((t.actions == m.space.space.M).sum(0) == 1).all()
    a = t.actions
    for k in range(a.shape[0]):  # states follow from the actions
        mv = (a[k] >= 0) & (a[k] < m.space.space.M)
        want = t.states[k].clone()
        want[mv] = m.space.space.step(want[mv], a[k][mv])
        assert torch.equal(t.states[k + 1], want)
    again_f, again_b = m.log_probs(Trajectory(t.states, actions=t.actions))  # P_F's own log-probabilities
    if how == "compact":  # the kept forward pass, replayed
        assert t.log_pf is None and t.kept is not None
        kept_f, kept_b = m.log_probs(t)
        assert kept_f.requires_grad and kept_b.requires_grad
        assert torch.allclose(kept_f, again_f, atol=1e-5)
        assert torch.allclose(kept_b, again_b, atol=1e-5)
        return
    assert t.log_pf.requires_grad
    assert torch.allclose(t.log_pf, again_f, atol=1e-6)


GRID3 = """
model g {
  dims { D = 3  H = 5 }
  state s : int(0, H - 1)[D]
  action inc[i in 0..D - 1] = increment(coord = i)
  action stop = exit(%s)
  reward = hypergrid(r0 = 0.1, r1 = 0.5, r2 = 2.0)
  net pf = mlp(in = D * H, out = D + 1, hidden = [16, 16], act = "%s")
  net pb = mlp(in = D * H, out = D, hidden = [16, 16], act = "%s")
  policy forward = softmax(net = pf)
  policy backward = softmax(net = pb)
  objective = tb
}
"""


@pytest.mark.parametrize("act,when", [("relu", ""), ("silu", ""), ("relu", 'when = "complete"')])
@pytest.mark.parametrize("dedup", [0, 12, 10 ** 9])
def test_kept_rollout_pass_scores_and_differentiates_like_rescoring(act, when, dedup):
    """The compact rollout keeps P_F's forward pass, evaluating a step's repeated states
    once (always, while common, never), and log_probs replays it and evaluates P_B on
    its rows: the TB loss and every gradient equal those of rescoring the same
    trajectories from scratch."""

    torch.manual_seed(0)
    c = check_source(GRID3 % (when, act, act))
    m = lower(c.graph, c.source)
    m.log_Z.data.fill_(1.5)
    m.space.DEDUP = dedup
    torch.manual_seed(1)
    B = 64
    t = m.space._rollout_compact(B, False, True)
    valid = t.actions.reshape(-1) >= 0
    visited = t.states[:-1].reshape(-1, 3)[valid]
    R, U = t.kept.states.shape[0], torch.unique(m.space.space.index(visited)).shape[0]
    if dedup == 0:  # one row per distinct state (a step's rows share a level)
        assert R == U
    elif dedup == 10 ** 9:  # one row for step 0, then one per transition
        assert R == int(valid.sum()) - (B - 1)
    else:
        assert U <= R < int(valid.sum()) - (B - 1)
    got = []
    for traj in (t, Trajectory(t.states, actions=t.actions)):
        m.zero_grad()
        lpf, lpb = m.log_probs(traj)
        traj.log_pf, traj.log_pb = lpf, lpb
        loss = O.trajectory_balance(traj, m.log_Z, m.reward(traj.states[-1]))
        loss.backward()
        got.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    (l1, g1), (l2, g2) = got
    assert torch.allclose(l1, l2, rtol=1e-5)
    assert g1.keys() == g2.keys() and all(v is not None for v in g1.values())
    for name in g1:
        assert torch.allclose(g1[name], g2[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("name", SPACES)
def test_masking_and_encoding_agree_with_their_definitions(name):
    """mask_logits_ writes -inf exactly where forward_mask forbids an action; encode is
    one-hot per coordinate (int), the bits (set), one-hot with an 'empty' class (seq)."""
    sp = SPACES[name]()
    S = sp.enumerate()
    out = sp.mask_logits_(torch.zeros(S.shape[0], sp.A), S)
    assert torch.equal(out.isfinite(), sp.forward_mask(S))
    assert bool(sp.forward_mask(S)[sp.levels(S) < sp.free_levels].all())  # no mask needed there
    assert sp.free_levels == 0 or not bool(sp.forward_mask(S)[sp.levels(S) == sp.free_levels].all())
    if sp.dtype == "set":
        want = S.float()
    else:
        k = S + 1 if sp.dtype == "seq" else S - sp.lo
        want = torch.nn.functional.one_hot(k, sp.width).flatten(1).float()
    assert torch.equal(sp.encode(S), want)
    if sp.dtype == "int":  # the mask as a sum of the hot columns' penalty rows
        pen = torch.nn.functional.embedding_bag(S + sp.hot, sp.hot_penalty, mode="sum")
        assert torch.equal(pen.isfinite(), sp.forward_mask(S)) and bool((pen[pen.isfinite()] == 0).all())


def test_gumbel_max_samples_the_softmax_and_never_a_masked_action():
    from gfdsl.engine.rollout import _gumbel

    torch.manual_seed(0)
    logits = torch.tensor([[0.5, -1.0, float("-inf"), 2.0, 0.0]])
    n = 200_000
    a = (logits + _gumbel(n, 5)).argmax(1)
    freq = torch.bincount(a, minlength=5).double() / n
    assert freq[2] == 0
    assert torch.allclose(freq, torch.softmax(logits[0].double(), 0), atol=4e-3)


@pytest.mark.parametrize("train", ["", "epsilon = 0.2", "temperature = 2.0", "replay = 256"])
def test_training_reaches_the_target_on_a_small_grid(train):
    """TB on a 3x3 grid, on- and off-policy: the exact L1 falls well below its start."""
    m = grid_model(train=train)
    assert (m.space.explores or m.replay is not None) == bool(train) and (m.replay is not None) == ("replay" in train)
    from gfdsl.engine.module import param_groups

    opt = torch.optim.Adam(param_groups(m, 1e-2, 1e-2))
    start = m.exact_distribution()["exact_l1"]
    for step in range(150):
        loss, _ = m.loss(torch.zeros(32, 0), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ev = m.exact_distribution()
    assert ev["exact_l1"] < 0.1 < start, (start, ev)
    if "replay" in train:
        assert int(m.replay.n) > 256  # the buffer filled and wrapped


# -- end to end: the CLI, checkpoints and resumption -----------------------------------------


def small_hypergrid(tmp_path, train: str) -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "specs" / "hypergrid.gfn").read_text()
    text = text.replace("H = 8 ", "H = 4 ").replace("W = 256", "W = 16")
    text = re.sub(r"\n\s*checkpoint_every\s*=[^\n]*", "", text)
    text = text.replace("  train {", "  train {\n    " + train, 1)
    p = tmp_path / "hg.gfn"
    p.write_text(text)
    return str(p)


def test_run_sample_eval_from_the_cli(tmp_path, capsys):
    import json

    import numpy as np

    from gfdsl.cli.app import main

    spec = small_hypergrid(tmp_path, "")
    out = tmp_path / "run"
    assert main(["run", spec, "--steps", "40", "--batch", "16", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "exact L1" in printed
    s = json.loads((out / "summary.json").read_text())
    assert s["evaluation"] == "exact" and 0 <= s["exact_l1"] <= 2 and s["reward"]["entry"] == "hypergrid"
    x = np.load(out / "samples.npy")
    assert x.dtype.kind == "i" and x.shape[1] == 2 and x.min() >= 0 and x.max() <= 3
    assert (out / "samples.png").stat().st_size > 1000
    assert main(["sample", str(out), "-n", "7", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (7, 2)
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["exact_l1"] == pytest.approx(s["exact_l1"], abs=1e-9) and ev["step"] == 40


def test_resume_with_exploration_and_replay_is_bit_identical(tmp_path):
    """The replay buffer and the log Z optimizer state live in the checkpoint: a run
    resumed from its step-20 checkpoint ends exactly where the uninterrupted run does."""
    import shutil

    from gfdsl.engine.checkpoint import CKPT, read_checkpoint

    from gfdsl.engine.loop import train

    from gfdsl.engine.rundir import RunOptions

    spec = small_hypergrid(tmp_path, "replay = 64\n    epsilon = 0.1\n    checkpoint_every = 20")
    full, snap = tmp_path / "full", tmp_path / "snap"

    def keep(step, model):
        if step == 20:
            shutil.copytree(full, snap)

    train(spec, RunOptions(steps=60, batch=16, out=str(full), progress=False, on_checkpoint=keep))
    train(None, RunOptions(progress=False), resume=str(snap))
    a, ma = read_checkpoint(full / CKPT)
    b, mb = read_checkpoint(snap / CKPT)
    assert ma["step"] == mb["step"] == "60"
    assert any(k.startswith("model.replay.x") for k in a) and set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_table_reward_is_read_per_state_and_bad_files_are_named(tmp_path):
    import numpy as np

    from gfdsl.errors import GfdslError

    src = GRID.replace("reward = hypergrid(r0 = 0.1, r1 = 0.5, r2 = 2.0)", 'reward = table(file = "r.npy")')
    r = np.arange(1, 10, dtype=np.float64)  # R(state k) = k + 1, in gfdsl's enumeration order
    np.save(tmp_path / "r.npy", r)
    spec = tmp_path / "t.gfn"
    spec.write_text(src % ("uniform()", "tb", ""))
    from gfdsl.driver import check_file

    c = check_file(spec)
    m = lower(c.graph, c.source)
    S = m.space.space.enumerate()
    assert torch.allclose(m.reward(S), torch.from_numpy(np.log(r)).float())
    np.save(tmp_path / "r.npy", r[:5])
    with pytest.raises(GfdslError) as e:
        lower(c.graph, c.source)
    assert "E801" in e.value.render() and "5 values" in e.value.render() and "9 states" in e.value.render()
    np.save(tmp_path / "r.npy", -r)
    with pytest.raises(GfdslError) as e:
        lower(c.graph, c.source)
    assert ">= 0" in e.value.render()


def test_scoring_distinct_states_once_equals_scoring_every_row():
    """Values and gradients of the deduplicated scoring (CPU) and of scoring every row
    (the GPU way) agree."""
    m = grid_model()
    torch.manual_seed(3)
    t = m.space.rollout(64)
    T, B = t.actions.shape
    s = t.states[:-1].reshape(T * B, -1)
    a = t.actions.reshape(-1)
    keep = a >= 0
    out = []
    for dedup in (True, False):
        m.zero_grad()
        v = m.space._gather_unique(m.space.log_pf_all, s, a.clamp(min=0), keep, dedup)
        v.sum().backward()
        out.append((v.detach(), [p.grad.clone() for p in m.nets["pf"].parameters()]))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-6)
    for g1, g2 in zip(out[0][1], out[1][1]):
        assert torch.allclose(g1, g2, atol=1e-5)


def test_hypergrid_reward_matches_hand_values_and_its_dense_table():
    """R = r0 + r1 [all |x/(H-1) - 1/2| > 1/4] + r2 [all in (0.3, 0.4)] (Bengio et al. 2021)
    on the shipped 8x8 spec; the table kept for small spaces equals the definition on
    every state (here and on the 4-D grid)."""
    from gfdsl.driver import check_file
    from tests.conftest import ROOT

    for dims, cases in (({}, {(1, 1): 2.6, (0, 0): 0.6, (0, 1): 0.6, (6, 7): 0.6, (3, 3): 0.1, (1, 3): 0.1}),
                        ({"D": 4}, {(1, 6, 1, 6): 2.6, (0, 7, 0, 7): 0.6, (1, 1, 1, 4): 0.1})):
        c = check_file(ROOT / "specs" / "hypergrid.gfn", dims)
        m = lower(c.graph, c.source)
        s = torch.tensor(list(cases))
        assert torch.allclose(m.reward(s), torch.tensor(list(cases.values())).log())
        S = m.space.space.enumerate()
        assert m.space.space.n_states <= m.reward.DENSE
        assert torch.equal(m.reward(S), m.reward.log_reward(S))


def test_backward_rollout_draws_the_backward_policy():
    """The last move of trajectories drawn backward from x follows P_B(. | x)."""
    m = grid_model()
    x = torch.tensor([[1, 2]])  # two parents: (0, 2) by inc[0], (1, 1) by inc[1]
    torch.manual_seed(0)
    n = 20_000
    t = m.space.backward_rollout(x.expand(n, -1))
    n_b = (t.actions >= 0).sum(0) - 1  # position of the exit; the move before it made x
    last = t.actions.gather(0, (n_b - 1)[None])[0]
    freq = torch.bincount(last, minlength=2).float() / n
    want = m.space.log_pb_all(x)[0].exp().detach()
    assert torch.allclose(freq, want, atol=0.015)


@pytest.mark.parametrize("objective", ["db(flow = fl)", "subtb(flow = fl, lamda = 0.9)"])
def test_flow_objectives_on_the_kept_pass_equal_rescoring(objective):
    """db and subtb read the state flow of each distinct state once, from the kept rows
    of a compact rollout or through deduplicated scoring: the same loss and gradients."""

    m = grid_model(objective=objective)
    torch.manual_seed(2)
    t = m.space._rollout_compact(64, False, True)
    name = objective.split("(")[0]
    got = []
    for traj in (t, Trajectory(t.states, actions=t.actions)):
        m.zero_grad()
        lpf, lpb = m.log_probs(traj)
        traj.log_pf, traj.log_pb = lpf, lpb
        loss = term(m, name, traj, m.reward(traj.states[-1]), dict(m.spec["objective"][0]["args"]))
        loss.backward()
        got.append((loss.detach(), [p.grad.clone() for p in m.nets["fl"].parameters()]))
    assert torch.allclose(got[0][0], got[1][0], rtol=1e-5)
    for g1, g2 in zip(got[0][1], got[1][1]):
        assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dedup", [True, False])
def test_flow_matching_over_distinct_states_equals_the_definition(dedup):
    """fm's one net call over distinct states (CPU) and over every row (GPU) both equal the
    loss written out edge by edge with a net call per state (values and gradients)."""
    m = grid_model("fm", backward="uniform()")
    torch.manual_seed(5)
    t = m.space.rollout(16)
    sp, net = m.space.space, m.nets["pf"]
    lr = m.reward(t.states[-1])
    m.zero_grad()
    got = term(m, "fm", t, lr, {"dedup": dedup})
    got.backward()
    g_got = [p.grad.clone() for p in net.parameters()]

    def F(state):  # log edge flows out of one state (A,)
        return net(sp.encode(torch.tensor([state])))[0]

    m.zero_grad()
    T, B = t.actions.shape
    bal, n_moves = 0.0, 0
    for k in range(T):
        for b in range(B):
            a = int(t.actions[k, b])
            if not 0 <= a < sp.M:
                continue
            s = t.states[k + 1, b].tolist()
            out = torch.logsumexp(F(s)[sp.forward_mask(torch.tensor([s]))[0]], 0)
            ins = [F([v - (i == m_) for i, v in enumerate(s)])[m_] for m_ in range(sp.M) if s[m_] > 0]
            bal = bal + (torch.logsumexp(torch.stack(ins), 0) - out) ** 2
            n_moves += 1
    end = sum((F(t.states[-1, b].tolist())[sp.M] - lr[b]) ** 2 for b in range(B)) / B
    want = bal / n_moves + end
    want.backward()
    assert torch.allclose(got.detach(), want.detach(), atol=1e-5)
    for g1, g2 in zip(g_got, [p.grad for p in net.parameters()]):
        assert torch.allclose(g1, g2, atol=1e-5)


def test_flow_matching_trains_without_scoring_the_trajectories():
    """fm alone reads no log P_F / log P_B: the rollout keeps no score, the NaN guard
    reads the edge flows, and the exact L1 falls well below its start."""
    from gfdsl.engine.module import param_groups

    m = grid_model("fm", backward="uniform()")
    assert not m.objective.scores and grid_model().objective.scores
    opt = torch.optim.Adam(param_groups(m, 1e-2, 1e-2))
    start = m.exact_distribution()["exact_l1"]
    for step in range(300):  # fm learns slower than tb here
        loss, _ = m.loss(torch.zeros(32, 0), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m.objective.health.tolist() == [True, True, True]
    ev = m.exact_distribution()
    assert ev["exact_l1"] < 0.1 < start, (start, ev)
