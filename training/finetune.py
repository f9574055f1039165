"""Fine-tuning a sentence encoder before its heads are fitted, two ways:

- `pairs` (SetFit): pairs of training messages with the same label (positives) and different labels
  (negatives) teach the encoder that "the mug arrived broken" and "the parcel arrived, nothing broken" are
  far apart even though they share most words. The loss is SetFit's: the squared error between the pair's
  cosine and 1 (same label) or 0 (different).
- `classify`: the encoder is trained end to end under two temporary linear layers (risk on every message,
  claim type on Tier-1 messages), with balanced cross-entropy; the layers are then thrown away.

Either way the heads are then fitted on the fine-tuned embeddings, exactly as for a frozen encoder, so the
served graph keeps its shape: encoder -> embedding -> linear heads.

Works for every encoder that runs a `sentence_transformers.SentenceTransformer` (`encoder.model`): the
trainable weights are the encoder's own (`Encoder.trainable`), the rest stays frozen.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from training.encoders import Encoder

log = logging.getLogger("triage.finetune")


@dataclass(frozen=True)
class FinetuneConfig:
    objective: str = "pairs"  # "pairs" (SetFit) or "classify" (cross-entropy through temporary heads)
    pairs_per_message: int = 2  # SetFit's "iterations": each message gets this many positives and negatives
    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 2e-5
    seed: int = 13

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"fine-tuning objective {self.objective!r}: expected one of {', '.join(OBJECTIVES)}")


OBJECTIVES = ("pairs", "classify")


def make_pairs(labels: Sequence[str], per_message: int, seed: int) -> list[tuple[int, int, float]]:
    """(i, j, target): for every message, `per_message` partners with its label (1.0) and as many without
    (0.0), drawn at random; a label with a single message gets negatives only."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(lab, []).append(i)
    everyone = list(range(len(labels)))
    pairs: list[tuple[int, int, float]] = []
    for i, lab in enumerate(labels):
        same = by_label[lab]
        for _ in range(per_message):
            if len(same) > 1:
                j = rng.choice(same)
                while j == i:
                    j = rng.choice(same)
                pairs.append((i, j, 1.0))
            j = rng.choice(everyone)
            while labels[j] == lab:
                j = rng.choice(everyone)
            pairs.append((i, j, 0.0))
    rng.shuffle(pairs)
    return pairs


def finetune(
    encoder: Encoder,
    texts: Sequence[str],
    labels: Sequence[str],
    cfg: FinetuneConfig,
    progress: bool = True,
    risks: Sequence[str] | None = None,
) -> dict[str, float]:
    """Fine-tune `encoder` in place; return what it did (steps, loss, seconds). `labels` are what pairs
    share (the claim type); the `classify` objective also needs each message's `risks`."""
    if len(set(labels)) < 2:
        raise ValueError("fine-tuning needs at least two labels")
    torch.manual_seed(cfg.seed)
    if cfg.objective == "classify":
        if risks is None:
            raise ValueError("the classify objective needs the risk of every message")
        return _classify(encoder, texts, risks, labels, cfg, progress)
    return _pairs(encoder, texts, labels, cfg, progress)


def _embed(encoder: Encoder, texts: Sequence[str]) -> torch.Tensor:
    """Embeddings of `texts` with gradients (the encoder in training mode)."""
    model = encoder.model
    return model(model.preprocess([encoder.prefix + t for t in texts]))["sentence_embedding"]


