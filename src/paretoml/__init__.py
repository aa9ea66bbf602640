"""paretoml: efficient deep learning, measured.

Techniques turn a model, dataset or index into a cheaper one; benchmarks measure quality
and cost of each variant and of public peers in one run; :mod:`paretoml.frontier` keeps
the non-dominated points and draws them.

`import paretoml` stays lean: it imports no optional dependency, no matplotlib and never
initialises CUDA. Subpackages are imported explicitly (``from paretoml import frontier``).
"""

__version__ = "0.1.0"

from paretoml.errors import NotFittedError, ParetomlError

__all__ = ["NotFittedError", "ParetomlError", "__version__"]
