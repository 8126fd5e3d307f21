"""gfdsl: a declarative language and compiler for trajectory generative models.

Every model here is a GFlowNet on a graded DAG (Zhang, Chen, Malkin & Bengio, "Unifying
Generative Models with GFlowNets and Beyond", arXiv:2209.02606). A `.gfn` spec is parsed
(gfdsl.parse), checked (gfdsl.check), built into a networkx DAG IR (gfdsl.ir) and drawn
(gfdsl.render). Importing gfdsl does not import torch.
"""

from gfdsl.driver import check_file, check_source, build_ir  # noqa: F401
from gfdsl.errors import Diagnostic, GfdslError  # noqa: F401

__version__ = "0.1.0"
__all__ = ["check_file", "check_source", "build_ir", "Diagnostic", "GfdslError", "__version__"]
