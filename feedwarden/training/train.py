"""Fine-tuning: masked BCE with capped pos_weight, seeded, length-bucketed batches.

The epoch with the lowest masked validation loss is kept.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from feedwarden.models.normalize import Deobfuscator
from feedwarden.training.config import PipelineConfig
from feedwarden.training.model import TwoHeadClassifier, build_model, encoder_dir

log = logging.getLogger(__name__)


def load_tokenizer(max_length: int) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(encoder_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


@dataclass(frozen=True)
class Encoded:
    """Token ids per row (unpadded) with targets and masks [rows, labels]."""

    ids: list[list[int]]
    targets: np.ndarray
    mask: np.ndarray

    @classmethod
    def build(
        cls, tokenizer: Tokenizer, texts: Sequence[str], targets: np.ndarray, mask: np.ndarray
    ) -> Encoded:
        # Encoded as the serving engine reads posts (models/engine.py), obfuscated spellings undone.
        return cls([e.ids for e in Deobfuscator(tokenizer).encode(texts)], targets, mask)


def pad(ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(x) for x in ids))
    input_ids = torch.zeros((len(ids), width), dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[row, : len(seq)] = 1
    return input_ids, attention


def pos_weights(targets: np.ndarray, mask: np.ndarray, cap: float) -> np.ndarray:
    """neg/pos over annotated rows per label, clamped to [1, cap]."""
    positives = (targets * mask).sum(0)
    negatives = ((1.0 - targets) * mask).sum(0)
    ratio = negatives / np.maximum(positives, 1.0)
    return np.clip(ratio, 1.0, cap).astype(np.float32)


def masked_bce(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, pos_weight: torch.Tensor
) -> torch.Tensor:
    """Mean BCE over annotated (row, label) cells only."""
    loss = nn.functional.binary_cross_entropy_with_logits(
        logits, targets, pos_weight=pos_weight, reduction="none"
    )
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


def batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    """Shuffled batches of similar length: shuffle, sort within windows of 50 batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    chunks: list[list[int]] = []
    for start in range(0, len(order), window):
        part = sorted(order[start : start + window], key=lambda i: lengths[i])
        chunks.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(chunks)
    yield from chunks


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def forward_logits(model: TwoHeadClassifier, ids: Sequence[Sequence[int]]) -> torch.Tensor:
    input_ids, attention = pad(ids)
    safety, topic = model(input_ids, attention)
    return torch.cat([safety, topic], dim=1)


@torch.inference_mode()
def predict_logits(
    model: TwoHeadClassifier, ids: Sequence[Sequence[int]], batch_size: int = 128
) -> np.ndarray:
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros((len(ids), model.safety.out_features + model.topic.out_features), np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        out[rows] = forward_logits(model, [ids[i] for i in rows]).numpy()
    return out


def validation_loss(model: TwoHeadClassifier, data: Encoded) -> float:
    logits = torch.from_numpy(predict_logits(model, data.ids))
    ones = torch.ones(logits.shape[1])
    return float(masked_bce(logits, torch.from_numpy(data.targets), torch.from_numpy(data.mask), ones))


def train_model(
    train: Encoded, valid: Encoded, n_safety: int, n_topic: int, config: PipelineConfig, seed: int
) -> tuple[TwoHeadClassifier, list[dict[str, float]]]:
    """Fine-tune from the pretrained encoder; returns the best-validation-loss model and history."""
    seed_everything(config.seed)  # same head initialisation for every seed, so seeds can be averaged
    model = build_model(n_safety, n_topic)
    seed_everything(seed)
    weight = torch.from_numpy(pos_weights(train.targets, train.mask, config.pos_weight_cap))
    steps_per_epoch = -(-len(train.ids) // config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    optimizer, schedule = _optimizer(model, config, total)
    rng = random.Random(seed)
    lengths = [len(x) for x in train.ids]
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    step = 0
    deadline = time.monotonic() + config.time_budget_s if config.time_budget_s else float("inf")
    for epoch in range(config.epochs):
        started = time.monotonic()
        model.train()
        running = 0.0
        for number, rows in enumerate(batches(lengths, config.batch_size, rng), start=1):
            if step >= total or time.monotonic() > deadline:
                break
            logits = forward_logits(model, [train.ids[i] for i in rows])
            loss = masked_bce(
                logits, torch.from_numpy(train.targets[rows]), torch.from_numpy(train.mask[rows]), weight
            )
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            running += loss.item()
            if number % 50 == 0:
                log.info(
                    "seed %d epoch %d step %d/%d loss %.4f",
                    seed,
                    epoch + 1,
                    number,
                    steps_per_epoch,
                    running / number,
                )
        val = validation_loss(model, valid)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": running / max(1, number),
                "valid_loss": val,
                "seconds": time.monotonic() - started,
            }
        )
        log.info("seed %d epoch %d done: %s", seed, epoch + 1, history[-1])
        if best is None or val < best[0]:
            best = (val, copy.deepcopy(model.state_dict()))
        if step >= total or time.monotonic() > deadline:
            log.info(
                "seed %d stops after %d steps (%s)", seed, step, "time budget" if step < total else "done"
            )
            break
    assert best is not None
    model.load_state_dict(best[1])
    model.eval()
    return model, history


def _optimizer(
    model: TwoHeadClassifier, config: PipelineConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    heads = list(model.safety.parameters()) + list(model.topic.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": list(model.encoder.parameters()), "lr": config.encoder_lr},
            {"params": heads, "lr": config.head_lr},
        ],
        weight_decay=config.weight_decay,
    )
    warmup = max(1, int(total_steps * config.warmup_share))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
