from __future__ import annotations

from models.exits.copying import NO_CANDIDATE, CopyIndex, candidates_along


def brute_force(tokens: list[int]) -> tuple[int, int]:
    """The definition: the token after the latest earlier occurrence of the last token / last two tokens."""
    last = len(tokens) - 1
    one = next((tokens[q + 1] for q in range(last - 1, -1, -1) if tokens[q] == tokens[last]), NO_CANDIDATE)
    two = next((tokens[q + 1] for q in range(last - 1, 0, -1)
                if tokens[q] == tokens[last] and tokens[q - 1] == tokens[last - 1]), NO_CANDIDATE)
    return one, two


def test_candidates_are_what_followed_the_latest_earlier_occurrence() -> None:
    tokens = [5, 7, 9, 5, 8, 3, 7, 9, 5, 7]
    index = CopyIndex()
    for end in range(1, len(tokens) + 1):
        index.extend(tokens[end - 1:end])
        assert index.candidates() == brute_force(tokens[:end]), tokens[:end]
    # after "... 5 7": 7 was last followed by 9 (position 6), and "5 7" by 9 (position 0)
    assert index.candidates() == (9, 9)


def test_a_new_token_has_no_candidate() -> None:
    assert CopyIndex([1, 2, 3]).candidates() == (NO_CANDIDATE, NO_CANDIDATE)
    assert CopyIndex().candidates() == (NO_CANDIDATE, NO_CANDIDATE)


def test_truncate_forgets_rolled_back_tokens() -> None:
    index = CopyIndex([4, 1, 2, 4, 6, 4])
    assert index.candidates() == (6, NO_CANDIDATE)
    index.truncate(4)  # [4, 1, 2, 4]: the 4 -> 6 continuation was rolled back
    assert index.candidates() == (1, NO_CANDIDATE)
    assert CopyIndex([4, 1, 2, 4]).candidates() == index.candidates() and len(index) == 4


def test_candidates_along_match_an_index_fed_token_by_token() -> None:
    tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 9, 1, 4, 1]
    along = candidates_along(tokens, 5, len(tokens))
    assert along == [brute_force(tokens[:end + 1]) for end in range(5, len(tokens))]
