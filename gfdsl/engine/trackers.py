"""Experiment trackers: a run's metrics, spec, settings and images sent to TensorBoard or
MLflow as well as metrics.jsonl (`gfdsl run --log tensorboard --log mlflow`).

Every record written to metrics.jsonl reaches each tracker: its numbers as scalars at its
step (nested ones, as an `eval` point's, under "eval/<name>"). At the start each gets
the spec text and the resolved settings (run.json); at the end summary.json's numbers
and the run's images (samples.png, loss.png, logz.png). Both libraries are optional:
`pip install 'gfdsl[log]'`; without it, asking for one is error E709 naming it, before
the run starts.

  tensorboard  torch.utils.tensorboard's SummaryWriter, event files in RUN/tensorboard
  mlflow       mlflow's tracking client; the URI from --mlflow-uri, else a file store in
               RUN/mlruns; one experiment per model name, one MLflow run per gfdsl run
               (a resumed run continues its MLflow run: its id is kept in RUN/mlflow_run_id)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from gfdsl.errors import GfdslError, diag

IMAGES = ("samples.png", "loss.png", "logz.png")


def scalars(rec: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a record, flattened: {"loss": .., "eval/exact_l1": ..}; `step` itself left out."""
    out = {}
    for k, v in rec.items():
        if k == "step" and not prefix:
            continue
        if isinstance(v, dict):
            out.update(scalars(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[prefix + k] = float(v)
    return out


def _missing(what: str, module: str) -> GfdslError:
    return GfdslError([diag("E709", None, None, path="--log", flag="--log", why=f"{what} needs the `{module}` package, "
                            "which is not installed", hint="pip install 'gfdsl[log]'")])


class TensorBoard:
    def __init__(self, out: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("--log tensorboard", "tensorboard") from None
        self.w = SummaryWriter(log_dir=str(out / "tensorboard"))

    def start(self, spec_text: str, settings: dict) -> None:
        self.w.add_text("spec", "```\n" + spec_text + "\n```", 0)
        self.w.add_text("settings", "```json\n" + json.dumps(settings, indent=1, sort_keys=True, default=str) + "\n```", 0)

    def log(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.w.add_scalar(k, v, step)
        self.w.flush()

    def finish(self, step: int, summary: dict[str, float], images: list[Path]) -> None:
        import numpy as np
        from PIL import Image

        for k, v in summary.items():
            self.w.add_scalar("summary/" + k, v, step)
        for p in images:
            self.w.add_image(p.stem, np.asarray(Image.open(p).convert("RGB")), step, dataformats="HWC")
        self.w.close()


class MLflow:
    def __init__(self, out: Path, uri: str | None, experiment: str, resume: bool):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("--log mlflow", "mlflow-skinny") from None
        import os

        if uri is None:  # the file store: MLflow 3 keeps it behind a switch (its database stores need SQLAlchemy)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri = uri or (out.resolve() / "mlruns").as_uri()
        try:
            self.c = MlflowClient(tracking_uri=self.uri)
            id_file = out / "mlflow_run_id"
            if resume and id_file.is_file():
                self.run_id = id_file.read_text().strip()
                self.c.update_run(self.run_id, status="RUNNING")
            else:
                exp = self.c.get_experiment_by_name(experiment)
                exp_id = exp.experiment_id if exp is not None else self.c.create_experiment(experiment)
                self.run_id = self.c.create_run(exp_id, run_name=out.name).info.run_id
                from gfdsl.files import atomic_write

                atomic_write(str(id_file), self.run_id.encode())
        except Exception as e:  # a bad URI, an unreachable server, a store MLflow refuses
            raise GfdslError([diag("E709", None, None, path="--mlflow-uri", flag="--mlflow-uri",
                                   why=f"MLflow cannot log to {self.uri}: {type(e).__name__}: "
                                       f"{' '.join(str(e).split())[:300]}",
                                   hint="give a tracking URI MLflow can write (a folder: file:///path/mlruns, "
                                        "a server: http://host:5000)")]) from None

    def start(self, spec_text: str, settings: dict) -> None:
        from mlflow.entities import Param

        flat = {k: json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v) for k, v in settings.items()}
        self.c.log_batch(self.run_id, params=[Param(k, v[:6000]) for k, v in sorted(flat.items())])
        self.c.log_text(self.run_id, spec_text, "spec.gfn")

    def log(self, step: int, values: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.c.log_batch(self.run_id, metrics=[Metric(k.replace("/", "."), v, now, step) for k, v in values.items()])

    def finish(self, step: int, summary: dict[str, float], images: list[Path]) -> None:
        self.log(step, {"summary/" + k: v for k, v in summary.items()})
        for p in images:
            self.c.log_artifact(self.run_id, str(p))
        self.c.set_terminated(self.run_id)


def check_installed(kinds) -> None:
    """E709 now, before anything is built or written, for a tracker whose library is missing."""
    import importlib.util

    for kind, module, dist in (("tensorboard", "tensorboard", "tensorboard"), ("mlflow", "mlflow", "mlflow-skinny")):
        if kind in (kinds or ()) and importlib.util.find_spec(module) is None:
            raise _missing(f"--log {kind}", dist)


class Trackers:
    """The trackers a run asked for (none: every call does nothing)."""

    def __init__(self, kinds, out: Path, uri: str | None, experiment: str, resume: bool):
        self.all = []
        for kind in dict.fromkeys(kinds or ()):
            self.all.append(TensorBoard(out) if kind == "tensorboard" else MLflow(out, uri, experiment, resume))
        self.out = out

    def start(self, spec_text: str, settings: dict) -> None:
        for t in self.all:
            t.start(spec_text, settings)

    def record(self, rec: dict) -> None:
        values = scalars(rec)
        if values and "step" in rec:
            for t in self.all:
                t.log(int(rec["step"]), values)

    def finish(self, step: int, summary: dict) -> None:
        images = [self.out / n for n in IMAGES if (self.out / n).is_file()]
        for t in self.all:
            t.finish(step, scalars(summary), images)
