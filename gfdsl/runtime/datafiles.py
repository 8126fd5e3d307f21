"""A user's data files (`dataset = file(...)`): reading each format, the checks of its
values, the train/test split, and memory mapping.

  .npy  numpy, no pickles; with `mmap = true` memory-mapped: examples are read from the
        page cache as batches need them, so a file larger than memory trains
  .npz  one array of the archive (`key`), labels from another (`label_field`)
  .pt   one tensor (torch.load, weights_only)
  .csv  numeric columns, an optional header line; `label_field` names the label column

Every problem is E801 naming the file: a wrong shape, a non-numeric or complex dtype,
NaN or infinite values, values a binary or categorical state cannot hold, a label
count that differs from the example count. The split: a seeded permutation puts
`test_fraction` of the examples in the test set; a memory-mapped file keeps its last
rows instead (a permutation would copy the file into memory).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gfdsl.errors import GfdslError, diag

CHUNK = 1 << 16  # rows checked at a time in a memory-mapped file (bounded memory)


def _bad(path, why: str) -> GfdslError:
    return GfdslError([diag("E801", None, None, path=str(path), why=why)])


def read_array(path: Path, key: str | None = None, mmap: bool = False) -> np.ndarray:
    """A .npy, .npz array or .pt tensor (a .csv goes through read_csv) as a real numeric array: strings,
    objects, structured and complex arrays (whose imaginary part a cast would drop
    silently) are refused, E801. Finite-or-not is the caller's rule."""
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False, mmap_mode="c" if mmap else None)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = list(z.keys())
                if key is None and len(names) != 1:
                    raise _bad(path, f"holds {len(names)} arrays ({', '.join(names[:8])}); name one with key")
                if (key or names[0]) not in names:
                    raise _bad(path, f"has no array '{key}' (it has {', '.join(names[:8])})")
                arr = z[key or names[0]]
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, torch.Tensor):
                raise _bad(path, f"expected one tensor, found {type(obj).__name__}")
            arr = obj.numpy()
    except GfdslError:
        raise
    except Exception as e:  # a corrupt or unreadable file: say so, no traceback
        raise _bad(path, f"cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.fields is not None:
        raise _bad(path, "expected a plain array, found a structured one")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise _bad(path, f"dtype {arr.dtype} is complex; store the real values")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise _bad(path, f"dtype {arr.dtype} is not numeric")
    return arr


def read_csv(path: Path, label_field: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(examples (N, columns), labels (N,) or None) of a CSV of numbers, with or without a
    header line; label_field names the label column (a header is needed then)."""
    from gfdsl.peek import csv_layout

    try:
        layout = csv_layout(path)
    except ValueError as e:
        raise _bad(path, f"it {e}") from None
    cols = list(range(layout.numel))
    lab = None
    if label_field is not None:
        if label_field not in layout.columns:
            raise _bad(path, f"has no column '{label_field}'")
        lab = layout.columns.index(label_field)
        cols.remove(lab)
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1 if layout.columns else 0, dtype=np.float64, ndmin=2)
    except ValueError as e:  # numpy names the line and the value
        raise _bad(path, f"is not a table of numbers: {e}") from None
    if table.shape[1] != layout.numel:
        raise _bad(path, f"rows have {table.shape[1]} values, its first line {layout.numel}")
    return table[:, cols], (None if lab is None else table[:, lab])


def load_file(a: dict, inputs, data_type: dict, numel: int):
    """(train, test, labels) of `file(...)` (IR arguments) for the data state."""
    path = inputs.resolve(a["path"])
    labels = None
    if path.suffix == ".csv":
        arr, labels = read_csv(path, a.get("label_field"))
    else:
        arr = read_array(path, a.get("key"), bool(a.get("mmap")))
        if a.get("label_field"):
            labels = read_array(path, a["label_field"])
    if a.get("labels"):
        labels = read_array(inputs.resolve(a["labels"]))
    x = _examples(path, arr, data_type, numel)
    y = None if labels is None else _labels(a.get("labels") or f"{path}:{a['label_field']}", labels, len(x))
    n_test = max(1, int(round(len(x) * a.get("test_fraction", 0.2))))
    if a.get("mmap"):  # contiguous slices: views of the mapped file, nothing copied
        tr, te = slice(0, len(x) - n_test), slice(len(x) - n_test, len(x))
    else:
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        tr, te = perm[n_test:], perm[:n_test]
    return x[tr], x[te], (None if y is None else (y[tr], y[te]))


def _examples(path: Path, arr: np.ndarray, data_type: dict, numel: int) -> torch.Tensor:
    """The examples as a (N, numel) tensor of the state's dtype, every value checked
    (chunk by chunk, so a mapped file is never read into memory at once)."""
    if arr.ndim < 1 or arr.shape[0] < 2:
        raise _bad(path, f"needs at least 2 examples along the first axis, got shape {tuple(arr.shape)}")
    flat = arr.reshape(arr.shape[0], -1)
    if flat.shape[1] != numel:
        raise _bad(path, f"examples have {flat.shape[1]} values, but the data state has {numel}")
    want = np.int64 if data_type["dtype"] == "cat" else np.float32
    for i in range(0, len(flat), CHUNK):
        block = flat[i:i + CHUNK]
        if np.issubdtype(block.dtype, np.floating) and not np.isfinite(block).all():
            raise _bad(path, "contains NaN or infinite values")
        if data_type["dtype"] == "binary" and not np.isin(block, [0, 1]).all():
            raise _bad(path, "a binary data state needs values 0 and 1 only")
        if data_type["dtype"] == "cat" and ((block < 0) | (block >= data_type["params"][0]) |
                                            (block != np.round(block))).any():
            raise _bad(path, f"a cat({data_type['params'][0]}) data state needs integers 0..{data_type['params'][0] - 1}")
    if isinstance(flat, np.memmap) and flat.dtype == want:
        return torch.from_numpy(flat)  # the mapping itself: pages are read as batches touch them
    if isinstance(flat, np.memmap):
        raise _bad(path, f"is memory-mapped but holds {flat.dtype}; the state needs {np.dtype(want).name} "
                         "(convert the file once, or drop mmap)")
    return torch.tensor(flat.astype(want))


def _labels(name, arr: np.ndarray, n: int) -> torch.Tensor:
    """Integer labels, one per example (N,) or (N, 1); E801 otherwise."""
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise _bad(name, f"needs one label per example ({n}), got shape {tuple(arr.shape)}")
    if not (np.issubdtype(arr.dtype, np.integer) or
            (np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all() and (arr == np.round(arr)).all())):
        raise _bad(name, "labels must be integers")
    return torch.tensor(arr.astype(np.int64))


def load_images(a: dict, inputs, data_type: dict):
    """(train, test, labels) of `images(...)`: every PNG/JPEG under the folder, converted,
    resized and flattened channel-major (C, H, W); labels from the sub-folders' order."""
    from PIL import Image

    from gfdsl.files import image_files

    folder = inputs.resolve_dir(a["folder"])
    files = image_files(folder)
    if len(files) < 2:
        raise _bad(folder, f"it holds {len(files)} PNG or JPEG images; a data set needs at least 2")
    s, mode = int(a["size"]), "L" if a["channels"] == 1 else "RGB"
    x = np.empty((len(files), a["channels"] * s * s), np.float32)
    Image.MAX_IMAGE_PIXELS = 1 << 26  # refuse decompression bombs (Pillow raises past 2x this)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert(mode).resize((s, s), Image.Resampling.BILINEAR), np.float32) / 255.0
        except Exception as e:
            raise _bad(p, f"cannot be read as an image ({type(e).__name__}: {e})") from None
        x[i] = (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).reshape(-1)
    levels = int(a["levels"])
    if levels:
        q = np.round(x * (levels - 1))
        t = torch.tensor(q, dtype=torch.float32 if data_type["dtype"] == "binary" else torch.int64)
    else:
        t = torch.tensor(x * 2 - 1)
    y = None
    if a.get("labels"):
        subs = sorted({p.relative_to(folder).parts[0] for p in files if len(p.relative_to(folder).parts) == 2})
        if any(len(p.relative_to(folder).parts) == 1 for p in files) or len(subs) < 2:
            raise _bad(folder, "labels = true needs every image inside one of at least 2 sub-folders (one per label)")
        y = torch.tensor([subs.index(p.relative_to(folder).parts[0]) for p in files])
    n_test = max(1, int(round(len(t) * a["test_fraction"])))
    perm = torch.randperm(len(t), generator=torch.Generator().manual_seed(int(a["seed"])))
    tr, te = perm[n_test:], perm[:n_test]
    return t[tr], t[te], (None if y is None else (y[tr], y[te]))
