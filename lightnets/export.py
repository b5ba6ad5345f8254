"""The old home of deployment, kept for one release so that ``lightnets.export.X`` still works: the code now
lives in ``lightnets.deploy`` (runtimes, checked ONNX export, the exported classifier), ``compare_onnx`` in
``lightnets.bench.compare`` and ``atomic_output`` in ``lightnets._io``. Import from there."""

from . import deploy
from ._io import atomic_output
from .bench.compare import compare_onnx
from .deploy import *  # noqa: F403  (every public name of lightnets.deploy, as this module had them)

__all__ = [*deploy.__all__, "atomic_output", "compare_onnx"]
