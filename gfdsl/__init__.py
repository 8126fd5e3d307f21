"""gfdsl: a declarative language and compiler for trajectory generative models.

Every model here is a GFlowNet on a graded DAG (Zhang, Chen, Malkin & Bengio, "Unifying
Generative Models with GFlowNets and Beyond", arXiv:2209.02606). A `.gfn` spec is parsed
(gfdsl.lang.parse), checked (gfdsl.lang.check), built into a networkx DAG IR (gfdsl.ir)
and drawn (gfdsl.ir.render), lowered to one PyTorch module (gfdsl.compile, gfdsl.engine).
Importing gfdsl does not import torch.
"""

from gfdsl import ir  # noqa: F401
from gfdsl.api import Spec, load, loads, train  # noqa: F401
from gfdsl.driver import build_ir, check_file, check_source  # noqa: F401
from gfdsl.errors import Diagnostic, GfdslError  # noqa: F401

__version__ = "0.1.0"


def compile_spec(path, overrides: dict[str, int] | None = None):
    """Check and lower a spec to a GfnModel (an nn.Module): gfdsl.load(path, **overrides).compile()."""
    return load(path, **(overrides or {})).compile()


def __getattr__(name):  # RunOptions without importing torch at `import gfdsl`
    if name == "RunOptions":
        from gfdsl.engine.rundir import RunOptions

        return RunOptions
    raise AttributeError(name)


__all__ = ["load", "loads", "Spec", "train", "check_file", "check_source", "build_ir", "compile_spec", "RunOptions",
           "Diagnostic",
           "GfdslError", "ir", "__version__"]
