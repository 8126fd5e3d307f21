"""Data from files (gfdsl.runtime.datafiles, gfdsl.peek): .npy, .npz, .pt, .csv, memory
mapping; a missing or misshapen file is refused by `gfdsl check`, with line and column,
not first by `gfdsl run`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gfdsl.cli.app import main
from gfdsl.files import Inputs
from gfdsl.runtime.datafiles import load_file

ROOT = __import__("tests.conftest").conftest.ROOT
DDPM = (ROOT / "specs" / "ddpm.gfn").read_text()
REAL2 = {"dtype": "real", "shape": [2], "params": []}


def _spec(tmp_path, dataset: str) -> str:
    p = tmp_path / "s.gfn"
    p.write_text(DDPM.replace('dataset = toy2d(name = "8gaussians")', f"dataset = {dataset}"))
    return str(p)


def _args(**kw):
    return {"labels": None, "label_field": None, "key": None, "test_fraction": 0.2, "mmap": False, **kw}


def test_csv_with_header_and_label_column(tmp_path):
    rows = ["a,b,digit"] + [f"{i * 0.5},{-i},{i % 3}" for i in range(10)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    tr, te, (ytr, yte) = load_file(_args(path="d.csv", label_field="digit"), Inputs(tmp_path), REAL2, 2)
    assert tr.shape == (8, 2) and te.shape == (2, 2) and tr.dtype == torch.float32
    x = torch.cat([tr, te])
    y = torch.cat([ytr, yte])
    assert sorted(x[:, 0].tolist()) == [i * 0.5 for i in range(10)]
    assert all(int(yy) == int(-xx[1]) % 3 for xx, yy in zip(x, y))  # labels stay with their rows


def test_csv_without_header_npz_key_and_pt(tmp_path):
    np.savetxt(tmp_path / "d.csv", np.arange(20.0).reshape(10, 2), delimiter=",")
    assert load_file(_args(path="d.csv"), Inputs(tmp_path), REAL2, 2)[0].shape == (8, 2)
    np.savez(tmp_path / "d.npz", x=np.ones((10, 2)), y=np.arange(10))
    tr, te, (ytr, _) = load_file(_args(path="d.npz", key="x", label_field="y"), Inputs(tmp_path), REAL2, 2)
    assert tr.shape == (8, 2) and ytr.dtype == torch.int64
    torch.save(torch.zeros(10, 2), tmp_path / "d.pt")
    assert load_file(_args(path="d.pt"), Inputs(tmp_path), REAL2, 2)[1].shape == (2, 2)


def test_memory_mapped_npy_is_used_in_place(tmp_path):
    a = np.random.default_rng(0).standard_normal((1000, 2)).astype(np.float32)
    np.save(tmp_path / "m.npy", a)
    tr, te, _ = load_file(_args(path="m.npy", mmap=True), Inputs(tmp_path), REAL2, 2)
    assert tr._is_view() and te._is_view()  # slices of the mapping, not copies
    assert torch.equal(te, torch.from_numpy(a[800:]))  # the test set is the last rows
    tr2, _, _ = load_file(_args(path="m.npy"), Inputs(tmp_path), REAL2, 2)
    assert not tr2._is_view()
    np.save(tmp_path / "m64.npy", a.astype(np.float64))
    with pytest.raises(Exception, match="memory-mapped but holds float64"):
        load_file(_args(path="m64.npy", mmap=True), Inputs(tmp_path), REAL2, 2)


def test_a_run_trains_and_evaluates_from_a_mapped_file(tmp_path):
    np.save(tmp_path / "m.npy", np.random.default_rng(0).standard_normal((500, 2)).astype(np.float32))
    spec = _spec(tmp_path, 'file(path = "m.npy", mmap = true)')
    out = tmp_path / "r"
    assert main(["run", spec, "--set", "T=3", "--steps", "5", "--val", "0.1", "--out", str(out), "--no-progress",
                 "--eval-n", "20", "--eval-k", "2"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["data"]["n_train"] == 360 and s["data"]["n_test"] == 100 and s["validation"]["n"] == 40
    assert main(["eval", str(out)]) == 0  # the run finds its file again (its copy in RUN/inputs)


@pytest.mark.parametrize("dataset, code, says", [
    ('file(path = "missing.npy")', "E801", "bad data file missing.npy: no such file"),
    ('file(path = "three.npy")', "E404", "yields 3 values per example (three.npy)"),
    ('file(path = "two.npz")', "E801", "holds 2 arrays (x, y); name one with `key"),
    ('file(path = "d.csv", label_field = "nope")', "E801", "has no column 'nope'"),
    ('file(path = "d.csv", mmap = true)', "E305", "mmap = true needs a .npy file"),
    ('file(path = "d.csv", labels = "y.npy", label_field = "a")', "E305", "not both"),
])
def test_check_refuses_bad_data_files_before_run(tmp_path, capsys, dataset, code, says):
    np.save(tmp_path / "three.npy", np.zeros((5, 3), np.float32))
    np.savez(tmp_path / "two.npz", x=np.zeros((5, 2)), y=np.zeros(5))
    (tmp_path / "d.csv").write_text("a,b\n1,2\n3,4\n")
    spec = _spec(tmp_path, dataset)
    assert main(["check", spec]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:32:" in err and f"error[{code}]" in err and says in err, err


def test_bad_values_deeper_in_a_file_are_refused_at_run(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("a,b\n1,2\n3,oops\n5,6\n")
    spec = _spec(tmp_path, 'file(path = "d.csv")')
    assert main(["check", spec]) == 0  # the header and first rows are fine
    assert main(["run", spec, "--set", "T=3", "--steps", "2", "--out", str(tmp_path / "r"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "error[E801]" in err and "d.csv" in err and "oops" in err


def _image_folder(root, n_per=6):
    """Two sub-folders of 12 x 12 PNGs: dark images in '0_dark', bright in '1_bright'."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, (name, lo) in enumerate((("0_dark", 0), ("1_bright", 150))):
        (root / name).mkdir(parents=True)
        for i in range(n_per):
            px = (lo + rng.integers(0, 100, (12, 12))).astype(np.uint8)
            Image.fromarray(px).save(root / name / f"{i}.png" if i % 2 else root / name / f"{i}.jpg")


