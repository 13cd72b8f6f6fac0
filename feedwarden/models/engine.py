"""The inference engine: HF tokenizers + onnxruntime over a verified bundle.

Texts are sorted by token length and cut into batches so each batch pads to
its own longest post, not the global one; results come back in input order.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, SimpleQueue

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from feedwarden.models.bundle import Bundle, BundleError
from feedwarden.models.normalize import Deobfuscator

log = logging.getLogger(__name__)

LABELS_METADATA = "feedwarden.labels"  # graph metadata key prefix naming a head's labels in output order
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_announced: set[str] = set()

# The OS name (Linux `comm`) of every thread doing engine work: the graph lanes and the
# worker's inference thread, and by inheritance the tokenizer's pool, which the first
# tokenization starts from the inference thread. Per-thread CPU in /proc/<pid>/task then
# tells the engine from the rest of the worker (`feedwarden bench`).
ENGINE_THREAD_NAME = "fw-engine"
_PR_SET_NAME = 15


def name_os_thread(name: str) -> None:
    """Name the calling thread for the OS (at most 15 bytes); a no-op off Linux."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def _cuda_usable() -> bool:
    """onnxruntime-gpu lists CUDA even without a GPU; ask for a device first."""
    return os.path.exists("/dev/nvidia0") or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))


def choose_providers(requested: str = "auto") -> list[str]:
    """`auto` takes CUDA only where a device is present, else CPU; `cpu`/`cuda` force one."""
    available = ort.get_available_providers()
    if requested == "cpu":
        return [CPU]
    if requested == "cuda":
        if CUDA not in available:
            raise RuntimeError("CUDA requested but this onnxruntime has no CUDA provider")
        return [CUDA, CPU]
    if requested != "auto":
        raise ValueError(f"unknown provider choice {requested!r}; use auto, cpu or cuda")
    return [CUDA, CPU] if CUDA in available and _cuda_usable() else [CPU]


@dataclass(frozen=True)
class Scores:
    """Calibrated probabilities per head, rows in input order."""

    labels: Mapping[str, tuple[str, ...]]
    probs: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return next(iter(self.probs.values())).shape[0]

    def flat(self) -> tuple[tuple[str, ...], np.ndarray]:
        """All heads side by side: (labels, probs[N, L])."""
        labels = tuple(label for head in self.labels for label in self.labels[head])
        return labels, np.concatenate([self.probs[h] for h in self.labels], axis=1)

    def row(self, i: int) -> dict[str, float]:
        """One post's probabilities by label (without `flat`'s copy of every row)."""
        return {
            label: float(self.probs[head][i, j])
            for head, labels in self.labels.items()
            for j, label in enumerate(labels)
        }


# Posts per graph run, length-sorted within what the caller hands over (a worker
# micro-batch). With the rewritten graph (models/export.py: fast_cpu_graph) a run's
# fixed cost is small and padding dominates; a small micro-batch sorts coarsely, so it
# pads less in smaller runs. Engine only, two lanes, medians of 3 (2026-12-05), runs
# of 1 / 2 / 4 / 8 posts: micro-batches of 8 (a paced worker's): 725 / 697 / 473 / -
# posts/s; of 16: 753 / 782 / 685 / -; of 39: - / 854 / 847 / 710; of 256:
# - / 903 / 929 / 904 (README, "Performance").
SMALL_MICRO_BATCH = 64


def graph_run_size(posts: int) -> int:
    """Posts per graph run for a micro-batch of `posts`."""
    return 2 if posts < SMALL_MICRO_BATCH else 4


# onnxruntime would fuse Add + LayerNormalization back into its SkipLayerNormalization,
# whose CPU kernel is 5x slower (models/export.py: fast_cpu_graph).
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


