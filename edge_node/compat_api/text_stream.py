"""Streaming text from generated token ids: deltas that never split a character and that end before a stop string.

Pure: it is given a `detokenize(token_ids) -> str` and the ids so far, never a model. Decoding the
whole answer again for every token (a few hundred at most on the edge) keeps multi-token
characters and the tokenizer's spacing exactly as the final text has them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

_INCOMPLETE = "\ufffd"  # what a byte-level tokenizer decodes an unfinished UTF-8 sequence to


class TextStream:
    """Feed token ids one by one; each `push` returns the text that is now safe to send."""

    def __init__(self, detokenize: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> None:
        self.detokenize = detokenize
        self.stop = tuple(s for s in stop if s)
        self.token_ids: list[int] = []
        self.sent = ""  # text already handed out
        self.stopped = False  # a stop string was reached: the answer is over

    def push(self, token_id: int) -> str:
        """Add one token; returns the new text safe to send ("" while a character or a stop string is open)."""
        if self.stopped:
            return ""
        self.token_ids.append(token_id)
        text = self.detokenize(self.token_ids)
        if text.endswith(_INCOMPLETE):
            return ""
        cut = self._stop_at(text)
        if cut is not None:
            self.stopped = True
            return self._advance(text[:cut])
        return self._advance(text[: len(text) - self._held_back(text)])

    def finish(self) -> str:
        """The rest once generation has ended (what was held back for a stop string that never came)."""
        if self.stopped:
            return ""
        return self._advance(self.detokenize(self.token_ids).rstrip(_INCOMPLETE))

    @property
    def text(self) -> str:
        return self.sent

    def _advance(self, safe: str) -> str:
        if not safe.startswith(self.sent) or len(safe) <= len(self.sent):
            # The tokenizer re-spaced earlier text (never seen with SmolLM2's byte-level BPE): send nothing
            # rather than contradict what the client has.
            return ""
        delta, self.sent = safe[len(self.sent):], safe
        return delta

    def _stop_at(self, text: str) -> int | None:
        """Where the first stop string begins in the unsent tail's reach, or None."""
        start = max(0, len(self.sent) - max((len(s) for s in self.stop), default=0))
        hits = [index for s in self.stop if (index := text.find(s, start)) >= 0]
        return min(hits) if hits else None

    def _held_back(self, text: str) -> int:
        """Characters at the end of `text` that could be the start of a stop string."""
        held = 0
        for s in self.stop:
            for length in range(min(len(s) - 1, len(text)), held, -1):
                if text.endswith(s[:length]):
                    held = length
                    break
        return held
