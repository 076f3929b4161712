"""Copy candidates: the token that followed the last token (or last two) the previous time they occurred.

Much of what the five task types write is copied from the prompt or from earlier in the answer (an
entity, a span, a repeated phrase), and the full model copies it. An exit head that agrees with the
copy candidate is far more often right than one that does not (on the calibration split, layer 20:
0.88 against 0.44), so whether it agrees is an exit-policy feature (`ExitFeatures`). Token ids only:
no torch, O(1) per token.
"""

from __future__ import annotations

from collections.abc import Iterable

NO_CANDIDATE = -1  # the context has no earlier occurrence to copy from


class CopyIndex:
    """The tokens of one sequence so far and, for the last one and the last two, what followed them before."""

    def __init__(self, tokens: Iterable[int] = ()) -> None:
        self.tokens: list[int] = []
        self._after_one: dict[int, int] = {}  # token -> the token after its latest earlier occurrence
        self._after_two: dict[tuple[int, int], int] = {}
        self.extend(tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            token = int(token)
            if self.tokens:
                self._after_one[self.tokens[-1]] = token
            if len(self.tokens) >= 2:
                self._after_two[(self.tokens[-2], self.tokens[-1])] = token
            self.tokens.append(token)

    def truncate(self, length: int) -> None:
        """Forget tokens from `length` on (rolled-back drafts): the index is rebuilt from what stays."""
        if length < len(self.tokens):
            kept = self.tokens[:length]
            self.tokens, self._after_one, self._after_two = [], {}, {}
            self.extend(kept)

    def candidates(self) -> tuple[int, int]:
        """(after the last token, after the last two tokens) at their latest earlier occurrence, or NO_CANDIDATE."""
        if not self.tokens:
            return NO_CANDIDATE, NO_CANDIDATE
        after_one = self._after_one.get(self.tokens[-1], NO_CANDIDATE)
        after_two = self._after_two.get((self.tokens[-2], self.tokens[-1]), NO_CANDIDATE) if len(self.tokens) >= 2 \
            else NO_CANDIDATE
        return after_one, after_two


def candidates_along(tokens: list[int], first: int, last: int) -> list[tuple[int, int]]:
    """Copy candidates at positions first..last-1 of `tokens` (each from the tokens up to and including it)."""
    index = CopyIndex(tokens[:first])
    result = []
    for position in range(first, last):
        index.extend((tokens[position],))
        result.append(index.candidates())
    return result
