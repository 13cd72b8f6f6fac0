"""`feedwarden train` flags become the pipeline settings they name; unset flags keep the defaults."""

from __future__ import annotations

from feedwarden.cli import build_parser
from feedwarden.training.cli import _config
from feedwarden.training.config import PipelineConfig


def _parsed(*flags: str) -> PipelineConfig:
    return _config(build_parser().parse_args(["train", *flags]))


def test_corpus_and_mix_sizes_are_overridden() -> None:
    config = _parsed("--hate-rows", "9000", "--offensive-rows", "12000", "--mix-cap", "5000",
                     "--clean-rows", "8000", "--obfuscated-share", "0.1", "--target-swap-share", "0.25",
                     "--seeds", "13", "29")
    assert (config.hate_train_rows, config.offensive_train_rows) == (9000, 12000)
    assert (config.mix.cap, config.mix.clean_rows, config.mix.obfuscated_share) == (5000, 8000, 0.1)
    assert config.mix.target_swap_share == 0.25
    assert config.mix.floor == PipelineConfig().mix.floor
    assert (config.seeds, config.seed) == ((13, 29), 13)


def test_no_flags_give_the_defaults() -> None:
    assert _parsed() == PipelineConfig()
    assert _parsed("--tiny") == PipelineConfig.tiny()
