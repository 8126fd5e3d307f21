"""Data sets a spec may train on. Nothing is downloaded: toy sets are generated from a
seed, scikit-learn's digits ship inside scikit-learn, and a user's file is read from a
path relative to the spec.

Each entry's `yields(args)` says what one example is, so the checker can match it to the
data state: a list of acceptable (dtype, classes, numel) or None when only known on load;
`labels(args)` whether it gives each example a label for an int condition: the range
(lo, hi), "file" (checked on load), or None.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gfdsl.files import relative_input
from gfdsl.library.registry import REGISTRY, Args, Entry, NonNegInt, PosInt

TOY2D = ("8gaussians", "2spirals", "checkerboard", "moons", "pinwheel", "rings", "swissroll", "circles")

BUILD = "gfdsl.runtime.data:build_entry"  # the torch half of every entry here (gfdsl.plugins.construct)


class Toy2dArgs(Args):
    """toy2d(name, n_train = 50000, n_test = 10000, seed = 0): a 2-D toy density."""

    name: Literal[TOY2D]  # type: ignore[valid-type]
    n_train: PosInt = Field(default=50_000, le=10_000_000)
    n_test: PosInt = Field(default=10_000, le=10_000_000)
    seed: NonNegInt = 0


class DigitsArgs(Args):
    """digits(binarize = true, seed = 0): scikit-learn's 8x8 digits (1797 images, 17 levels).

    binarize: pixel > 8 -> 1 (a binary[64] state); otherwise the 17 grey levels, as
    cat(17) for discrete models or as reals scaled to [-1, 1] for diffusion."""

    binarize: bool = True
    labels: bool = Field(default=False, description="give each image's digit 0..9 to an int condition")
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: NonNegInt = 0


class FileArgs(Args):
    """file(path): a user's array of examples, `.npy` or `.pt`, relative to the spec."""

    path: str
    labels: str | None = Field(default=None, description=(
        "a second file of integer labels, one per example, for an int condition"))

    @field_validator("path", "labels")
    @classmethod
    def _safe(cls, v: str | None) -> str | None:
        return v if v is None else relative_input(v, (".npy", ".pt"))


def _digits_yields(a: DigitsArgs):
    return [("binary", 2, 64)] if a.binarize else [("cat", 17, 64), ("real", 0, 64)]


def _digits_labels(a: DigitsArgs):
    return (0, 9) if a.labels else None


D = "dataset"
REGISTRY.add(Entry("toy2d", D, Toy2dArgs, "2-D toy densities: " + ", ".join(TOY2D),
                   info={"yields": lambda a: [("real", 0, 2)]}, build=BUILD))
REGISTRY.add(Entry("digits", D, DigitsArgs, "scikit-learn's 8x8 digits, binarised or in 17 levels",
                   info={"yields": _digits_yields, "labels": _digits_labels}, build=BUILD))
REGISTRY.add(Entry("file", D, FileArgs, "examples from a .npy or .pt file beside the spec",
                   info={"yields": lambda a: None, "labels": lambda a: "file" if a.labels else None}, build=BUILD))
