"""paretoml.retrieval: a SOAR vector index (k-means partitions, spilled assignment with
orthogonality-amplified residuals, anisotropic 4-bit PQ scanned with LUT16, exact re-rank).

    from paretoml.retrieval import Index, IndexConfig, autotune
    index = Index(384, IndexConfig.from_spec("IVF500,SOAR1.5,AH4,RR100"))
    index.train(x); index.add(x); D, I = index.search(q, 10)

Names load lazily so that `paretoml index --help` does not import numba.
"""

import importlib

__all__ = ["Index", "IndexConfig", "ShardedIndex", "TuneResult", "autotune"]

_WHERE = {"Index": "index", "IndexConfig": "index", "TuneResult": "tuning", "autotune": "tuning",
          "ShardedIndex": "sharded"}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"paretoml.retrieval.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'paretoml.retrieval' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
