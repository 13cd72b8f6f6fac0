"""Pipeline settings: one dataclass, a full and a `tiny` (CI) preset."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from feedwarden.training.mixing import MixConfig


@dataclass(frozen=True)
class PipelineConfig:
    seed: int = 13
    seeds: tuple[int, ...] = (13,)
    max_length: int = 64
    epochs: int = 3
    batch_size: int = 32
    encoder_lr: float = 5e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_share: float = 0.1
    pos_weight_cap: float = 5.0
    max_steps: int | None = None
    # Wall-clock training budget per seed; the best epoch so far is kept when it runs out.
    time_budget_s: float | None = None
    min_support: int = 25
    hate_train_rows: int = 5000
    offensive_train_rows: int = 6000
    davidson_train_rows: int = 500
    tweeteval_calib_rows: int = 800
    calib_clean_share: float = 0.95
    hide_budget_ratio: float = 0.25
    confidence: float = 0.9
    int8_max_abs_delta: float = 0.2
    int8_min_agreement: float = 0.97
    int8_max_f1_drop: float = 0.02
    # auto: int8 when it passes the parity gate, else fp32; int8/fp32 force a variant
    # (a forced int8 keeps its failed parity figures in the manifest).
    variant: str = "auto"
    janitr_rows: int | None = None
    eval_rows: int | None = None
    mix: MixConfig = field(default_factory=MixConfig)

    @classmethod
    def tiny(cls) -> PipelineConfig:
        """A few hundred rows, one epoch, few steps: the pipeline end to end for CI."""
        return cls(
            epochs=1,
            max_steps=25,
            janitr_rows=300,
            eval_rows=500,
            hate_train_rows=100,
            offensive_train_rows=100,
            davidson_train_rows=50,
            tweeteval_calib_rows=150,
            min_support=5,
            mix=MixConfig(floor=10, cap=200, clean_rows=150, hard_negative_share=0.5),
        )

    @classmethod
    def from_dict(cls, recorded: Mapping[str, Any] | None) -> PipelineConfig:
        """The settings a run or bundle recorded (`to_dict`; a manifest's `metrics.config`).
        They fix the corpus splits, so calib and valid never hold the run's training rows.
        Unknown keys are ignored; None gives today's defaults."""
        if not recorded:
            return cls()
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in recorded.items() if key in known}
        if isinstance(values.get("mix"), Mapping):
            values["mix"] = MixConfig(**values["mix"])
        if "seeds" in values:
            values["seeds"] = tuple(values["seeds"])
        return cls(**values)

    def with_overrides(self, **changes: Any) -> PipelineConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