def _optimise(
    encoder: Encoder, groups: list[dict[str, Any]], losses: Iterator[torch.Tensor], steps: int, progress: bool
) -> dict[str, float]:
    """The loop both objectives share: AdamW over `groups` (the encoder's trainable weights first), a linear
    decay to zero over `steps`, one step per loss `losses` yields; the encoder back in eval mode, frozen,
    whatever happens."""
    params = encoder.trainable()
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(groups)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1.0 - s / max(1, steps)))
    bar = tqdm(total=steps, desc="fine-tuning", disable=not progress)
    encoder.model.train()
    started, seen = time.perf_counter(), []
    try:
        for loss in losses:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            seen.append(float(loss.detach()))
            bar.update()
            bar.set_postfix(loss=f"{np.mean(seen[-50:]):.4f}")
    finally:
        bar.close()
        encoder.model.eval()
        for p in params:
            p.requires_grad_(False)
    return {
        "steps": float(len(seen)),
        "final_loss": float(np.mean(seen[-50:])) if seen else float("nan"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _pairs(
    encoder: Encoder, texts: Sequence[str], labels: Sequence[str], cfg: FinetuneConfig, progress: bool
) -> dict[str, float]:
    """SetFit: the squared error between each pair's cosine and 1 (same label) or 0 (different)."""
    pairs = make_pairs(labels, cfg.pairs_per_message, cfg.seed)

    def losses() -> Iterator[torch.Tensor]:
        for epoch in range(cfg.epochs):
            order = pairs if epoch == 0 else random.Random(cfg.seed + epoch).sample(pairs, len(pairs))
            for start in range(0, len(order), cfg.batch_size):
                batch = order[start : start + cfg.batch_size]
                idx = sorted({k for i, j, _ in batch for k in (i, j)})
                where = {k: n for n, k in enumerate(idx)}
                emb = _embed(encoder, [texts[k] for k in idx])
                a = emb[[where[i] for i, _, _ in batch]]
                b = emb[[where[j] for _, j, _ in batch]]
                target = torch.tensor([t for _, _, t in batch], dtype=emb.dtype)
                yield torch.nn.functional.mse_loss(torch.cosine_similarity(a, b), target)

    steps = cfg.epochs * ((len(pairs) + cfg.batch_size - 1) // cfg.batch_size)
    groups = [{"params": encoder.trainable(), "lr": cfg.learning_rate}]
    return {"pairs": float(len(pairs))} | _optimise(encoder, groups, losses(), steps, progress)


def _class_weights(y: np.ndarray, k: int) -> torch.Tensor:
    counts = np.bincount(y, minlength=k).astype(np.float64)
    return torch.tensor(len(y) / (k * np.maximum(counts, 1.0)), dtype=torch.float32)


def _classify(
    encoder: Encoder,
    texts: Sequence[str],
    risks: Sequence[str],
    grounds: Sequence[str],
    cfg: FinetuneConfig,
    progress: bool,
) -> dict[str, float]:
    """End to end under temporary linear layers: balanced cross-entropy on risk (every message) plus claim
    type (Tier-1 messages, `none` excluded)."""
    risk_names = sorted(set(risks))
    ground_names = sorted({g for g in grounds if g != "none"})
    y_risk = np.array([risk_names.index(r) for r in risks])
    y_ground = np.array([ground_names.index(g) if g in ground_names else -100 for g in grounds])
    risk_layer = torch.nn.Linear(encoder.dim, len(risk_names))
    ground_layer = torch.nn.Linear(encoder.dim, max(1, len(ground_names)))
    risk_loss = torch.nn.CrossEntropyLoss(weight=_class_weights(y_risk, len(risk_names)))
    ground_loss = torch.nn.CrossEntropyLoss(
        weight=_class_weights(y_ground[y_ground >= 0], max(1, len(ground_names))), ignore_index=-100
    )
    rng = np.random.default_rng(cfg.seed)

    def losses() -> Iterator[torch.Tensor]:
        for _ in range(cfg.epochs):
            order = rng.permutation(len(texts))
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                emb = _embed(encoder, [texts[i] for i in idx])
                loss = risk_loss(risk_layer(emb), torch.from_numpy(y_risk[idx]))
                g = torch.from_numpy(y_ground[idx])
                yield loss + ground_loss(ground_layer(emb), g) if (g >= 0).any() else loss

    steps = cfg.epochs * ((len(texts) + cfg.batch_size - 1) // cfg.batch_size)
    groups = [
        {"params": encoder.trainable(), "lr": cfg.learning_rate},
        {"params": [*risk_layer.parameters(), *ground_layer.parameters()], "lr": 1e-2},
    ]
    return {"messages": float(len(texts))} | _optimise(encoder, groups, losses(), steps, progress)
