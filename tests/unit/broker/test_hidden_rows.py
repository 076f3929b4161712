"""Hidden-state row payloads: fp16 as sent, int8 with outliers apart and the rest spread and scaled per group."""

import numpy as np
import pytest

from broker.messages.codec import decode
from broker.messages.hidden_rows import decode_rows, encode_rows
from broker.messages.inference import (
    INT8_OUTLIERS,
    INT8_SCALE_BYTES,
    ContextChunk,
    DraftVerify,
    hidden_bytes,
    int8_groups,
)


def _without_outliers(rows: np.ndarray) -> np.ndarray:
    rest = rows.copy()
    np.put_along_axis(rest, np.argsort(-np.abs(rows), axis=1)[:, :INT8_OUTLIERS], 0.0, axis=1)
    return rest


def test_int8_rows_round_trip_within_the_quantization_bound_of_what_the_outliers_leave():
    rows = np.random.default_rng(0).normal(size=(5, 576)).astype(np.float32) * np.array([[1], [10], [0.1], [3], [50]])
    data = encode_rows(rows, "int8")
    assert len(data) == 5 * (576 + 2 * 9 + 4 * INT8_OUTLIERS) == hidden_bytes(5, 576, "int8")
    decoded = decode_rows(data, 5, 576, "int8")
    # The transform is orthogonal: the error's norm is the quantization error's, at most half a step (max / 127)
    # on each of a group's 64 values, and a group's max is at most its norm: 4 / 127 of what is left to quantize.
    bound = 4 / 127 * np.linalg.norm(_without_outliers(rows), axis=1) * 1.001  # fp16 scales round up to 1 / 2048
    assert np.all(np.linalg.norm(decoded - rows, axis=1) <= bound)
    assert np.all(np.abs(decoded - rows).max(axis=1) < np.abs(rows).max(axis=1) / 127)  # finer than one step a row


def test_large_channels_beyond_the_outliers_do_not_set_the_step_of_the_others():
    rows = np.random.default_rng(3).normal(size=(4, 576)).astype(np.float32)
    rows[:, 10:22] = 30.0  # twelve large channels: six travel apart, six stay for the transform to spread
    decoded = decode_rows(encode_rows(rows, "int8"), 4, 576, "int8")
    assert np.abs(decoded - rows).max() < 30.0 / 127 / 4  # one scale over the rest would give 30 / 127 / 2


def test_int8_outlier_channels_keep_fp16_precision_and_spare_the_others():
    rows = np.random.default_rng(1).normal(size=(3, 64)).astype(np.float32)
    rows[:, 7] = 300.0  # a massive-activation channel, as in a decoder's residual stream
    decoded = decode_rows(encode_rows(rows, "int8"), 3, 64, "int8")
    assert np.all(decoded[:, 7] == 300.0)
    assert np.abs(decoded - rows).max() < 0.05  # without the outlier apart the step would be 300 / 127


def test_more_outliers_keep_more_channels_exact_and_cost_four_bytes_each():
    rows = np.random.default_rng(2).normal(size=(4, 64)).astype(np.float32)
    rows[:, :8] = np.arange(1, 9, dtype=np.float32) * 100.0  # eight massive channels
    few = decode_rows(encode_rows(rows, "int8", 4), 4, 64, "int8", 4)
    many_data = encode_rows(rows, "int8", 8)
    assert len(many_data) == len(encode_rows(rows, "int8", 4)) + 4 * 4 * 4
    many = decode_rows(many_data, 4, 64, "int8", 8)
    assert np.all(many[:, :8] == rows[:, :8])  # 100..800 are exact in fp16
    assert np.abs(many - rows).max() < np.abs(few - rows).max() / 10  # the rest no longer quantized on a 400-wide step


def test_an_all_zero_row_stays_zero_in_int8():
    decoded = decode_rows(encode_rows(np.zeros((2, 8), dtype=np.float32), "int8"), 2, 8, "int8")
    assert not decoded.any()


def test_fp16_rows_decode_as_sent():
    rows = np.arange(12, dtype=np.float16).reshape(3, 4)
    assert np.array_equal(decode_rows(encode_rows(rows, "fp16"), 3, 4, "fp16"), rows)


def test_an_int8_chunk_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="expected"):
        ContextChunk("s", 0, 0, 2, 8, bytes(2 * 8), "int8")  # scales and outliers missing
    ContextChunk("s", 0, 0, 2, 8, bytes(2 * (8 + 2 + 4 * INT8_OUTLIERS)), "int8")


