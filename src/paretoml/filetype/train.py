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

__all__ = ["TrainConfig", "train_model", "train_arrays", "refit_thresholds", "pack_corpus", "load_packed", "load_corpus", "window_tokens"]

log = logging.getLogger(__name__)

CORPUS_WINDOW = 1024  # the corpus stores 1024-byte windows; smaller models slice them


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    Attributes:
        model: the architecture (`ModelConfig`).
        epochs, batch_size, lr, weight_decay: optimisation (AdamW; linear warm-up over the
            first 5% of steps, then cosine decay to zero).
        min_train: labels with fewer training files are left out of the model.
        per_label_epoch: each epoch draws at most this many training files per label (a fresh
            draw every epoch), which balances types and bounds an epoch's cost on a CPU.
        target_precision: per-label threshold target on validation.
        max_threshold: the highest threshold a label can get (also the threshold of a label
            that never reaches the target). Thresholds chosen on one set of packages transfer
            badly to others: in a 2-fold cross-fit over the val packages, capping at 0.95
            kept the share of types at ≥ 95% precision (0.90) and raised macro-F1 from 0.73
            to 0.82 compared with the cap 0.999.
        augment: probability that a training file of a text label is replaced by a random
            snippet of its first 1,024 bytes (cut at line ends, optionally starting at a
            later line; whitespace stripped as the features do): short files and partial
            content look like that.
        time_budget_s: if set, the number of epochs is lowered after the first epoch so that
            training ends within about this many seconds (the schedule follows).
        export_dtype: ``float32`` or ``float16`` storage of the exported weights (the numpy
            loader casts to float32; thresholds are chosen with the rounded weights).
        device: torch device (``cpu``, ``cuda``).
        threads: torch CPU threads.
        seed: initialisation and shuffling seed.
        init_from: a model folder (``model.safetensors`` + ``model.json``, e.g. the shipped one)
            to start from instead of a random initialisation: fine-tuning on a changed corpus
            where full training does not fit (a CPU). Its architecture must equal `model`; the
            output layer's rows are matched by label name, and labels it lacks start fresh.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 8
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    min_train: int = 20
    per_label_epoch: int = 400
    target_precision: float = 0.99
    max_threshold: float = 0.95
    augment: float = 0.0
    time_budget_s: float | None = None
    export_dtype: str = "float32"
    device: str = "cpu"
    threads: int = 2
    seed: int = 0
    init_from: str | None = None

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
        if not (0.5 <= self.max_threshold < 1):
            raise ValueError(f"TrainConfig.max_threshold must be in [0.5, 1), got {self.max_threshold!r}")
        if not (0.0 <= self.augment <= 1.0):
            raise ValueError(f"TrainConfig.augment must be in [0, 1], got {self.augment!r}")
        if self.time_budget_s is not None and not (self.time_budget_s > 0):
            raise ValueError(f"TrainConfig.time_budget_s must be > 0 or None, got {self.time_budget_s!r}")
        if self.export_dtype not in ("float32", "float16"):
            raise ValueError(f"TrainConfig.export_dtype must be 'float32' or 'float16', got {self.export_dtype!r}")
        if self.init_from is not None and not (Path(self.init_from) / "model.json").is_file():
            raise FileNotFoundError(f"TrainConfig.init_from: {self.init_from} has no model.json — give a folder "
                                    "written by `paretoml filetype train` (e.g. src/paretoml/filetype/data)")
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


_SPLITS = ("train", "val")


