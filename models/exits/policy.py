"""Exit-or-continue decisions for early-exit heads: pure logic over plain numbers (no torch).

At each exit layer the edge computes `ExitFeatures` from that head's probabilities (and the
previous head's); the policy scores them with a per-exit logistic model fitted on the calibration
split and exits when the score reaches that exit's threshold. With weights (1, 0, ..., 0) and
bias 0 the score is the plain top probability, i.e. a classic confidence threshold.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExitFeatures:
    top_prob: float  # highest next-token probability of this head
    margin: float  # top minus second probability
    entropy: float  # nats
    agrees_with_previous: float  # 1.0 if argmax equals the previous exit head's argmax, else 0.0
    previous_top_prob: float  # previous exit head's top probability (0.0 at the first exit)
    # 1.0 if argmax is the copy candidate after the last token / last two tokens (models/exits/copying.py)
    matches_copy_one: float
    matches_copy_two: float

    @staticmethod
    def names() -> tuple[str, ...]:
        return tuple(f.name for f in fields(ExitFeatures))

    def as_tuple(self) -> tuple[float, ...]:
        return tuple(getattr(self, name) for name in self.names())


@dataclass(frozen=True, slots=True)
class ExitRule:
    exit_layer: int  # decoder layers run before this head
    weights: tuple[float, ...]  # one per ExitFeatures field
    bias: float
    threshold: float  # exit when score >= threshold; > 1 disables this exit

    def __post_init__(self) -> None:
        if len(self.weights) != len(ExitFeatures.names()):
            raise ValueError(f"exit {self.exit_layer}: {len(self.weights)} weights, want {len(ExitFeatures.names())}")

    def score(self, features: ExitFeatures | tuple[float, ...]) -> float:
        """Logistic score in (0, 1); with the identity rule it is `top_prob` itself."""
        values = features.as_tuple() if isinstance(features, ExitFeatures) else features
        if self.is_identity():
            return values[0]
        z = self.bias + sum(w * v for w, v in zip(self.weights, values, strict=True))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def is_identity(self) -> bool:
        return self.bias == 0.0 and self.weights == (1.0,) + (0.0,) * (len(self.weights) - 1)


@dataclass(frozen=True, slots=True)
class ExitPolicy:
    rules: tuple[ExitRule, ...]  # ascending exit layers
    # Rules for drafting heads deeper than the exits (`train-exits --add-draft-heads`): only a speculative
    # edge drafting at a deeper split consults them (edge_node/collab/generation.py `exit_policy_for`); every
    # other decision uses `rules` alone.
    draft_rules: tuple[ExitRule, ...] = ()

    def __post_init__(self) -> None:
        for rules in (self.rules, self.draft_rules):
            layers = [rule.exit_layer for rule in rules]
            if layers != sorted(set(layers)):
                raise ValueError(f"exit layers must be unique and ascending: {layers}")
        if self.rules and self.draft_rules and self.draft_rules[0].exit_layer <= self.rules[-1].exit_layer:
            raise ValueError(f"draft rules must lie deeper than the exits: {[r.exit_layer for r in self.draft_rules]}")

    def below(self, num_layers: int) -> ExitPolicy | None:
        """The rules (and draft rules) at layers < `num_layers` (a shallower variant's), or None if no exit is left."""
        rules = tuple(rule for rule in self.rules if rule.exit_layer < num_layers)
        drafts = tuple(rule for rule in self.draft_rules if rule.exit_layer < num_layers)
        return ExitPolicy(rules, drafts) if rules else None

    @property
    def exit_layers(self) -> tuple[int, ...]:
        return tuple(rule.exit_layer for rule in self.rules)

    def rule(self, exit_layer: int) -> ExitRule:
        """Raises KeyError if the policy has no rule for `exit_layer`."""
        for rule in self.rules:
            if rule.exit_layer == exit_layer:
                return rule
        raise KeyError(f"no exit rule for layer {exit_layer}; have {self.exit_layers}")

    def should_exit(self, exit_layer: int, features: ExitFeatures | tuple[float, ...]) -> bool:
        """True to emit this head's argmax token now, False to continue to deeper layers."""
        return self.exit_score(exit_layer, features) is not None

    def exit_score(self, exit_layer: int, features: ExitFeatures | tuple[float, ...]) -> float | None:
        """The rule's score when it says exit here (a calibrated probability of agreeing), else None."""
        rule = self.rule(exit_layer)
        score = rule.score(features)
        return score if score >= rule.threshold else None

    def with_thresholds(self, thresholds: dict[int, float]) -> ExitPolicy:
        return ExitPolicy(tuple(
            ExitRule(r.exit_layer, r.weights, r.bias, thresholds.get(r.exit_layer, r.threshold)) for r in self.rules
        ), self.draft_rules)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"features": list(ExitFeatures.names()), "rules": [asdict(rule) for rule in self.rules]}
        if self.draft_rules:
            data["draft_rules"] = [asdict(rule) for rule in self.draft_rules]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExitPolicy:
        """Raises ValueError if the data names other features or malformed rules.

        A policy fitted on fewer features (an earlier version's, a prefix of today's) loads with weight 0
        on the features it lacks: its decisions are unchanged.
        """
        names, current = tuple(data.get("features", ())), ExitFeatures.names()
        if not names or names != current[:len(names)]:
            raise ValueError(f"policy features {data.get('features')} differ from {current}")
        missing = (0.0,) * (len(current) - len(names))
        if missing:
            logger.info("exit policy without features %s: weight 0 on them", current[len(names):])

        def parsed(items: list[dict[str, Any]]) -> tuple[ExitRule, ...]:
            return tuple(ExitRule(int(r["exit_layer"]), tuple(float(w) for w in r["weights"]) + missing,
                                  float(r["bias"]), float(r["threshold"])) for r in items)

        try:
            rules, drafts = parsed(data["rules"]), parsed(data.get("draft_rules", []))
        except (KeyError, TypeError) as error:
            raise ValueError(f"malformed exit policy: {error}") from error
        return cls(rules, drafts)

    @classmethod
    def from_json(cls, text: str) -> ExitPolicy:
        return cls.from_dict(json.loads(text))

    @classmethod
    def top_probability(cls, thresholds: dict[int, float]) -> ExitPolicy:
        """The classic policy: exit when the head's top probability >= threshold."""
        identity = (1.0,) + (0.0,) * (len(ExitFeatures.names()) - 1)
        return cls(tuple(ExitRule(layer, identity, 0.0, thresholds[layer]) for layer in sorted(thresholds)))


def first_exit(policy: ExitPolicy, features_by_layer: dict[int, ExitFeatures]) -> int | None:
    """The first exit layer (ascending) whose rule says exit, or None to run the full model."""
    for rule in policy.rules:
        features = features_by_layer.get(rule.exit_layer)
        if features is not None and policy.should_exit(rule.exit_layer, features):
            return rule.exit_layer
    return None
