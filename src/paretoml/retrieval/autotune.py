from dataclasses import dataclass
@dataclass(frozen=True)
class TuneResult: pass
def autotune(): pass