def pack_corpus(corpus: str | Path, out: str | Path | None = None,
                exclude_labels: tuple[str, ...] | list[str] | set[str] = ()) -> dict[str, np.ndarray]:
    """The train and val rows of a corpus as compact arrays (optionally saved as a compressed npz).

    Keys: ``head``/``tail`` (N, 1024) uint8 — the head window (bytes first) and the tail window
    (bytes last) with padding stored as 0 — and ``head_len``/``tail_len`` (how many real bytes
    each holds; the rest is padding), ``label`` (N,) int16 codes into ``label_names``,
    ``split`` (N,) uint8 (0 train, 1 val), ``is_text`` (N,) uint8 from the label's knowledge-base
    entry. Everything is plain arrays: `np.load` reads it without pickle.
    `exclude_labels`: labels left out of the pack, hence of the model (session 5: a new label whose
    training files come from fewer than 3 projects stays out); their test rows stay in the corpus.
    """
    from paretoml.filetype.features import PAD
    from paretoml.filetype.labels import info

    rows, tokens = load_corpus(corpus)
    unknown = set(exclude_labels) - {r["label"] for r in rows}
    if unknown:
        raise ValueError(f"pack_corpus: exclude_labels {sorted(unknown)} are not labels of {corpus}")
    keep = np.array([i for i, r in enumerate(rows) if r["split"] in _SPLITS and r["label"] not in exclude_labels],
                    dtype=np.int64)
    t = tokens[keep]
    w0 = t.shape[1] // 2
    head, tail = t[:, :w0], t[:, w0:]
    names = sorted({rows[i]["label"] for i in keep})
    code = {lab: i for i, lab in enumerate(names)}
    data = {
        "head": np.where(head == PAD, 0, head).astype(np.uint8),
        "head_len": (head != PAD).sum(1).astype(np.int16),
        "tail": np.where(tail == PAD, 0, tail).astype(np.uint8),
        "tail_len": (tail != PAD).sum(1).astype(np.int16),
        "label": np.array([code[rows[i]["label"]] for i in keep], dtype=np.int16),
        "label_names": np.array(names),
        "split": np.array([_SPLITS.index(rows[i]["split"]) for i in keep], dtype=np.uint8),
        "is_text": np.array([info(rows[i]["label"]).is_text for i in keep], dtype=np.uint8),
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp.npz")
        np.savez_compressed(tmp, **data)
        tmp.replace(out)
    return data


def load_packed(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays written by `pack_corpus` (no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _torch_model(cfg: ModelConfig, n_labels: int):
    import torch
    from torch import nn

    class ByteConvNet(nn.Module):
        """Torch twin of `paretoml.filetype.model.ByteModel` (same parameter names and shapes)."""

        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(257, cfg.embed_dim)
            self.conv = nn.Conv1d(cfg.chunk * cfg.embed_dim, cfg.hidden, cfg.kernel)
            self.pw = nn.Conv1d(cfg.hidden, cfg.hidden2, cfg.kernel2)
            self.norm = nn.LayerNorm(cfg.n_pooled)
            self.head = nn.Linear(cfg.n_pooled, n_labels)

        def forward(self, x):                                   # x: (B, 2W) int64
            B = x.shape[0]
            P = cfg.window // cfg.chunk
            e = self.emb(x).reshape(B * 2, P, cfg.chunk * cfg.embed_dim).transpose(1, 2)  # (B·2, C, P)
            h = torch.relu(self.conv(e))                        # (B·2, H, Q)
            z = torch.relu(self.pw(h)).reshape(B, 2, cfg.hidden2, -1)  # (B, 2, H2, Q)
            parts = [z.amax(dim=3).reshape(B, -1), z[:, 0, :, 0]]
            if cfg.mean_pool:
                parts.append(z.mean(dim=3).reshape(B, -1))
            return self.head(self.norm(torch.cat(parts, dim=1)))

    return ByteConvNet()


def _thresholds(probs: np.ndarray, y: np.ndarray, labels: list[str], target: float,
                max_threshold: float = 0.999) -> dict[str, float]:
    """Per label: the smallest t ≥ 0.5 whose val predictions scoring ≥ t reach `target` precision.

    Predictions of the label are sorted by score; the longest prefix (highest scores first)
    whose precision is ≥ target sets t to its lowest score. A label that never reaches the
    target gets `max_threshold`, and no threshold exceeds it; a label never predicted on val
    keeps 0.5.
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
        t = float(s[good[-1]]) if len(good) else max_threshold
        out[lab] = round(min(max_threshold, max(0.5, t)), 6)
    return out


def refit_thresholds(model_dir: str | Path, corpus: str | Path, target: float = 0.99,
                     max_threshold: float = 0.95) -> dict[str, float]:
    """Choose a shipped model's thresholds again on the val split, with the numpy model itself.

    `corpus` is a corpus folder or an npz from `pack_corpus`; only its val rows are read.
    Rewrites ``model.json`` (thresholds and ``threshold_rule``) and returns the thresholds.
    """
    import torch

    from paretoml.filetype.model import load_model
    from paretoml.frontier import atomic_write

    if not (0.5 <= target < 1 and 0.5 <= max_threshold < 1):
        raise ValueError(f"refit_thresholds: target and max_threshold must be in [0.5, 1), got {target}, {max_threshold}")
    corpus = Path(corpus)
    data = load_packed(corpus) if corpus.suffix == ".npz" else pack_corpus(corpus)
    model, meta = load_model(model_dir)
    labels = meta["labels"]
    index = {lab: i for i, lab in enumerate(labels)}
    names = [str(x) for x in data["label_names"]]
    va = np.nonzero(data["split"] == 1)[0]
    y = np.array([index.get(names[c], -1) for c in data["label"][va]])
    va, y = va[y >= 0], y[y >= 0]
    tok = _batch_tokens(*[torch.from_numpy(data[k][va]) for k in ("head", "head_len", "tail", "tail_len")],
                        model.cfg.window).numpy()
    probs = np.concatenate([model.probs(tok[i:i + 256]) for i in range(0, len(tok), 256)]) if len(tok) else \
        np.zeros((0, len(labels)), np.float32)
    from paretoml.filetype.labels import info

    meta["thresholds"] = thr = _thresholds(probs, y, labels, target, max_threshold)
    pred = probs.argmax(1)
    fallback = np.array([index.get("txt", -1) if info(lab).is_text else index.get("unknown", -1) for lab in labels])
    t = np.array([thr[lab] for lab in labels])
    meta["val_macro_f1_high_confidence"] = round(_macro_f1(y, np.where(probs.max(1) >= t[pred], pred, fallback[pred]),
                                                           len(labels)), 5)
    meta["threshold_rule"] = {"target_precision": target, "max_threshold": max_threshold, "on": "val split, numpy model"}
    atomic_write(Path(model_dir) / "model.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    (Path(model_dir) / "model.json").chmod(0o644)
    return meta["thresholds"]


def _batch_tokens(head, head_len, tail, tail_len, window: int, aug=None, gen=None, return_cuts=False):
    """Model tokens (B, 2·window) int64 from packed rows (torch tensors on one device).

    Rows where the bool mask `aug` is set are replaced by a random snippet of their head
    bytes: content[a:b] with b cut after a line end (or at the end of what was read) and,
    for some rows, a moved to the start of a later line; then whitespace is stripped at both
    cuts, as `features_from_ends` strips a file's ends. Rows whose snippet would be shorter
    than 16 bytes are left as they are. With `return_cuts`, also returns (a, b, applied) per row.
    """
    import torch

    from paretoml.filetype.features import PAD

    dev = head.device
    B, w0 = head.shape
    j = torch.arange(window, device=dev)
    h = head.long()
    hl, tl = head_len.long(), tail_len.long()
    head_tok = torch.where(j < hl[:, None], h[:, :window], PAD)
    tail_tok = torch.where(j >= window - tl[:, None], tail[:, w0 - window:].long(), PAD)
    if aug is None or not bool(aug.any()):
        return torch.cat([head_tok, tail_tok], dim=1)
    idx = torch.arange(w0, device=dev).expand(B, w0)
    valid = idx < hl[:, None]
    nl = (h == 10) & valid
    ws = (h == 32) | ((h >= 9) & (h <= 13))
    nonws = valid & ~ws
    big = torch.full_like(idx, w0)

    def at(m, i):
        return m.gather(1, i.clamp(0, w0 - 1)[:, None])[:, 0]

    r = torch.rand(B, 4, generator=gen, device=dev)
    lo = hl.clamp(max=64)
    b = torch.minimum(lo + (r[:, 0] * (hl - lo + 1).float()).long(), hl)
    b = torch.where(r[:, 1] < 0.3, hl, b)                               # keep what was read, 30%
    prev_nl = torch.cummax(torch.where(nl, idx, -1), dim=1).values
    pn = at(prev_nl, b - 1) + 1
    b = torch.where((b < hl) & (pn >= 16), pn, b)                       # cut after a line end
    last_nonws = torch.cummax(torch.where(nonws, idx, -1), dim=1).values
    b = at(last_nonws, b - 1) + 1                                       # strip trailing whitespace
    next_nl = torch.flip(torch.cummin(torch.flip(torch.where(nl, idx, big), [1]), dim=1).values, [1])
    next_nonws = torch.flip(torch.cummin(torch.flip(torch.where(nonws, idx, big), [1]), dim=1).values, [1])
    a0 = (r[:, 2] * (b // 2).float()).long()
    an = at(next_nl, a0) + 1
    an = torch.where(an < w0, at(next_nonws, an), big[:, 0])            # a later line, whitespace stripped
    a = torch.where((r[:, 3] < 0.3) & (an + 16 <= b), an, 0)
    ok = aug & (b - a >= 16)
    src = a[:, None] + j
    ah = torch.where(src < b[:, None], h.gather(1, src.clamp(max=w0 - 1)), PAD)
    src = b[:, None] - window + j
    at_ = torch.where(src >= a[:, None], h.gather(1, src.clamp(0, w0 - 1)), PAD)
    out = torch.cat([torch.where(ok[:, None], ah, head_tok), torch.where(ok[:, None], at_, tail_tok)], dim=1)
    return (out, a, b, ok) if return_cuts else out


def _macro_f1(y: np.ndarray, pred: np.ndarray, n: int) -> float:
    """Macro-F1 over the labels present in `y`."""
    f1 = []
    for i in np.unique(y):
        tp = float(((pred == i) & (y == i)).sum())
        p, r = tp / max(1, int((pred == i).sum())), tp / max(1, int((y == i).sum()))
        f1.append(0.0 if tp == 0 else 2 * p * r / (p + r))
    return float(np.mean(f1)) if f1 else float("nan")


def _warm_start(model, folder: str | Path, mcfg: ModelConfig, labels: list[str]) -> int:
    """Copy an exported model's weights into the torch `model` (same architecture); the output
    layer row by row for the labels both have. Returns how many labels were carried over."""
    import torch

    from paretoml.filetype.model import read_safetensors

    folder = Path(folder)
    meta = json.loads((folder / "model.json").read_text())
    if ModelConfig(**meta["model_config"]) != mcfg:
        raise ValueError(f"init_from: {folder} has model_config {meta['model_config']}, but this run trains "
                         f"{asdict(mcfg)}: warm start needs the same architecture (pass the same sizes)")
    old = {k: torch.from_numpy(v.astype(np.float32)) for k, v in read_safetensors(folder / "model.safetensors").items()}
    state = model.state_dict()
    if set(old) != set(state):
        raise ValueError(f"init_from: {folder} holds tensors {sorted(old)}, expected {sorted(state)}")
    row = {lab: i for i, lab in enumerate(meta["labels"])}
    new_i = torch.tensor([i for i, lab in enumerate(labels) if lab in row], dtype=torch.long)
    old_i = torch.tensor([row[lab] for lab in labels if lab in row], dtype=torch.long)
    with torch.no_grad():
        for k, v in old.items():
            if k.startswith("head."):  # rows of labels both have; new labels keep their fresh rows
                state[k][new_i] = v[old_i]
            else:
                state[k].copy_(v)
    model.load_state_dict(state)
    return len(new_i)


def train_model(corpus: str | Path, out_dir: str | Path, cfg: TrainConfig = TrainConfig()) -> dict:
    """Train on the corpus's train split, set thresholds on val, export to `out_dir`; returns model.json.

    `corpus` is a corpus folder (``manifest.jsonl`` + ``tokens.npy``) or an npz from `pack_corpus`.
    """
    corpus = Path(corpus)
    data = load_packed(corpus) if corpus.suffix == ".npz" else pack_corpus(corpus)
    return train_arrays(data, out_dir, cfg)


def train_arrays(data: dict[str, np.ndarray], out_dir: str | Path, cfg: TrainConfig = TrainConfig()) -> dict:
    """`train_model` on arrays from `pack_corpus` / `load_packed`."""
    import torch

    from paretoml.filetype.labels import info

    t0 = time.time()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    dev = torch.device(cfg.device)
    names = [str(x) for x in data["label_names"]]
    lab_all = np.array(names)[data["label"].astype(np.int64)]
    split = data["split"]
    counts = {lab: int(((lab_all == lab) & (split == 0)).sum()) for lab in names}
    labels = sorted(lab for lab, n in counts.items() if n >= cfg.min_train and lab != "oos")
    index = {lab: i for i, lab in enumerate(labels)}
    y_all = np.array([index.get(lab, -1) for lab in lab_all])
    tr = np.nonzero((y_all >= 0) & (split == 0))[0]
    va = np.nonzero((y_all >= 0) & (split == 1))[0]
    log.info("%d labels, %d train, %d val, device %s", len(labels), len(tr), len(va), dev)
    model = _torch_model(cfg.model, len(labels))
    if cfg.init_from is not None:
        kept = _warm_start(model, cfg.init_from, cfg.model, labels)
        log.info("warm start from %s: %d of %d labels' output rows carried over", cfg.init_from, kept, len(labels))
    model = model.to(dev)
    # class weights ∝ 1/sqrt(count): rare types matter without drowning the common ones
    cnt = np.bincount(y_all[tr], minlength=len(labels)).astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(cnt, 1))
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(w / w.mean(), dtype=torch.float32, device=dev),
                                        label_smoothing=0.01)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    by_label = [tr[y_all[tr] == i] for i in range(len(labels))]
    per_epoch = sum(min(len(b), cfg.per_label_epoch) for b in by_label)
    steps_per_epoch = math.ceil(per_epoch / cfg.batch_size)
    epochs = cfg.epochs
    arr = {k: torch.from_numpy(np.ascontiguousarray(data[k])).to(dev) for k in ("head", "head_len", "tail", "tail_len")}
    text = torch.from_numpy(np.array([info(lab).is_text for lab in labels] + [False]))[torch.from_numpy(y_all)].to(dev)
    Y = torch.from_numpy(y_all).to(dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(cfg.seed)
    amp = dev.type == "cuda"
    rng = np.random.default_rng(cfg.seed)

    def tokens(idx, train):
        aug = None
        if train and cfg.augment > 0:
            aug = text[idx] & (torch.rand(len(idx), generator=gen, device=dev) < cfg.augment)
        return _batch_tokens(arr["head"][idx], arr["head_len"][idx], arr["tail"][idx], arr["tail_len"][idx],
                             cfg.model.window, aug, gen)

    def predict(idx_np):
        model.eval()
        out = []
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            for i in range(0, len(idx_np), 2048):
                idx = torch.from_numpy(idx_np[i:i + 2048]).to(dev)
                out.append(torch.softmax(model(tokens(idx, False)).float(), 1).cpu())
        model.train()
        return torch.cat(out).numpy() if out else np.zeros((0, len(labels)), np.float32)

    step, t_train = 0, time.time()
    t_ep = t_train
    ep = 0
    while ep < epochs:
        model.train()
        perm = rng.permutation(np.concatenate(
            [rng.choice(b, size=min(len(b), cfg.per_label_epoch), replace=False) for b in by_label]))
        tot = 0.0
        total_steps = epochs * steps_per_epoch
        for b in range(0, len(perm), cfg.batch_size):
            frac = step / max(1, total_steps)
            lr = cfg.lr * (frac / 0.05 if frac < 0.05 else 0.5 * (1 + math.cos(math.pi * (frac - 0.05) / 0.95)))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = torch.from_numpy(perm[b:b + cfg.batch_size]).to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model(tokens(idx, True)).float(), Y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tot += float(loss.detach()) * len(idx) if (b // cfg.batch_size) % 20 == 0 else 0.0
        ep += 1
        if cfg.time_budget_s is not None and ep <= 2 and epochs > ep:  # fit the schedule into the budget
            now = time.time()  # the 2nd epoch's time, free of warm-up costs, sets the count
            per, t_ep = now - t_ep, now
            if ep == 2 or epochs == 2:
                epochs = max(ep, min(epochs, ep + int((cfg.time_budget_s - (now - t_train)) / max(per, 1e-6))))
                log.info("epoch %.2fs: %d epochs fit the %.0fs budget", per, epochs, cfg.time_budget_s)
        if ep == epochs or ep % max(1, epochs // 5) == 0:
            pv = predict(va)
            log.info("epoch %d/%d val_acc %.4f (%.0fs)", ep, epochs, float((pv.argmax(1) == y_all[va]).mean()),
                     time.time() - t0)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    if cfg.export_dtype == "float16":  # choose thresholds with the weights as they will be stored
        state = {k: v.half() for k, v in state.items()}
        model.load_state_dict({k: v.float() for k, v in state.items()})
    pv = predict(va)
    yv = y_all[va]
    thresholds = _thresholds(pv, yv, labels, cfg.target_precision, cfg.max_threshold)
    pred = pv.argmax(1)
    thr = np.array([thresholds[lab] for lab in labels])
    fallback = np.array([index.get("txt", -1) if info(lab).is_text else index.get("unknown", -1) for lab in labels])
    pred_hc = np.where(pv.max(1) >= thr[pred], pred, fallback[pred])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    tmp = out_dir / "model.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(out_dir / "model.safetensors")
    meta = {"labels": labels, "thresholds": thresholds, "model_config": asdict(cfg.model),
            "feature_config": {"window": cfg.model.window, "block_size": 4096, "min_size_for_model": 8},
            "train_config": {**{k: v for k, v in asdict(cfg).items() if k != "model"}, "epochs_run": epochs},
            "train_counts": {lab: counts[lab] for lab in labels},
            "val_accuracy": round(float((pred == yv).mean()), 5) if len(yv) else float("nan"),
            "val_macro_f1": round(_macro_f1(yv, pred, len(labels)), 5),
            "val_macro_f1_high_confidence": round(_macro_f1(yv, pred_hc, len(labels)), 5),
            "train_seconds": round(time.time() - t0, 1)}
    from paretoml.frontier import atomic_write

    atomic_write(out_dir / "model.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    for f in ("model.json", "model.safetensors"):  # package data must be world-readable
        (out_dir / f).chmod(0o644)
    return meta
