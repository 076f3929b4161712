import numpy as np
import pytest

from broker.messages.inference import ContextChunk
from cloud_node.chunk_check import ChunkError, chunk_rows


def chunk(rows: np.ndarray, first_position: int = 0, dtype: str = "fp16") -> ContextChunk:
    data = rows.astype("<f2" if dtype == "fp16" else "<f4").tobytes()
    return ContextChunk("s1", 0, first_position, rows.shape[0], rows.shape[1], data, dtype)


def test_good_chunk_gives_its_rows():
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(chunk_rows(chunk(rows), hidden_size=4, max_positions=10), rows)


def test_wrong_hidden_size_is_refused():
    with pytest.raises(ChunkError, match="hidden_size 4 differs"):
        chunk_rows(chunk(np.zeros((2, 4))), hidden_size=8, max_positions=10)


def test_positions_beyond_the_limit_are_refused():
    with pytest.raises(ChunkError, match="beyond the limit"):
        chunk_rows(chunk(np.zeros((2, 4)), first_position=9), hidden_size=4, max_positions=10)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_naming_the_position(bad):
    rows = np.zeros((3, 4), dtype=np.float32)
    rows[1, 2] = bad
    with pytest.raises(ChunkError, match="position 6 holds NaN or infinity"):
        chunk_rows(chunk(rows, first_position=5, dtype="fp32"), hidden_size=4, max_positions=10)
