"""Policy: per-label rules turning calibrated scores into hide/warn/badge/allow."""

from feedwarden.policy.rules import ACTIONS, Decision, LabelHit, Policy, PolicyError, Rule

__all__ = ["ACTIONS", "Decision", "LabelHit", "Policy", "PolicyError", "Rule"]
