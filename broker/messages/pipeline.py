"""Pipeline-inference messages (issue 18): stage control, the stage-to-stage ring, KV hand-over, stage reports.

Four closed unions, each bound to its topic in `broker/topics.py`:
- `StageControl` on `pipeline/{node}/control`, center → stage: assign a layer range (and which KV
  pieces to send and to expect), run from a position, hold at the next token boundary, stop.
- `StageLink` on `pipeline/{run}/link/{source}/{target}`: hidden states of positions going one stage
  on, and the last stage's token going back to the first. A stage reads only what its predecessor
  addressed to it and writes only as itself (broker/acl.py).
- `KvChunk` on `pipeline/{run}/kv/{source}/{target}`: one layer's keys/values moving with its layer.
- `StageReport` on `pipeline/{node}/report`, stage → center: ready after an assignment, per-token
  timings (compute, head, send, receive, queue), held, finished, failed; `StageGone` is a stage
  session's Last Will (its own, so that a stage beside an edge process never speaks for the edge).
Positions count from 0 over the whole sequence (prompt, then generated tokens). Hidden states travel
as fp32 so that the split model computes exactly what the single process does.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.messages.codec import Message, require

MAX_PIPELINE_NODES = 64
MAX_STATE_BYTES = 16 * 1024 * 1024  # hidden rows of one message: a 7k-token prompt at 576 in fp32
MAX_KV_BYTES = 32 * 1024 * 1024  # one layer's keys and values


class StageControl(Message):
    """Union of center → stage messages on `pipeline/{node}/control`."""

    __slots__ = ()


class StageLink(Message):
    """Union of stage → stage messages on `pipeline/{run}/link/{source}/{target}`."""

    __slots__ = ()


class StageReport(Message):
    """Union of stage → center messages on `pipeline/{node}/report`."""

    __slots__ = ()


def _check_id(value: str, name: str) -> None:
    require(0 < len(value) <= 64, f"{name} must be 1-64 chars")


def _check_range(start: int, end: int) -> None:
    require(0 <= start < end <= 4096, f"layer range [{start}, {end}) must satisfy 0 <= start < end <= 4096")


@dataclass(frozen=True, slots=True)
class KvPiece(Message):
    """Layers [start, end) whose keys/values move between two stages."""

    TAG = "kv_piece"
    node_id: str  # the other end: the receiver (in `kv_sends`) or the sender (in `kv_expected`)
    start: int
    end: int

    def __post_init__(self) -> None:
        _check_id(self.node_id, "node_id")
        _check_range(self.start, self.end)


@dataclass(frozen=True, slots=True)
class StageAssign(StageControl):
    """Run layers [start, end) of `model_id` in `run_id` from now on (epoch `epoch`).

    Before taking the new range the stage sends the keys/values of its old layers named in
    `kv_sends`; afterwards it keeps the keys/values of layers it already had and waits for those in
    `kv_expected`. `reset` drops every cached position instead (the KV is then recomputed).
    """

    TAG = "stage_assign"
    run_id: str
    epoch: int  # increases with every assignment of the run; older messages are ignored
    model_id: str
    start: int
    end: int
    predecessor: str  # the stage before in the ring (the last stage for the first one)
    successor: str  # the stage after (the first stage for the last one)
    first: bool  # embeds token ids
    last: bool  # runs the head and picks the token
    kv_sends: tuple[KvPiece, ...] = ()
    kv_expected: tuple[KvPiece, ...] = ()
    reset: bool = False
    kv_timeout_s: float = 30.0  # waiting longer for an expected piece fails the assignment

    def __post_init__(self) -> None:
        _check_id(self.run_id, "run_id")
        _check_id(self.model_id, "model_id")
        _check_id(self.predecessor, "predecessor")
        _check_id(self.successor, "successor")
        require(self.epoch >= 0, "epoch must be >= 0")
        _check_range(self.start, self.end)
        require(len(self.kv_sends) <= MAX_PIPELINE_NODES and len(self.kv_expected) <= MAX_PIPELINE_NODES,
                "too many kv pieces")
        require(self.kv_timeout_s > 0, "kv_timeout_s must be > 0")


@dataclass(frozen=True, slots=True)
class StageRun(StageControl):
    """To the first stage: feed `token_ids` at `position`, then keep generating around the ring.

    Generation ends after `max_new_tokens` tokens since position `prompt_tokens` or after `eos_token_id`.
    """

    TAG = "stage_run"
    run_id: str
    epoch: int
    position: int  # position of token_ids[0]
    token_ids: tuple[int, ...]
    prompt_tokens: int
    max_new_tokens: int
    eos_token_id: int = -1  # -1: never stop early

    def __post_init__(self) -> None:
        _check_id(self.run_id, "run_id")
        require(self.position >= 0 and self.prompt_tokens >= 1, "position must be >= 0, prompt_tokens >= 1")
        require(1 <= len(self.token_ids) <= 65536, "token_ids must hold 1-65536 ids")
        require(1 <= self.max_new_tokens <= 65536, "max_new_tokens must be 1-65536")


@dataclass(frozen=True, slots=True)
class StageHold(StageControl):
    """To the first stage: stop at the next token boundary and report `StageHeld`."""

    TAG = "stage_hold"
    run_id: str
    epoch: int

    def __post_init__(self) -> None:
        _check_id(self.run_id, "run_id")


@dataclass(frozen=True, slots=True)
class StageStop(StageControl):
    """Forget the run (its layers and caches)."""

    TAG = "stage_stop"
    run_id: str

    def __post_init__(self) -> None:
        _check_id(self.run_id, "run_id")


@dataclass(frozen=True, slots=True)
class StageStates(StageLink):
    """Hidden states of positions [position, position + count) after layer `layer`, for the next stage."""

    TAG = "stage_states"
    MAX_BYTES = MAX_STATE_BYTES + 4096
    run_id: str
    epoch: int
    position: int
    count: int
    hidden_size: int
    layer: int  # decoder layers these states went through
    data: bytes  # row-major (count, hidden_size) little-endian float32
    sent_at_ns: int = 0  # sender's wall clock: the receiver's transfer time (hosts share a clock, e.g. NTP)

    def __post_init__(self) -> None:
        _check_id(self.run_id, "run_id")
        require(self.position >= 0, "position must be >= 0")
        require(1 <= self.count <= 65536 and 1 <= self.hidden_size <= 65536, "count and hidden_size must be 1-65536")
        require(len(self.data) == self.count * self.hidden_size * 4,
                f"data is {len(self.data)} B, expected {self.count * self.hidden_size * 4} B of float32")


@dataclass(frozen=True, slots=True)
class StageToken(StageLink):
    """The last stage's token for position `position` (the next token after positions [0, position))."""

    TAG = "stage_token"
    run_id: str
    epoch: int
    position: int
    token_id: int
    sent_at_ns: int = 0

    def __post_init__(self) -> None:
        _check_id(self.run_id, "run_id")
        require(self.position >= 1 and self.token_id >= 0, "position must be >= 1, token_id >= 0")


