"""Train the byte model with torch and export it (``paretoml filetype train``).

Reads a corpus made by `paretoml.filetype.corpus.build_corpus` (``manifest.jsonl`` +
``tokens.npy``), trains on the ``train`` split, picks per-label thresholds on ``val`` (the
smallest threshold ≥ 0.5 that gives ≥ 99% precision on validation), and writes
``model.safetensors`` + ``model.json`` into the output folder. The ``test`` split and
everything outside the corpus are never looked at here.

    paretoml filetype train /tmp/ft_corpus --out src/paretoml/filetype/data
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from paretoml.filetype.model import ModelConfig

__all__ = ["TrainConfig", "train_model", "load_corpus", "window_tokens"]

log = logging.getLogger(__name__)

CORPUS_WINDOW = 1024  # the corpus stores 1024-byte windows; smaller models slice them


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    Attributes:
        model: the architecture (`ModelConfig`).
        epochs, batch_size, lr, weight_decay: optimisation (AdamW, cosine schedule).
        min_train: labels with fewer training files are left out of the model.
        per_label_epoch: each epoch draws at most this many training files per label (a fresh
            draw every epoch), which balances types and bounds an epoch's cost on a CPU.
        target_precision: per-label threshold target on validation.
        threads: torch CPU threads.
        seed: initialisation and shuffling seed.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 8
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    min_train: int = 20
    per_label_epoch: int = 400
    target_precision: float = 0.99
    threads: int = 2
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.model, ModelConfig):
            raise TypeError(f"TrainConfig.model must be a ModelConfig, got {type(self.model).__name__}")
        for name, lo, hi in (("epochs", 1, 1000), ("batch_size", 1, 65536), ("min_train", 1, 10**6), ("per_label_epoch", 1, 10**7),
                             ("threads", 1, 256)):
            v = getattr(self, name)
            if not (isinstance(v, int) and lo <= v <= hi):
                raise ValueError(f"TrainConfig.{name} must be an int in [{lo}, {hi}], got {v!r}")
        if not (0 < self.lr < 1):
            raise ValueError(f"TrainConfig.lr must be in (0, 1), got {self.lr!r}")
        if not (0.5 <= self.target_precision < 1):
            raise ValueError(f"TrainConfig.target_precision must be in [0.5, 1), got {self.target_precision!r}")
        if self.model.window > CORPUS_WINDOW:
            raise ValueError(f"TrainConfig.model.window must be ≤ {CORPUS_WINDOW} (the corpus window), "
                             f"got {self.model.window}")


def load_corpus(corpus: str | Path) -> tuple[list[dict], np.ndarray]:
    """The manifest rows and the (N, 2048) int16 token matrix of a corpus folder."""
    corpus = Path(corpus)
    if not (corpus / "manifest.jsonl").exists():
        raise FileNotFoundError(f"{corpus}: no manifest.jsonl — build one with `paretoml filetype corpus {corpus}`")
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines() if line]
    tokens = np.load(corpus / "tokens.npy")
    if len(rows) != len(tokens):
        raise ValueError(f"{corpus}: manifest has {len(rows)} rows but tokens.npy has {len(tokens)}")
    return rows, tokens


def window_tokens(tokens: np.ndarray, window: int) -> np.ndarray:
    """Slice corpus tokens (window 1024) down to `window` bytes per end: same as extracting anew."""
    w0 = tokens.shape[1] // 2
    return np.concatenate([tokens[:, :window], tokens[:, 2 * w0 - window:]], axis=1)


def _torch_model(cfg: ModelConfig, n_labels: int):
    import torch
    from torch import nn

    class ByteConvNet(nn.Module):
        """Torch twin of `paretoml.filetype.model.ByteModel` (same parameter names and shapes)."""

        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(257, cfg.embed_dim)
            self.conv = nn.Conv1d(cfg.chunk * cfg.embed_dim, cfg.hidden, cfg.kernel)
            self.pw = nn.Conv1d(cfg.hidden, cfg.hidden2, 1)
            self.norm = nn.LayerNorm(3 * cfg.hidden2)
            self.head = nn.Linear(3 * cfg.hidden2, n_labels)

        def forward(self, x):                                   # x: (B, 2W) int64
            B = x.shape[0]
            P = cfg.window // cfg.chunk
            e = self.emb(x).reshape(B * 2, P, cfg.chunk * cfg.embed_dim).transpose(1, 2)  # (B·2, C, P)
            h = torch.relu(self.conv(e))                        # (B·2, H, Q)
            z = torch.relu(self.pw(h)).reshape(B, 2, cfg.hidden2, -1)  # (B, 2, H2, Q)
            feat = torch.cat([z.amax(dim=3).reshape(B, -1), z[:, 0, :, 0]], dim=1)
            return self.head(self.norm(feat))

    return ByteConvNet()


def _thresholds(probs: np.ndarray, y: np.ndarray, labels: list[str], target: float) -> dict[str, float]:
    """Per label: the smallest t ≥ 0.5 whose val predictions scoring ≥ t reach `target` precision.

    Predictions of the label are sorted by score; the longest prefix (highest scores first)
    whose precision is ≥ target sets t to its lowest score. A label that never reaches the
    target gets 0.999 (its answers fall back to txt/unknown in high-confidence mode); a label
    never predicted on val keeps 0.5.
    """
    pred, score = probs.argmax(1), probs.max(1)
    out = {}
    for i, lab in enumerate(labels):
        m = pred == i
        s, ok = score[m], (y[m] == i)
        order = np.argsort(-s, kind="stable")
        s, ok = s[order], ok[order]
        if len(s) == 0:
            out[lab] = 0.5
            continue
        prec = np.cumsum(ok) / np.arange(1, len(ok) + 1)
        good = np.nonzero(prec >= target)[0]
        t = float(s[good[-1]]) if len(good) else 0.999
        out[lab] = round(min(0.999, max(0.5, t)), 6)
    return out


def train_model(corpus: str | Path, out_dir: str | Path, cfg: TrainConfig = TrainConfig()) -> dict:
    """Train on the corpus's train split, set thresholds on val, export to `out_dir`; returns model.json."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rows, tokens = load_corpus(corpus)
    tokens = window_tokens(tokens, cfg.model.window)
    split = np.array([r["split"] for r in rows])
    lab_all = np.array([r["label"] for r in rows])
    counts = {lab: int(((lab_all == lab) & (split == "train")).sum()) for lab in set(lab_all)}
    labels = sorted(lab for lab, n in counts.items() if n >= cfg.min_train and lab != "oos")
    index = {lab: i for i, lab in enumerate(labels)}
    keep = np.array([lab in index for lab in lab_all])
    y_all = np.array([index.get(lab, -1) for lab in lab_all])
    tr = np.nonzero(keep & (split == "train"))[0]
    va = np.nonzero(keep & (split == "val"))[0]
    log.info("%d labels, %d train, %d val", len(labels), len(tr), len(va))
    model = _torch_model(cfg.model, len(labels))
    # class weights ∝ 1/sqrt(count): rare types matter without drowning the common ones
    cnt = np.bincount(y_all[tr], minlength=len(labels)).astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(cnt, 1))
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(w / w.mean(), dtype=torch.float32), label_smoothing=0.01)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    by_label = [tr[y_all[tr] == i] for i in range(len(labels))]
    per_epoch = sum(min(len(b), cfg.per_label_epoch) for b in by_label)
    steps = cfg.epochs * math.ceil(per_epoch / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    X = torch.from_numpy(tokens.astype(np.int64))
    Y = torch.from_numpy(y_all)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.time()
    for ep in range(cfg.epochs):
        model.train()
        perm = rng.permutation(np.concatenate(
            [rng.choice(b, size=min(len(b), cfg.per_label_epoch), replace=False) for b in by_label]))
        tot = 0.0
        for b in range(0, len(perm), cfg.batch_size):
            idx = torch.from_numpy(perm[b:b + cfg.batch_size])
            loss = loss_fn(model(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        val_acc = _accuracy(model, X[va], Y[va])
        log.info("epoch %d loss %.4f val_acc %.4f (%.0fs)", ep, tot / len(perm), val_acc, time.time() - t0)
    model.eval()
    with torch.no_grad():  # val probabilities for the thresholds
        pv = torch.softmax(torch.cat([model(X[va[i:i + 1024]]) for i in range(0, len(va), 1024)]), 1).numpy()
    thresholds = _thresholds(pv, y_all[va], labels, cfg.target_precision)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    tmp = out_dir / "model.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(out_dir / "model.safetensors")
    meta = {"labels": labels, "thresholds": thresholds, "model_config": asdict(cfg.model),
            "feature_config": {"window": cfg.model.window, "block_size": 4096, "min_size_for_model": 8},
            "train_config": {k: v for k, v in asdict(cfg).items() if k != "model"},
            "train_counts": {lab: counts[lab] for lab in labels}, "val_accuracy": round(_accuracy(model, X[va], Y[va]), 5),
            "train_seconds": round(time.time() - t0, 1)}
    from paretoml.frontier import atomic_write

    atomic_write(out_dir / "model.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    for f in ("model.json", "model.safetensors"):  # package data must be world-readable
        (out_dir / f).chmod(0o644)
    return meta


def _accuracy(model, X, Y) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(X[i:i + 1024]).argmax(1) for i in range(0, len(X), 1024)])
    model.train()
    return float((pred == Y).float().mean()) if len(Y) else float("nan")