def test_an_image_folder_with_labels_from_sub_folders(tmp_path):
    _image_folder(tmp_path / "imgs")
    args = {"folder": "imgs", "size": 4, "channels": 1, "levels": 0, "labels": True, "test_fraction": 0.25, "seed": 0}
    tr, te, (ytr, yte) = load_file.__globals__["load_images"](args, Inputs(tmp_path), {"dtype": "real", "shape": [16]})
    assert tr.shape == (9, 16) and te.shape == (3, 16) and float(tr.min()) >= -1 and float(tr.max()) <= 1
    x, y = torch.cat([tr, te]), torch.cat([ytr, yte])
    assert (x[y == 1].mean() > x[y == 0].mean())  # the bright folder is label 1
    q, _, _ = load_file.__globals__["load_images"]({**args, "levels": 4, "labels": False}, Inputs(tmp_path),
                                                    {"dtype": "cat", "shape": [16]})
    assert q.dtype == torch.int64 and set(q.unique().tolist()) <= {0, 1, 2, 3}


def test_an_image_folder_trains_a_spec_and_is_checked_before(tmp_path, capsys):
    _image_folder(tmp_path / "imgs")
    spec = tmp_path / "ar.gfn"
    spec.write_text((ROOT / "specs" / "autoregressive.gfn").read_text().replace(
        "digits(binarize = true)", 'images(folder = "imgs", size = 4, levels = 2)').replace("D = 64", "D = 16")
        .replace("H = 512", "H = 16"))
    out = tmp_path / "r"
    assert main(["run", str(spec), "--steps", "3", "--out", str(out), "--no-progress", "--samples", "10"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert list(info["input_folders"]) == ["imgs"]
    assert main(["eval", str(out)]) == 0
    (tmp_path / "imgs" / "0_dark" / "1.png").write_bytes(b"changed")  # the images changed: eval refuses
    assert main(["eval", str(out)]) == 1
    assert "its images changed since the run started" in capsys.readouterr().err
    bad = tmp_path / "bad.gfn"
    bad.write_text(spec.read_text().replace('folder = "imgs"', 'folder = "nope"'))
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "error[E801]: bad data file nope: no such folder" in err
    bad.write_text(spec.read_text().replace("levels = 2", "levels = 3"))
    assert main(["check", str(bad)]) == 1
    assert "error[E404]" in capsys.readouterr().err
