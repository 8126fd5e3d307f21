"""`--given NAME=VALUE` and `--guidance S`: the condition values a command samples or
evaluates a conditional model at, checked against what the spec declared (E709).

Each `--given` adds one value to its condition's axis; a condition no flag names keeps
the axis evaluation uses (Conditions.grid: every value of an int condition, eval_given
or the prior's ends and middle for a real one); the points are the product of the axes,
in the order the values were given. `gfdsl sample RUN --given y=3 --given y=5` thus
draws two rows, y = 3 then y = 5, and `gfdsl sample RUN` a row per class.
"""

from __future__ import annotations

import math

from gfdsl.errors import GfdslError, diag


def _bad(flag: str, why: str, hint: str = "") -> GfdslError:
    return GfdslError([diag("E709", None, None, path=flag, flag=flag, why=why, hint=hint)])


def _declared(conds) -> str:
    return ", ".join(f"{n} : " + (f"int({c['lo']}, {c['hi']})" if c["kind"] == "int" else f"real[{c['dim']}]")
                     for n, c in conds.specs.items())


def _value(conds, name: str, text: str):
    """The spec-level value of one `--given name=text` (an int, a float or a list)."""
    c = conds.specs[name]
    item = f"{name}={text}"
    if c["kind"] == "int":
        try:
            v = int(text)
        except ValueError:
            raise _bad("--given", f"{item}: {name} is int({c['lo']}, {c['hi']}), and '{text}' is not an integer") from None
        if not c["lo"] <= v <= c["hi"]:
            raise _bad("--given", f"{item} is outside {name}'s range int({c['lo']}, {c['hi']})",
                       f"give a value from {c['lo']} to {c['hi']}")
        return v
    try:
        vs = [float(p) for p in text.split(",")]
    except ValueError:
        raise _bad("--given", f"{item}: {name} is real[{c['dim']}], and '{text}' is not a number") from None
    if len(vs) not in (1, c["dim"]) or not all(math.isfinite(v) for v in vs):
        raise _bad("--given", f"{item}: {name} needs {c['dim']} finite number(s), comma-separated")
    lo, hi = c["prior"]["support"]
    if not all(lo <= v <= hi for v in vs):
        raise _bad("--given", f"{item} is outside [{lo:g}, {hi:g}], the range {name} was trained on",
                   "the model has never seen such values")
    return vs[0] if len(vs) == 1 else vs


def given_points(conds, items: list[str] | None) -> list[dict]:
    """The points {name: value} that `--given` items name (module docstring)."""
    if not conds:
        if items:
            raise _bad("--given", f"{items[0]}: this model declares no condition")
        return [{}]
    axes: dict[str, list] = {}
    for item in items or []:
        name, eq, text = item.partition("=")
        name = name.strip()
        if not eq or not name or not text.strip():
            raise _bad("--given", f"'{item}' is not NAME=VALUE", "e.g. --given y=3")
        if name not in conds.specs:
            raise _bad("--given", f"no condition '{name}': this model declares {_declared(conds)}")
        v = _value(conds, name, text.strip())
        if v not in axes.setdefault(name, []):
            axes[name].append(v)
    grid = conds.grid()
    points = [{}]
    for name in conds.specs:
        values = axes.get(name) or list(dict.fromkeys(p[name] for p in grid))
        points = [{**p, name: v} for p in points for v in values]
    return points


def check_guidance(conds, guidance: float | None) -> None:
    """Classifier-free guidance needs an int condition trained with cond_dropout (its
    null label is the unconditional model the guided output extrapolates from)."""
    if guidance is None:
        return
    ints = [n for n, c in conds.specs.items() if c["kind"] == "int"] if conds else []
    if not ints:
        raise _bad("--guidance", f"{guidance:g}: guidance needs an int condition, and this model has none")
    if conds.dropout <= 0:
        raise _bad("--guidance", f"{guidance:g}: the model was trained without cond_dropout, so it has no "
                                 "unconditional part to guide from", "train with `cond_dropout = 0.1`")


def check_few_steps(model, steps: int | None, eta: float | None) -> None:
    """`--steps S` and `--eta E` respace a DDPM chain (engine.fewstep): refused for any
    other model, for S above the trained T, and for E outside [0, 1]. An ODE flow
    (ode_flow steps) takes `--steps S` as its number of solver steps, any S."""
    if steps is None and eta is None:
        return
    from gfdsl.engine.denoising import ddpm_parts
    from gfdsl.engine.flowmatching import ode_kernel

    flag = "--steps" if steps is not None else "--eta"
    if ode_kernel(model) is not None:  # an ODE flow: any number of solver steps, no noise
        if eta is not None:
            raise _bad("--eta", f"{eta:g}: an ODE flow's samples are deterministic given the source draw",
                       "sample with --steps S alone")
        if not 1 <= steps <= 100_000:
            raise _bad("--steps", f"{steps}: give 1 to 100000 solver steps", "e.g. --steps 50")
        return
    parts = ddpm_parts(model)
    if parts is None:
        raise _bad(flag, "few-step sampling respaces a DDPM chain, and this model is not one (it needs one "
                         "ddpm_denoiser and one ddpm_noising kernel on every step)", "sample without --steps/--eta")
    T = parts[0].s.T
    if steps is not None and not 1 <= steps <= T:
        raise _bad("--steps", f"{steps}: the model was trained with T = {T} steps", f"give 1 to {T}")
    if eta is not None and not 0 <= eta <= 1:
        raise _bad("--eta", f"{eta:g} is outside [0, 1]", "0 is deterministic DDIM, 1 the ancestral noise level")
