"""gfdsl-ising: an example gfdsl plugin (docs/extending.md walks through it).

It declares two registry entries, each a pydantic argument model and a torch half:

  energy ising(n, beta = 0.4, J = 1.0, h = 0.0, periodic = true)
      the Ising model on an n x n grid of spins s_i in {-1, +1}:
      E(s) = -beta (J sum_<ij> s_i s_j + h sum_i s_i), R(s) = exp(-E(s)),
      read from a set state (a spin is up when its site is in the set) or a
      complete 0/1 sequence, site i = row * n + col
  net resmlp(in, out, width = 128, blocks = 2, act = "relu")
      a residual MLP: in -> width, `blocks` pre-activation residual blocks, -> out

This module imports no torch: `gfdsl check` and `gfdsl render` read only these
declarations; the torch halves (gfdsl_ising.torch_half) are imported when a model is built.
"""

from typing import Literal

from pydantic import Field

from gfdsl.plugins import Args, PosInt, Problem, energy, net


class IsingArgs(Args):
    """ising(n, beta = 0.4, J = 1.0, h = 0.0, periodic = true)."""

    n: PosInt = Field(le=64, description="the grid is n x n spins")
    beta: float = Field(default=0.4, ge=0, le=100, description="inverse temperature")
    J: float = Field(default=1.0, ge=-100, le=100, description="coupling of nearest neighbours (> 0: ferromagnetic)")
    h: float = Field(default=0.0, ge=-100, le=100, description="external field")
    periodic: bool = Field(default=True, description="wrap the grid into a torus")


def _ising_rule(a: IsingArgs, t) -> Problem | None:
    """The state must hold one value per site, and spins are binary."""
    if t.numel == a.n * a.n and (t.dtype == "set" or t.classes == 2):
        return None
    return Problem("E410", "n", dict(what=f"ising(n = {a.n})", need=f"{a.n * a.n} spins (set[{a.n * a.n}] or "
                                     f"seq(2)[{a.n * a.n}])", state="", type=str(t),
                                     hint=f"declare the state set[{a.n * a.n}], or give n to match it"))


energy("ising", IsingArgs, "the Ising model on an n x n grid (a set state: the sites with spin up)",
       types=("set", "seq"), need="spin configurations (set[n * n] or seq(2)[n * n])", rule=_ising_rule,
       build="gfdsl_ising.torch_half:Ising")


class ResMLPArgs(Args):
    """resmlp(in, out, width = 128, blocks = 2, act = "relu")."""

    in_: PosInt = Field(alias="in", le=1_000_000, description="flat input size")
    out: PosInt = Field(le=1_000_000, description="flat output size")
    width: PosInt = Field(default=128, le=65_536, description="width of the residual stream")
    blocks: PosInt = Field(default=2, le=256, description="residual blocks")
    act: Literal["relu", "silu", "gelu"] = "relu"


def _resmlp_facts(a: ResMLPArgs):
    return a.in_, a.out, 0  # it does not read the step


def _resmlp_size(a: ResMLPArgs):
    """(parameters, activation floats kept per row, flops per row): the resource estimate."""
    w = a.width
    params = (a.in_ * w + w) + a.blocks * (2 * w + w * w + w) + (w * a.out + a.out)
    floats = 2 * w + a.blocks * 4 * w + a.out
    flops = 2 * (a.in_ * w + a.blocks * w * w + w * a.out)
    return params, floats, flops


net("resmlp", ResMLPArgs, "residual MLP: in -> width, pre-activation residual blocks, -> out",
    facts=_resmlp_facts, size=_resmlp_size, build="gfdsl_ising.torch_half:ResMLP")
