"""`gfdsl run`, `sample` and `eval` end to end on tiny budgets: the run directory and its
summary, checkpoints that reload (and refuse a changed spec), clear errors for bad
options and data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gfdsl.cli.app import main

FIELDS = {"spec", "model", "steps", "seed", "train_seconds", "steps_per_second", "test_nll_nats", "nll_estimator",
          "data"}


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
    import os

    root = __import__("tests.conftest").conftest.ROOT
    out = tmp_path_factory.mktemp("runs") / "ddpm"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rc = main(["run", "specs/ddpm.gfn", "--set", "T=5", "--steps", "30", "--batch", "64", "--out", str(out),
                   "--eval-k", "2", "--eval-n", "50", "--no-progress"])
    finally:
        os.chdir(cwd)
    assert rc == 0
    return out


def test_run_directory(ddpm_run):
    names = {p.name for p in ddpm_run.iterdir()}
    assert {"spec.gfn", "run.json", "metrics.jsonl", "checkpoint.safetensors", "samples.npy", "samples.png",
            "summary.json"} <= names
    s = json.loads((ddpm_run / "summary.json").read_text())
    assert FIELDS <= set(s)
    assert s["steps"] == 30 and s["nll_estimator"] == {"name": "iwae", "k": 2} and np.isfinite(s["test_nll_nats"])
    assert np.load(ddpm_run / "samples.npy").shape == (2000, 2)
    lines = [json.loads(x) for x in (ddpm_run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 30 and all(np.isfinite(x["loss"]) for x in lines)
    assert not any(p.name.startswith(".") for p in ddpm_run.iterdir()), "temporary files left behind"


def test_sample_and_eval(ddpm_run, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert main(["sample", str(ddpm_run), "-n", "17", "-o", str(out)]) == 0
    assert np.load(out).shape == (17, 2)
    assert main(["eval", str(ddpm_run), "--k", "2", "--n", "20"]) == 0
    ev = json.loads(capsys.readouterr().out.split("wrote")[-1].split("\n", 1)[-1])
    assert ev["n_eval"] == 20 and ev["step"] == 30


def test_changed_spec_is_refused(ddpm_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(ddpm_run, run)
    (run / "spec.gfn").write_text((run / "spec.gfn").read_text().replace("H = 256", "H = 255"))
    assert main(["sample", str(run), "-n", "3"]) == 1
    assert "hash mismatch" in capsys.readouterr().err


def test_existing_run_directory_is_not_overwritten(ddpm_run, capsys, in_root):
    before = (ddpm_run / "summary.json").read_text()
    assert main(["run", "specs/ddpm.gfn", "--steps", "1", "--out", str(ddpm_run)]) == 1
    assert "error[E803]" in capsys.readouterr().err
    assert (ddpm_run / "summary.json").read_text() == before


def test_bad_options(in_root, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "specs/ddpm.gfn", "--steps", "0"])
    assert e.value.code == 2
    assert main(["run", "specs/ddpm.gfn", "--device", "tpu", "--steps", "1"]) == 1
    assert "error[E805]" in capsys.readouterr().err


def test_bad_data_file_is_named(tmp_path, capsys, in_root):
    spec = tmp_path / "f.gfn"
    spec.write_text((in_root / "specs" / "realnvp.gfn").read_text()
                    .replace('toy2d(name = "8gaussians")', 'file(path = "pts.npy")'))
    np.save(tmp_path / "pts.npy", np.zeros((10, 3), dtype=np.float32))
    assert main(["run", str(spec), "--steps", "1", "--out", str(tmp_path / "r1")]) == 1
    err = capsys.readouterr().err  # the file's header is read by the checker: before any run
    assert "error[E404]" in err and "pts.npy" in err and "3 values per example" in err
    np.save(tmp_path / "pts.npy", np.full((10, 2), np.nan, dtype=np.float32))
    assert main(["run", str(spec), "--steps", "1", "--out", str(tmp_path / "r2")]) == 1
    assert "NaN" in capsys.readouterr().err
    np.save(tmp_path / "pts.npy", np.zeros((1, 2), dtype=np.float32))
    assert main(["run", str(spec), "--steps", "1", "--out", str(tmp_path / "r4")]) == 1
    assert "at least 2 examples" in capsys.readouterr().err
    np.save(tmp_path / "pts.npy", np.array([["a", "b"]] * 4))
    assert main(["run", str(spec), "--steps", "1", "--out", str(tmp_path / "r5")]) == 1
    assert "is not numeric" in capsys.readouterr().err
    np.save(tmp_path / "pts.npy", np.random.default_rng(0).standard_normal((40, 2)).astype(np.float32))
    assert main(["run", str(spec), "--set", "K=2", "--steps", "3", "--batch", "8", "--eval-n", "4",
                 "--out", str(tmp_path / "r3"), "--no-progress"]) == 0
    s = json.loads((tmp_path / "r3" / "summary.json").read_text())
    assert s["nll_estimator"] == {"name": "exact"}


def test_check_still_does_not_import_torch_after_run_exists(in_root):
    import subprocess
    import sys

    code = "import sys; from gfdsl.cli.app import main; main(['check','-q','specs/hvae.gfn']); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=in_root)
    assert r.stdout.strip() == "False", r.stderr


@pytest.mark.parametrize("spec, steps, period", [("ddpm", 10, 10), ("schrodinger_bridge", 12, 2)])
def test_cosine_lr_decay_over_the_run_or_each_ipf_round(spec, steps, period, tmp_path, in_root):
    """lr_decay = "cosine": the rate at 1-based step s is lr * (1 + cos(pi * ((s - 1) % P) / P)) / 2,
    P the run (or, under ipf(rounds = 6), one round); read back from the last checkpoint."""
    import math

    from gfdsl.engine.checkpoint import CKPT, read_checkpoint

    from gfdsl.engine.loop import train

    from gfdsl.engine.rundir import RunOptions

    src = (in_root / "specs" / f"{spec}.gfn").read_text()
    if "lr_decay" not in src:  # the bridge's spec sets it itself
        src = src.replace("  train {", '  train {\n    lr_decay = "cosine"', 1)
    p = tmp_path / f"{spec}.gfn"
    p.write_text(src)
    train(str(p), RunOptions(out=str(tmp_path / "r"), steps=steps, batch=8, eval_n=4, eval_k=2, progress=False),
          overrides={"T": 3})
    _, meta = read_checkpoint(tmp_path / "r" / "checkpoint.safetensors")
    lr = json.loads(meta["param_groups"])[0]["lr"]
    assert math.isclose(lr, 1e-3 * 0.5 * (1 + math.cos(math.pi * ((steps - 1) % period) / period)), rel_tol=1e-9)
