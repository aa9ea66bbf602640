"""paretoml.retrieval: a SOAR vector index (k-means partitions, spilled assignment with
orthogonality-amplified residuals, anisotropic 4-bit PQ scanned with LUT16, exact re-rank).

    from paretoml.retrieval import Index, IndexConfig, autotune
    index = Index(384, IndexConfig.from_spec("IVF500,SOAR1.5,AH4,RR100"))
    index.train(x); index.add(x); D, I = index.search(q, 10)
"""

from paretoml.retrieval.autotune import TuneResult, autotune
from paretoml.retrieval.index import Index, IndexConfig

__all__ = ["Index", "IndexConfig", "TuneResult", "autotune", "ShardedIndex"]


def __getattr__(name):  # ShardedIndex pulls in ray only when asked for
    if name == "ShardedIndex":
        from paretoml.retrieval.sharded import ShardedIndex

        return ShardedIndex
    raise AttributeError(f"module 'paretoml.retrieval' has no attribute {name!r}")
