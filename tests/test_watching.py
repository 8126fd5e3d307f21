"""Watching a run: the validation split and early stopping (gfdsl.engine.validation),
TensorBoard and MLflow (gfdsl.engine.trackers), `--set` for train settings, and the
loss-curve plot every run writes."""

from __future__ import annotations

import json
import os
import sys

import pytest

from gfdsl.cli.app import main

ROOT = __import__("tests.conftest").conftest.ROOT
DDPM = str(ROOT / "specs" / "ddpm.gfn")
FAST = ["--set", "T=4", "--batch", "64", "--eval-n", "50", "--eval-k", "2", "--no-progress"]


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_validation_split_best_checkpoint_and_summary(tmp_path):
    out = tmp_path / "r"
    assert main(["run", DDPM, *FAST, "--steps", "40", "--val", "0.2", "--set", "val_every=10", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    v = s["validation"]
    assert v["fraction"] == 0.2 and v["n"] == 10_000 and s["data"]["n_train"] == 40_000  # held out of train only
    assert s["data"]["n_test"] == 10_000
    vals = [r for r in _records(out) if "val_nll_nats" in r]
    assert [r["step"] for r in vals] == [10, 20, 30, 40]
    best = min(vals, key=lambda r: r["val_nll_nats"])
    assert v["best_step"] == best["step"] and v["best_val_nll_nats"] == pytest.approx(best["val_nll_nats"])
    assert s["evaluated"] == f"best (step {best['step']})" and (out / "best.safetensors").is_file()
    assert (out / "loss.png").is_file()


def test_early_stopping_and_resume_keep_the_same_decision(tmp_path):
    # lr 1e-12 barely moves the weights: no point after the first improves by val_delta
    args = [DDPM, *FAST, "--lr", "1e-12", "--val", "0.1", "--patience", "2",
            "--set", "val_every=10", "--set", "checkpoint_every=10", "--set", "val_delta=0.01"]
    out = tmp_path / "stop"
    assert main(["run", *args, "--steps", "200", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["validation"]["stopped_early_at"] == 30 and s["validation"]["best_step"] == 10
    assert s["steps_done"] == 30 and s["steps"] == 200
    # killed after step 20: the checkpoint's metadata carries the patience count on
    cut = tmp_path / "cut"
    assert main(["run", *args, "--out", str(cut), "--steps", "20"]) == 0
    info = json.loads((cut / "run.json").read_text())
    info["steps"] = 200
    (cut / "run.json").write_text(json.dumps(info))
    (cut / "summary.json").unlink()
    assert main(["run", "--resume", str(cut), "--no-progress"]) == 0
    assert json.loads((cut / "summary.json").read_text())["validation"]["stopped_early_at"] == 30


def test_validation_settings_are_checked(tmp_path, capsys):
    assert main(["check", DDPM, "--set", "patience=3"]) == 1
    assert "the setting 'patience' belongs to runs with a validation split" in capsys.readouterr().err
    assert main(["check", str(ROOT / "specs" / "hypergrid.gfn"), "--set", "val=0.1"]) == 1
    assert "bad override 'val=0.1': the setting belongs to models trained from data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["run", DDPM, "--val", "0.9"])
    assert e.value.code == 2


def test_set_reaches_any_train_setting(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["run", DDPM, *FAST, "--set", "steps=3", "--set", "lr=3e-4", "--set", "optimizer=adamw",
                 "--set", "lr_decay=cosine", "--out", str(out)]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["train"]["optimizer"] == "adamw" and info["train"]["lr"] == 3e-4 and info["steps"] == 3
    assert info["overrides"] == {"T": 4, "steps": 3, "lr": 3e-4, "optimizer": "adamw", "lr_decay": "cosine"}
    assert main(["check", DDPM, "--set", "optimizer=rmsprop"]) == 1
    err = capsys.readouterr().err
    assert "bad override 'optimizer=rmsprop'" in err and "'adam', 'adamw' or 'sgd'" in err
    assert main(["check", DDPM, "--set", "lr=1e300"]) == 1
    assert "bad override 'lr=1e+300': input should be less than or equal to 10" in capsys.readouterr().err


def test_tensorboard_events_hold_the_loss(tmp_path):
    pytest.importorskip("tensorboard", reason="the `log` extra (scripts/setup.sh installs it)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    assert main(["run", DDPM, *FAST, "--steps", "20", "--val", "0.1", "--set", "val_every=10", "--out", str(out),
                 "--log", "tensorboard"]) == 0
    ea = EventAccumulator(str(out / "tensorboard"))
    ea.Reload()
    logged = {r["step"]: r["loss"] for r in _records(out) if "loss" in r}
    got = {e.step: e.value for e in ea.Scalars("loss")}
    assert got.keys() == logged.keys() and all(got[k] == pytest.approx(v) for k, v in logged.items())
    assert [e.step for e in ea.Scalars("val_nll_nats")] == [10, 20]
    assert "summary/test_nll_nats" in ea.Tags()["scalars"] and "samples" in ea.Tags()["images"]
    assert "spec" in "".join(ea.Tags()["tensors"])  # the spec text, as a text summary


def test_mlflow_run_is_readable_with_its_client(tmp_path):
    pytest.importorskip("mlflow", reason="the `log` extra (scripts/setup.sh installs it)")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "ml"
    assert main(["run", DDPM, *FAST, "--steps", "20", "--out", str(out), "--log", "mlflow"]) == 0
    c = MlflowClient((out / "mlruns").resolve().as_uri())
    run_id = (out / "mlflow_run_id").read_text()
    r = c.get_run(run_id)
    assert r.info.status == "FINISHED" and r.data.params["batch"] == "64"
    history = [m.step for m in c.get_metric_history(run_id, "loss")]
    assert history == [r["step"] for r in _records(out) if "loss" in r]
    assert "summary.test_nll_nats" in r.data.metrics
    assert {"spec.gfn", "samples.png", "loss.png"} <= {a.path for a in c.list_artifacts(run_id)}


def test_a_missing_tracker_library_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    out = tmp_path / "none"
    assert main(["run", DDPM, *FAST, "--steps", "2", "--out", str(out), "--log", "tensorboard"]) == 1
    err = capsys.readouterr().err
    assert "error[E709]" in err and "`tensorboard` package" in err and "pip install 'gfdsl[log]'" in err
    assert not out.exists()  # refused before anything was written
    assert sys.modules  # (the suite goes on)