def test_an_int8_outlier_channel_beyond_the_row_is_refused():
    data = bytearray(encode_rows(np.ones((1, 8), dtype=np.float32), "int8"))
    first_channel = 8 + INT8_SCALE_BYTES * int8_groups(8)
    data[first_channel : first_channel + 2] = (9).to_bytes(2, "little")  # first outlier channel -> 9 of 8
    with pytest.raises(ValueError, match="beyond hidden size"):
        decode_rows(bytes(data), 1, 8, "int8")


def test_a_sampled_verification_needs_the_draft_distribution():
    with pytest.raises(ValueError, match="draft_probabilities"):
        DraftVerify("s", "w", 0, 5, (1, 2), temperature=0.7)
    DraftVerify("s", "w", 0, 5, (1,), temperature=0.7, draft_probabilities=(0.5,), support_sizes=(2,),
                draft_support=(1, 4), draft_support_probabilities=(0.5, 0.5))


def test_a_chunk_carries_a_token_request_only_whole_and_for_a_row_already_sent():
    from broker.messages.inference import TokenRequest, riding_fields, riding_request

    rows = bytes(2 * 8 * 2)
    request = TokenRequest("s", "w", 9, 11, chunks_sent=5)
    chunk = ContextChunk("s", 4, 10, 2, 8, rows, "fp16", 0, "w", **riding_fields(request, 12))
    assert riding_request(chunk) == request
    assert riding_request(ContextChunk("s", 4, 10, 2, 8, rows, "fp16", 0, "w")) is None
    assert riding_fields(request, 11) is None  # its row is not in the chunk
    with pytest.raises(ValueError, match="go together"):
        ContextChunk("s", 4, 10, 2, 8, rows, "fp16", 0, "w", ask_request_id=9)
    with pytest.raises(ValueError, match="have been sent"):
        ContextChunk("s", 4, 10, 2, 8, rows, "fp16", 0, "w", ask_request_id=9, ask_position=12)


def test_a_chunk_carries_a_greedy_verification_of_drafts_whose_rows_it_completes():
    from broker.messages.inference import riding_fields, riding_request

    rows = bytes(3 * 8 * 2)
    verify = DraftVerify("s", "w", 7, 10, (5, 6, 8), chunks_sent=5)  # needs rows 10, 11, 12
    chunk = ContextChunk("s", 4, 10, 3, 8, rows, "fp16", 0, "w", **riding_fields(verify, 13))
    assert riding_request(chunk) == verify
    assert riding_request(decode(chunk.to_bytes())) == verify  # the drafts survive the wire as a tuple
    assert riding_fields(verify, 12) is None
    sampled = DraftVerify("s", "w", 7, 10, (5,), temperature=0.7, draft_probabilities=(0.5,), support_sizes=(1,),
                          draft_support=(5,), draft_support_probabilities=(1.0,))
    assert riding_fields(sampled, 13) is None  # its draft distribution has no chunk fields: it goes alone
    with pytest.raises(ValueError, match="have been sent"):
        ContextChunk("s", 4, 10, 3, 8, rows, "fp16", 0, "w", ask_request_id=7, ask_position=11, ask_drafts=(5, 6, 8))
    with pytest.raises(ValueError, match="needs ask_request_id"):
        ContextChunk("s", 4, 10, 3, 8, rows, "fp16", 0, "w", ask_drafts=(5,))
    with pytest.raises(ValueError, match="ask_drafts must hold"):
        ContextChunk("s", 4, 10, 3, 8, rows, "fp16", 0, "w", ask_request_id=7, ask_position=10, ask_drafts=())


def test_a_verification_keeps_its_tie_tolerance_alone_and_riding_and_refuses_a_bad_one():
    from broker.messages.inference import riding_fields, riding_request

    rows = bytes(2 * 8 * 2)
    verify = DraftVerify("s", "w", 7, 10, (5, 6), chunks_sent=5, tie_tolerance=0.25)
    assert decode(verify.to_bytes()) == verify
    chunk = ContextChunk("s", 4, 10, 2, 8, rows, "fp16", 0, "w", **riding_fields(verify, 12))
    assert riding_request(decode(chunk.to_bytes())) == verify
    for bad in (-0.1, float("nan"), 11.0):
        with pytest.raises(ValueError, match="tie_tolerance"):
            DraftVerify("s", "w", 7, 10, (5,), tie_tolerance=bad)
        with pytest.raises(ValueError, match="tie_tolerance"):
            ContextChunk("s", 4, 10, 2, 8, rows, "fp16", 0, "w", ask_tie_tolerance=bad)
