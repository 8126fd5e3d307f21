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

from pydantic import Field, field_validator, model_validator

from gfdsl.files import relative_folder, relative_input
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
    """file(path, labels = none, label_field = none, key = none, test_fraction = 0.2,
    mmap = false): a user's array of examples, relative to the spec: .npy, .npz (array
    `key`), .pt (one tensor), or .csv (numeric columns, an optional header line). A
    seeded 80/20 split (test_fraction) makes the train and test sets; with `mmap = true`
    a .npy is memory-mapped and its last rows are the test set, so a file larger than
    memory trains."""

    path: str
    labels: str | None = Field(default=None, description=(
        "a second file of integer labels, one per example, for an int condition"))
    label_field: str | None = Field(default=None, max_length=200, description=(
        "the CSV column (by its header name) or .npz array holding integer labels; a CSV's other columns "
        "are the example"))
    key: str | None = Field(default=None, max_length=200, description=".npz: the array of examples (default: the only one)")
    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="share of the examples kept for the test set")
    mmap: bool = Field(default=False, description=(
        ".npy: memory-map the file instead of reading it (the test set is its last rows, not a random draw)"))

    @field_validator("path")
    @classmethod
    def _safe(cls, v: str) -> str:
        return relative_input(v, (".npy", ".npz", ".pt", ".csv"))

    @field_validator("labels")
    @classmethod
    def _safe_labels(cls, v: str | None) -> str | None:
        return v if v is None else relative_input(v, (".npy", ".pt"))

    @model_validator(mode="after")
    def _fits_format(self):
        suffix = self.path.rsplit(".", 1)[-1]
        if self.mmap and suffix != "npy":
            raise ValueError(f"mmap = true needs a .npy file (a .{suffix} file cannot be memory-mapped)")
        if self.key is not None and suffix != "npz":
            raise ValueError("key names an array of a .npz file")
        if self.label_field is not None and suffix not in ("csv", "npz"):
            raise ValueError("label_field names a column of a .csv or an array of a .npz")
        if self.label_field is not None and self.labels is not None:
            raise ValueError("give labels (a file) or label_field (a column), not both")
        return self


def _file_peek(a: FileArgs, inputs) -> tuple[str, int | None]:
    """(path, values per example) from the file's header, checked where the spec is
    checked; ValueError(path, why) for a missing or unreadable file."""
    from gfdsl.peek import peek

    for rel in filter(None, (a.path, a.labels)):
        _at_hand(inputs.resolve, rel)
    try:
        p = peek(inputs.resolve(a.path), a.key, a.label_field)
    except (ValueError, OSError) as e:
        raise ValueError(a.path, f"it {e}") from None
    return a.path, None if p is None else p.numel


class ImagesArgs(Args):
    """images(folder, size = 8, channels = 1, levels = 0, labels = false, test_fraction =
    0.2): the PNG and JPEG files of a folder beside the spec (and of its sub-folders),
    read with Pillow, converted to grey (channels = 1) or RGB (3), resized to size x size
    and flattened channel-major. levels = 0 keeps reals in [-1, 1] (a real state); K >= 2
    quantises to K levels (a cat(K) state; 2 also fits a binary one). labels = true: the
    sub-folder an image is in is its label, the sub-folders in name order 0, 1, ..."""

    folder: str
    size: PosInt = Field(default=8, le=256, description="images are resized to size x size")
    channels: Literal[1, 3] = Field(default=1, description="1: grey, 3: RGB")
    levels: NonNegInt = Field(default=0, le=256, description="0: reals in [-1, 1]; K >= 2: K levels 0..K-1")
    labels: bool = Field(default=False, description="label each image by its sub-folder, for an int condition")
    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="share of the images kept for the test set")
    seed: NonNegInt = Field(default=0, description="seed of the train/test split")

    @field_validator("folder")
    @classmethod
    def _safe(cls, v: str) -> str:
        return relative_folder(v)

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: int) -> int:
        if v == 1:
            raise ValueError("levels = 1 keeps no information; give 0 (reals) or at least 2")
        return v


def _at_hand(find, rel: str):
    """find(rel), its E801 turned into ValueError(rel, why) for the checker to place at the argument."""
    from gfdsl.errors import GfdslError

    try:
        return find(rel)
    except GfdslError as e:
        raise ValueError(rel, e.diagnostics[0].message.split(": ", 1)[-1]) from None


def _images_yields(a: ImagesArgs):
    n = a.channels * a.size * a.size
    if a.levels == 0:
        return [("real", 0, n)]
    return [("cat", a.levels, n)] + ([("binary", 2, n)] if a.levels == 2 else [])


def _images_peek(a: ImagesArgs, inputs) -> tuple[str, int | None]:
    """The folder exists and holds images (checked where the spec is checked)."""
    from gfdsl.files import image_files

    files = _at_hand(lambda rel: image_files(inputs.resolve_dir(rel)), a.folder)
    if len(files) < 2:
        raise ValueError(a.folder, f"it holds {len(files)} PNG or JPEG images; a data set needs at least 2")
    return a.folder, None


def _digits_yields(a: DigitsArgs):
    return [("binary", 2, 64)] if a.binarize else [("cat", 17, 64), ("real", 0, 64)]


def _digits_labels(a: DigitsArgs):
    return (0, 9) if a.labels else None


D = "dataset"
REGISTRY.add(Entry("toy2d", D, Toy2dArgs, "2-D toy densities: " + ", ".join(TOY2D),
                   info={"yields": lambda a: [("real", 0, 2)]}, build=BUILD))
REGISTRY.add(Entry("digits", D, DigitsArgs, "scikit-learn's 8x8 digits, binarised or in 17 levels",
                   info={"yields": _digits_yields, "labels": _digits_labels}, build=BUILD))
REGISTRY.add(Entry("images", D, ImagesArgs, "a folder of PNG/JPEG images beside the spec, labels from sub-folders",
                   info={"yields": _images_yields, "peek": _images_peek,
                         "labels": lambda a: "file" if a.labels else None}, build=BUILD))
REGISTRY.add(Entry("file", D, FileArgs, "examples from a .npy, .npz, .pt or .csv file beside the spec",
                   info={"yields": lambda a: None, "peek": _file_peek,
                         "labels": lambda a: "file" if a.labels or a.label_field else None}, build=BUILD))
