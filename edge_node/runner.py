"""Compatibility name: generation moved to `models.runner`, which edge and cloud share."""

from models.runner import (
    FULL_DEPTH,
    Generation,
    TaskOutcome,
    TokenTiming,
    encode_prompt,
    generate_with_exits,
    run_task,
)

__all__ = ["FULL_DEPTH", "Generation", "TaskOutcome", "TokenTiming", "encode_prompt", "generate_with_exits", "run_task"]