class Engine:
    """Scores texts with every head of a bundle, in length-sorted graph runs of `batch_size` posts
    (None: `graph_run_size` of each call)."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        batch_size: int | None = None,
        threads: int | None = None,
        providers: str = "auto",
    ) -> None:
        self.bundle = bundle
        # Dynamic int8 quantization scales activations per tensor, i.e. over the
        # whole batch: a post's scores would depend on its batch neighbours (up to
        # a few hundredths here), so a redelivered post could get another decision.
        # Such graphs run one post at a time: the same post, the same scores.
        self.row_independent = not quantizes_per_batch(bundle.model_path)
        self.batch_size = batch_size if self.row_independent else 1  # None: graph_run_size
        manifest = bundle.manifest
        self.tokenizer = Tokenizer.from_file(str(bundle.tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=manifest.max_length)
        self.deobfuscate = Deobfuscator(self.tokenizer)  # leet, spaced letters, styled Unicode
        # `threads` graph runs at once, one ORT thread each: small runs (8 posts, or
        # one) split over threads spend their time in the split's barriers, and one
        # preempted thread (the event loop and the Kafka client share these cores)
        # stalls the run it belongs to. Same scores either way. (README.md, "Performance")
        self.parallel_runs = threads or _usable_cores()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        # No spin-waiting between ops: the event loop, the Kafka client and the
        # tokenizer share these cores, and spinning idle ORT threads starve them
        # (about 2x slower inference on a loaded 2-core machine; see README.md, "Performance").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        chosen = choose_providers(providers)
        self.session = ort.InferenceSession(
            str(bundle.model_path), options, providers=chosen, disabled_optimizers=list(DISABLED_OPTIMIZERS)
        )
        serving = self.session.get_providers()[0]
        if serving not in _announced:
            log.info("onnxruntime serves on %s", serving)
            _announced.add(serving)
        self.provider = serving
        self._check_graph()
        platt = {
            h.name: np.array([manifest.calibration[label] for label in h.labels], np.float32)
            for h in manifest.heads
        }
        self._a = {head: ab[:, 0] for head, ab in platt.items()}
        self._pool: ThreadPoolExecutor | None = None
        self._b = {head: ab[:, 1] for head, ab in platt.items()}

    def _check_graph(self) -> None:
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        inputs = {i.name for i in self.session.get_inputs()}
        if inputs != {"input_ids", "attention_mask"}:
            raise BundleError(f"graph inputs {sorted(inputs)} are not input_ids, attention_mask")
        for head in self.bundle.manifest.heads:
            if head.output not in outputs:
                raise BundleError(f"graph has no output {head.output!r} for head {head.name}")
            width = outputs[head.output][-1]
            if width != len(head.labels):
                raise BundleError(
                    f"head {head.name}: graph gives {width} scores, manifest lists {len(head.labels)} labels"
                )
            # A graph that names its outputs' labels (metadata `feedwarden.labels.<output>`,
            # comma-separated) must name them in the manifest's order: a permutation has
            # the right width but would score every label under another's name.
            named = self.session.get_modelmeta().custom_metadata_map.get(f"{LABELS_METADATA}.{head.output}")
            if named is not None and tuple(named.split(",")) != head.labels:
                raise BundleError(
                    f"head {head.name}: graph labels {named.split(',')} disagree with the manifest's "
                    f"{list(head.labels)}"
                )

    @property
    def labels(self) -> dict[str, tuple[str, ...]]:
        return {h.name: h.labels for h in self.bundle.manifest.heads}

    def tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        return self.deobfuscate.encode(texts)

    def score(self, texts: Sequence[str]) -> Scores:
        return self.score_encoded(self.tokenize(texts))

    def score_encoded(self, encodings: Sequence[Encoding], *, alone: bool = False) -> Scores:
        """Calibrated probabilities; rows return in input order. `alone`: one post per graph
        run, the shape whose scores no batch neighbour or padding can move."""
        raw = self.logits_encoded(encodings, alone=alone)
        probs = {head: _sigmoid(raw[head] * self._a[head] + self._b[head]) for head in raw}
        return Scores(self.labels, probs)

    def logits(self, texts: Sequence[str]) -> Scores:
        """Raw (uncalibrated) logits, for re-fitting the calibration (`Scores.probs` holds logits)."""
        return Scores(self.labels, self.logits_encoded(self.tokenize(texts)))

    def logits_encoded(self, encodings: Sequence[Encoding], *, alone: bool = False) -> dict[str, np.ndarray]:
        """Run the graph over length-sorted batches (of one post each if `alone`); raw logits
        per head, rows in input order."""
        heads = self.bundle.manifest.heads
        n = len(encodings)
        logits = {h.name: np.empty((n, len(h.labels)), np.float32) for h in heads}
        order = sorted(range(n), key=lambda i: len(encodings[i].ids))
        size = 1 if alone else self.batch_size or graph_run_size(n)
        batches = [order[start : start + size] for start in range(0, n, size)]

        names = [h.output for h in heads]
        # Lanes pull runs from one queue, longest first: a lane that finishes early or a
        # lane that was preempted does not leave the other waiting on a fixed share.
        # (Interleaved fixed shares: 684 vs 732 posts/s on micro-batches of 39.)
        queue = SimpleQueue[list[int]]()
        for rows in reversed(batches):
            queue.put(rows)

        def run(_lane: int) -> None:
            while True:
                try:
                    rows = queue.get_nowait()
                except Empty:
                    return
                ids, mask = _pad([encodings[i] for i in rows])
                outputs = self.session.run(names, {"input_ids": ids, "attention_mask": mask})
                for head, out in zip(heads, outputs, strict=True):
                    logits[head.name][rows] = out

        lanes = min(self.parallel_runs, len(batches))
        if lanes <= 1:
            run(0)
        else:
            list(self._lanes().map(run, range(lanes)))
        return logits

    def _lanes(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.parallel_runs, thread_name_prefix="feedwarden-ort",
                                            initializer=name_os_thread, initargs=(ENGINE_THREAD_NAME,))
        return self._pool


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def quantizes_per_batch(model_path: Path) -> bool:
    """True if the graph quantizes activations dynamically (a per-tensor scale over the batch)."""
    return b"DynamicQuantizeLinear" in model_path.read_bytes()


def _pad(encodings: Sequence[Encoding]) -> tuple[np.ndarray, np.ndarray]:
    width = max(1, max(len(e.ids) for e in encodings))
    ids = np.zeros((len(encodings), width), np.int64)
    mask = np.zeros((len(encodings), width), np.int64)
    for row, enc in enumerate(encodings):
        ids[row, : len(enc.ids)] = enc.ids
        mask[row, : len(enc.ids)] = 1
    return ids, mask


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))