@dataclass(frozen=True, slots=True)
class KvChunk(Message):
    """Keys and values of layer `layer` for positions [0, positions): (1, kv_heads, positions, head_dim) float32 each."""

    TAG = "kv_chunk"
    MAX_BYTES = MAX_KV_BYTES + 4096
    run_id: str
    epoch: int
    layer: int
    positions: int
    kv_heads: int
    head_dim: int
    keys: bytes
    values: bytes

    def __post_init__(self) -> None:
        _check_id(self.run_id, "run_id")
        require(0 <= self.layer < 4096, "layer must be 0-4095")
        require(self.positions >= 0 and 1 <= self.kv_heads <= 1024 and 1 <= self.head_dim <= 4096, "bad kv shape")
        expected = self.positions * self.kv_heads * self.head_dim * 4
        require(len(self.keys) == expected and len(self.values) == expected,
                f"keys/values must be {expected} B each for their shape")


@dataclass(frozen=True, slots=True)
class StageReady(StageReport):
    """A stage took its assignment: layers built, keys/values complete up to `positions`."""

    TAG = "stage_ready"
    run_id: str
    epoch: int
    node_id: str
    start: int
    end: int
    positions: int  # cached positions after the hand-over
    kv_bytes_received: int
    kv_wait_s: float  # from the assignment until the last expected piece arrived
    build_s: float  # building the layers of the new range from the node's weights
    bd_seq: int = 0  # the bdSeq of the stage's bus session: its Last Will (NodeDeath) carries the same

    def __post_init__(self) -> None:
        _check_id(self.run_id, "run_id")
        _check_id(self.node_id, "node_id")


@dataclass(frozen=True, slots=True)
class StageTiming(StageReport):
    """What one token cost one stage."""

    TAG = "stage_timing"
    run_id: str
    epoch: int
    node_id: str
    position: int  # first position of the pass
    count: int  # positions in the pass (the prompt, or 1)
    layers: int  # decoder layers run
    compute_s: float  # decoder layers (and the embedding on the first stage)
    head_s: float  # final norm + LM head + picking (last stage only)
    send_s: float  # encoding + publishing the output
    receive_s: float  # the input's time on the wire (sender's clock to ours)
    queue_s: float  # the input waiting here before compute began
    token_id: int = -1  # the token picked (last stage), else -1

    def __post_init__(self) -> None:
        _check_id(self.run_id, "run_id")
        _check_id(self.node_id, "node_id")
        require(self.count >= 1 and self.layers >= 0, "count must be >= 1, layers >= 0")


@dataclass(frozen=True, slots=True)
class StageHeld(StageReport):
    """The first stage stopped at a token boundary: `next_token` (for `position`) is not fed yet."""

    TAG = "stage_held"
    run_id: str
    epoch: int
    position: int
    next_token: int

    def __post_init__(self) -> None:
        _check_id(self.run_id, "run_id")


@dataclass(frozen=True, slots=True)
class StageFinished(StageReport):
    """The first stage reached the token budget or the end of sequence."""

    TAG = "stage_finished"
    run_id: str
    epoch: int
    position: int  # positions in the sequence, the last token included

    def __post_init__(self) -> None:
        _check_id(self.run_id, "run_id")


@dataclass(frozen=True, slots=True)
class StageFailed(StageReport):
    """A stage could not do what it was asked (unknown model, missing KV, bad input), with the reason."""

    TAG = "stage_failed"
    run_id: str
    epoch: int
    node_id: str
    reason: str

    def __post_init__(self) -> None:
        _check_id(self.node_id, "node_id")
        require(len(self.reason) <= 2000, "reason must be <= 2000 chars")


@dataclass(frozen=True, slots=True)
class StageGone(StageReport):
    """A stage node's Last Will: its bus session (`bd_seq`, as in `StageReady`) ended without a goodbye."""

    TAG = "stage_gone"
    node_id: str
    bd_seq: int

    def __post_init__(self) -> None:
        _check_id(self.node_id, "node_id")
        require(0 <= self.bd_seq < 2**63, "bd_seq out of range")
