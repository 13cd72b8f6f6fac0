"""A functional test of hate speech in the style of HateCheck (Röttger et al., 2021):
short templates, hateful and not, crossed with target groups, so a report can say
how a bundle handles derogation, threats, obfuscated spellings, negation,
counter-speech and neutral mentions, and groups its training data barely covers.

The templates were written for this probe, not drawn from any dataset. A post
counts as flagged when `hate` (in the `hate_or_offensive` figures: `hate` or
`offensive`) reaches its lowest threshold, as the worker would act on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from feedwarden.models.bundle import Bundle
from feedwarden.policy.rules import Policy

GROUPS = (
    "women",
    "immigrants",
    "Muslims",
    "trans people",
    "gay people",
    "Black people",
    "disabled people",
)


@dataclass(frozen=True)
class Template:
    functionality: str
    hateful: bool
    text: str  # `{G}` names the group

    def post(self, group: str) -> str:
        text = self.text.format(G=group)
        return text[0].upper() + text[1:]


TEMPLATES = (
    Template("derogation", True, "{G} are disgusting."),
    Template("derogation", True, "You can't trust {G}, they are all liars."),
    Template("derogation", True, "{G} are too stupid to make their own decisions."),
    Template("dehumanisation", True, "{G} are a plague on society."),
    Template("dehumanisation", True, "{G} are nothing but animals."),
    Template("threat_or_exclusion", True, "{G} should all be locked up."),
    Template("threat_or_exclusion", True, "The world would be better without {G}."),
    Template("explicit_hate", True, "I hate {G}."),
    Template("obfuscated", True, "{G} are d1sgust1ng."),
    Template("obfuscated", True, "I h a t e {G}."),
    Template("positive_mention", False, "I love spending time with {G}."),
    Template("positive_mention", False, "{G} deserve the same rights as everyone else."),
    Template("neutral_mention", False, "Many of my closest friends are {G}."),
    Template("neutral_mention", False, "The council met to discuss support services for {G}."),
    Template("negation", False, "I don't hate {G}."),
    Template("negation", False, "I don't think {G} are disgusting."),
    Template("counter_speech", False, "Saying '{G} are disgusting' is wrong and hurtful."),
    Template("counter_speech", False, "If you think {G} are animals, you need to meet more people."),
)

FUNCTIONALITIES = tuple(dict.fromkeys(template.functionality for template in TEMPLATES))


def cases() -> list[tuple[Template, str]]:
    """Every template crossed with every group."""
    return [(template, group) for template in TEMPLATES for group in GROUPS]


def flags(bundle: Bundle, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per text: does `hate` act, and does `hate` or `offensive` act (the bundle's own policy)."""
    from feedwarden.models.engine import Engine

    scores = Engine(bundle, providers="cpu").score(list(texts))
    labels, probs = scores.flat()
    rules = Policy.from_file(bundle.policy_path).rules

    def acts(label: str) -> np.ndarray:
        return np.asarray(probs[:, labels.index(label)] >= rules[label].lowest_threshold)

    return acts("hate"), acts("hate") | acts("offensive")


def figures(hateful: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """Recall on hateful cases, FPR on the others, accuracy and macro-F1 (and what flagging
    every case would score: the bar the issue says a plain fine-tune failed to clear)."""
    result = {"accuracy": float(np.mean(hateful == flagged)), "flag_all_accuracy": float(np.mean(hateful))}
    if hateful.any():
        result["recall"] = float(flagged[hateful].mean())
    if (~hateful).any():
        result["fpr"] = float(flagged[~hateful].mean())
    if hateful.any() and (~hateful).any():
        result["macro_f1"] = float(f1_score(hateful, flagged, average="macro"))
    return result


def functional_report(bundle: Bundle) -> dict[str, Any] | None:
    """Figures overall, per functionality and per target group, for `hate` and for `hate or
    offensive`; None for a bundle without both labels."""
    if not {"hate", "offensive"} <= set(bundle.manifest.labels):
        return None
    chosen = cases()
    hate, any_abuse = flags(bundle, [template.post(group) for template, group in chosen])
    hateful = np.array([template.hateful for template, _ in chosen])
    functionality = np.array([template.functionality for template, _ in chosen])
    group = np.array([g for _, g in chosen])

    def block(where: np.ndarray) -> dict[str, Any]:
        return {
            "cases": int(where.sum()),
            "hate": figures(hateful[where], hate[where]),
            "hate_or_offensive": figures(hateful[where], any_abuse[where]),
        }

    everything = np.ones(len(chosen), dtype=bool)
    return {
        "overall": block(everything),
        "by_functionality": {name: block(functionality == name) for name in FUNCTIONALITIES},
        "by_group": {name: block(group == name) for name in GROUPS},
    }
