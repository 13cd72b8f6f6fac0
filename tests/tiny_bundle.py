"""A tiny but real model bundle for broker-free fast tests.

The graph is a keyword detector: every vocabulary word carries a logit per
label (+8 for the labels it triggers, -8 otherwise), padded positions are
masked out and the max over tokens is taken. So "free crypto scam" scores
high on scam and topic_crypto, and anything else stays near zero, which
makes expected decisions easy to state in tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, pre_tokenizers

from feedwarden.models.bundle import Bundle, Head, Manifest, write_bundle

SAFETY = ("scam", "phishing", "spam", "promo", "hate", "offensive")
TOPIC = ("topic_crypto", "topic_news", "topic_sports")
TRIGGERS = {
    "scam": ("scam",),
    "giveaway": ("scam", "promo"),
    "password": ("phishing",),
    "verify": ("phishing",),
    "buy": ("spam", "promo"),
    "discount": ("promo",),
    "hate": ("hate", "offensive"),
    "idiot": ("offensive",),
    "bitcoin": ("topic_crypto",),
    "crypto": ("topic_crypto",),
    "election": ("topic_news",),
    "match": ("topic_sports",),
}
PLAIN_WORDS = ("the", "a", "hello", "world", "lovely", "day", "free")
POLICY = {
    "version": "tiny-policy-1",
    "rules": {
        "scam": {"head": "safety", "thresholds": {"hide": 0.9, "warn": 0.7}, "tier": "critical"},
        "phishing": {"head": "safety", "thresholds": {"hide": 0.9}, "tier": "critical"},
        "spam": {"head": "safety", "thresholds": {"warn": 0.8, "badge": 0.5}},
        "promo": {"head": "safety", "thresholds": {"badge": 0.6}},
        "hate": {"head": "safety", "thresholds": {"hide": 0.95, "warn": 0.8}, "tier": "critical"},
        "offensive": {"head": "safety", "thresholds": {"warn": 0.9, "badge": 0.6}},
        "topic_crypto": {"head": "topic", "thresholds": {"badge": 0.5}, "tier": "informational"},
    },
}
MAX_LENGTH = 32


def _vocab() -> dict[str, int]:
    words = ["[PAD]", "[UNK]", *PLAIN_WORDS, *TRIGGERS]
    return {word: index for index, word in enumerate(words)}


def _tokenizer(path: Path) -> None:
    tokenizer = Tokenizer(models.WordLevel(_vocab(), unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))


def _table() -> np.ndarray:
    labels = SAFETY + TOPIC
    table = np.full((len(_vocab()), len(labels)), -8.0, np.float32)
    for word, fired in TRIGGERS.items():
        for label in fired:
            table[_vocab()[word], labels.index(label)] = 8.0
    return table


def _graph(path: Path) -> None:
    n_safety, n_all = len(SAFETY), len(SAFETY) + len(TOPIC)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["per_token"]),  # [N, T, L]
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "last_axis"], ["mask3"]),  # [N, T, 1]
        # Padding must never win the max: push it far below any real logit.
        helper.make_node("Sub", ["mask3", "one"], ["pad_neg"]),
        helper.make_node("Mul", ["pad_neg", "big"], ["pad_penalty"]),
        helper.make_node("Add", ["per_token", "pad_penalty"], ["masked"]),
        helper.make_node("ReduceMax", ["masked", "token_axis"], ["pooled"], keepdims=0),  # [N, L]
        helper.make_node("Slice", ["pooled", "s_start", "s_end", "label_axis"], ["safety_logits"]),
        helper.make_node("Slice", ["pooled", "s_end", "t_end", "label_axis"], ["topic_logits"]),
    ]
    init = [
        numpy_helper.from_array(_table(), "table"),
        numpy_helper.from_array(np.array([-1], np.int64), "last_axis"),
        numpy_helper.from_array(np.array([1], np.int64), "token_axis"),
        numpy_helper.from_array(np.array([1], np.int64), "label_axis"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(1000.0, np.float32), "big"),
        numpy_helper.from_array(np.array([0], np.int64), "s_start"),
        numpy_helper.from_array(np.array([n_safety], np.int64), "s_end"),
        numpy_helper.from_array(np.array([n_all], np.int64), "t_end"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_keywords",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "T"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "T"]),
        ],
        [
            helper.make_tensor_value_info("safety_logits", TensorProto.FLOAT, ["N", len(SAFETY)]),
            helper.make_tensor_value_info("topic_logits", TensorProto.FLOAT, ["N", len(TOPIC)]),
        ],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_tiny_bundle(dest: Path) -> Bundle:
    """Write the keyword bundle to `dest` (which must not exist yet)."""
    scratch = dest.parent / f".{dest.name}-sources"
    scratch.mkdir(parents=True)
    _graph(scratch / "model.onnx")
    _tokenizer(scratch / "tokenizer.json")
    (scratch / "policy.json").write_text(json.dumps(POLICY), encoding="utf-8")
    manifest = Manifest(
        name="tiny-keywords",
        version="tiny-1",
        created_at="2026-01-01T00:00:00Z",
        max_length=MAX_LENGTH,
        heads=(Head("safety", "safety_logits", SAFETY), Head("topic", "topic_logits", TOPIC)),
        calibration={label: (1.0, 0.0) for label in SAFETY + TOPIC},
        files={},
    )
    names = ("model.onnx", "tokenizer.json", "policy.json")
    return write_bundle(dest, manifest, {name: scratch / name for name in names})
