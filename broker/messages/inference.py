"""Collaborative-inference messages (CE-CoLLM): session open/close, context upload, token requests and replies.

Three closed unions, one per direction, each bound to its topic in `broker/topics.py`:
- `CloudRequest` on `infer/open` (shared subscription: any cloud worker may answer): open a session,
  cloud-only generation, one stateless naive-split step. Answers come back as `CloudReply` on the
  requester's MQTT 5 response topic.
- `EdgeUpMessage` on `infer/{edge}/{session}/up`: context chunks, token requests, close. Every one
  names the worker that opened the session, so only that worker acts on it (sessions are sticky).
- `CloudDownMessage` on `infer/{edge}/{session}/down`: token replies, unknown session, resend requests,
  rejected chunks, speculative verdicts.
Speculative decoding rides the same session: the draft positions' layer-k rows go up as context
chunks, then a `DraftVerify` names the draft token ids; the worker answers a `DraftVerdict`.
Positions count from 0 over the whole sequence (prompt then generated tokens). "Token for position p"
is the model's next token after positions [0, p], i.e. the token at position p + 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from broker.messages.codec import Message, require

HiddenDtype = Literal["fp16", "fp32", "int8"]
SessionMode = Literal["collaborative", "naive_split", "speculative"]
# int8: one byte a value, plus per position (row) one fp16 scale per INT8_GROUP values and its INT8_OUTLIERS
# largest values kept apart as (uint16 channel, fp16 value): layout in broker/messages/hidden_rows.py
DTYPE_BYTES = {"fp16": 2, "fp32": 4, "int8": 1}
INT8_SCALE_BYTES = 2
INT8_GROUP = 64
INT8_OUTLIERS = 6
MAX_DRAFT_TOKENS = 64  # most draft tokens one verification may carry
MAX_TIE_TOLERANCE = 10.0  # logits; a verifier that tolerates more is not verifying
_DTYPE_BYTES = DTYPE_BYTES  # older name
MAX_HIDDEN_BYTES = 16 * 1024 * 1024  # one chunk or naive step; a 2k-token fp32 context at 576 is 4.7 MB


class CloudRequest(Message):
    """Union of requests on `infer/open` (shared subscription of cloud workers)."""

    __slots__ = ()


class CloudReply(Message):
    """Union of replies to a `CloudRequest`, sent on the requester's response topic."""

    __slots__ = ()


class EdgeUpMessage(Message):
    """Union of edge → cloud messages on `infer/{edge}/{session}/up`."""

    __slots__ = ()


class CloudDownMessage(Message):
    """Union of cloud → edge messages on `infer/{edge}/{session}/down`."""

    __slots__ = ()


def _check_id(value: str, name: str) -> None:
    require(0 < len(value) <= 64, f"{name} must be 1-64 chars")


def int8_groups(hidden_size: int) -> int:
    """Scales per int8 row: one per INT8_GROUP values, the last group possibly short."""
    return -(-hidden_size // INT8_GROUP)


def hidden_bytes(count: int, hidden_size: int, dtype: HiddenDtype, outliers: int = INT8_OUTLIERS) -> int:
    """Payload bytes of `count` rows of `hidden_size` values in `dtype` (int8 rows carry scales and outliers).

    `outliers` other than INT8_OUTLIERS is for codec studies (benchmarks.int8_near_ties): the wire uses the constant.
    """
    extra = count * (INT8_SCALE_BYTES * int8_groups(hidden_size) + 4 * outliers) if dtype == "int8" else 0
    return count * hidden_size * DTYPE_BYTES[dtype] + extra


# ---- infer/open: requests and their replies ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionOpen(CloudRequest):
    """Edge asks any cloud worker to hold the context of a session for layers [split_layer, L)."""

    TAG = "session_open"
    session_id: str
    edge_id: str
    model_id: str
    split_layer: int  # the edge runs [0, split_layer); the cloud [split_layer, L)
    hidden_size: int

    def __post_init__(self) -> None:
        _check_id(self.session_id, "session_id")
        _check_id(self.edge_id, "edge_id")
        _check_id(self.model_id, "model_id")
        require(1 <= self.split_layer <= 4096, "split_layer must be 1-4096")
        require(1 <= self.hidden_size <= 65536, "hidden_size must be 1-65536")


@dataclass(frozen=True, slots=True)
class SessionOpened(CloudReply):
    """The worker that now holds the session; every later up message names it."""

    TAG = "session_opened"
    session_id: str
    worker_id: str
    ttl_s: float  # idle time after which the worker forgets the session
    max_positions: int  # positions beyond this are rejected

    def __post_init__(self) -> None:
        _check_id(self.session_id, "session_id")
        _check_id(self.worker_id, "worker_id")
        require(self.ttl_s > 0, "ttl_s must be > 0")
        require(self.max_positions > 0, "max_positions must be > 0")


@dataclass(frozen=True, slots=True)
class RequestRefused(CloudReply):
    """A request the worker cannot serve (unknown model, bad split, bad shapes), with the reason."""

    TAG = "request_refused"
    request_id: str  # session id for an open, request id otherwise
    reason: str

    def __post_init__(self) -> None:
        require(len(self.reason) <= 1000, "reason must be <= 1000 chars")


@dataclass(frozen=True, slots=True)
class GenerateRequest(CloudRequest):
    """Cloud-only generation: prompt token ids in, greedy tokens out (baselines, routed queries)."""

    TAG = "generate_request"
    MAX_BYTES = 256 * 1024
    request_id: str
    model_id: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        _check_id(self.request_id, "request_id")
        _check_id(self.model_id, "model_id")
        require(1 <= len(self.prompt_ids) <= 32768, "prompt_ids must hold 1-32768 tokens")
        require(all(token >= 0 for token in self.prompt_ids), "token ids must be >= 0")
        require(1 <= self.max_new_tokens <= 4096, "max_new_tokens must be 1-4096")


@dataclass(frozen=True, slots=True)
class GenerateReply(CloudReply):
    TAG = "generate_reply"
    MAX_BYTES = 256 * 1024
    request_id: str
    token_ids: tuple[int, ...]
    first_token_ms: float  # cloud-side: request received → first token
    total_ms: float  # cloud-side: request received → last token

    def __post_init__(self) -> None:
        _check_id(self.request_id, "request_id")


@dataclass(frozen=True, slots=True)
class NaiveStep(CloudRequest):
    """Naive split baseline: the whole context's layer-k hidden states, every step, to a stateless worker."""

    TAG = "naive_step"
    MAX_BYTES = MAX_HIDDEN_BYTES + 4096
    request_id: str
    model_id: str
    split_layer: int
    count: int  # positions [0, count); the reply is the token for position count - 1
    hidden_size: int
    data: bytes  # row-major (count, hidden_size) little-endian floats of `dtype`
    dtype: HiddenDtype = "fp32"

    def __post_init__(self) -> None:
        _check_id(self.request_id, "request_id")
        _check_id(self.model_id, "model_id")
        require(1 <= self.split_layer <= 4096, "split_layer must be 1-4096")
        require(1 <= self.count <= 65536, "count must be 1-65536")
        require(1 <= self.hidden_size <= 65536, "hidden_size must be 1-65536")
        require(self.dtype in DTYPE_BYTES, f"dtype must be one of {sorted(DTYPE_BYTES)}")
        expected = hidden_bytes(self.count, self.hidden_size, self.dtype)
        require(len(self.data) == expected, f"data is {len(self.data)} B, expected {expected} B for its shape")


# ---- infer/{edge}/{session}/up -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContextChunk(EdgeUpMessage):
    """Edge → cloud on `infer/{edge}/{session}/up`: hidden states of `count` consecutive positions."""

    TAG = "context_chunk"
    MAX_BYTES = MAX_HIDDEN_BYTES + 4096
    session_id: str
    seq: int  # chunk sequence number within the session, from 0, for gap detection
    first_position: int
    count: int
    hidden_size: int
    data: bytes  # row-major (count, hidden_size) little-endian floats of `dtype` (int8: see hidden_rows.py)
    dtype: HiddenDtype = "fp16"
    sent_at_ns: int = 0  # sender's wall clock, for latency figures
    worker_id: str = ""  # the worker holding the session; others ignore the chunk
    # A request riding with the rows it needs (one message instead of two per round trip), see
    # `riding_request`: a token request for `ask_position`, or with `ask_drafts` a greedy verification of
    # drafts for the positions after `ask_position`.
    ask_request_id: int | None = None
    ask_position: int | None = None
    ask_drafts: tuple[int, ...] | None = None
    ask_tie_tolerance: float = 0.0  # the riding verification's `tie_tolerance`

    def __post_init__(self) -> None:
        require(0 < len(self.session_id) <= 64, "session_id must be 1-64 chars")
        _check_tie_tolerance(self.ask_tie_tolerance)
        require(self.seq >= 0, "seq must be >= 0")
        require(self.first_position >= 0, "first_position must be >= 0")
        require(1 <= self.count <= 65536, "count must be 1-65536")
        require((self.ask_request_id is None) == (self.ask_position is None),
                "ask_request_id and ask_position go together")
        require(self.ask_drafts is None or self.ask_request_id is not None, "ask_drafts needs ask_request_id")
        if self.ask_request_id is not None and self.ask_position is not None:
            require(self.ask_request_id >= 0, "ask_request_id must be >= 0")
            drafts = self.ask_drafts or ()
            require(self.ask_drafts is None or 1 <= len(drafts) <= MAX_DRAFT_TOKENS,
                    f"ask_drafts must hold 1-{MAX_DRAFT_TOKENS} tokens")
            require(all(token >= 0 for token in drafts), "token ids must be >= 0")
            # a token request needs the row at ask_position, a verification the rows of its drafts' positions
            require(self.ask_position >= 0 and self.ask_position + max(len(drafts), 1) <= self.first_position + self.count,
                    "the asked rows must have been sent (up to first_position + count)")
        require(1 <= self.hidden_size <= 65536, "hidden_size must be 1-65536")
        require(self.dtype in DTYPE_BYTES, f"dtype must be one of {sorted(DTYPE_BYTES)}")
        expected = hidden_bytes(self.count, self.hidden_size, self.dtype)
        require(len(self.data) == expected, f"data is {len(self.data)} B, expected {expected} B for its shape")


@dataclass(frozen=True, slots=True)
class TokenRequest(EdgeUpMessage):
    """Edge asks the session's worker for the token for `position` (it needs states [0, position]).

    Sent alone when no rows are pending; otherwise it rides in the last chunk (`riding_fields`).
    """

    TAG = "token_request"
    session_id: str
    worker_id: str
    request_id: int  # per session, increasing; the reply echoes it
    position: int
    chunks_sent: int = 0  # chunks the edge has published so far (seq < chunks_sent), for gap detection

    def __post_init__(self) -> None:
        _check_id(self.session_id, "session_id")
        _check_id(self.worker_id, "worker_id")
        require(self.request_id >= 0, "request_id must be >= 0")
        require(self.position >= 0, "position must be >= 0")
        require(self.chunks_sent >= 0, "chunks_sent must be >= 0")


@dataclass(frozen=True, slots=True)
class DraftVerify(EdgeUpMessage):
    """Speculative decoding: verify draft tokens for positions first_position + 1 ... first_position + len(draft_ids).

    The rows of positions [first_position, first_position + len(draft_ids)) went up before as chunks
    (the row at p is the state that drafted the token at p + 1). With `temperature` > 0 the worker
    applies the speculative-sampling rule; `draft_probabilities` are the edge's probabilities of its
    drafts and `draft_support` / `draft_support_probabilities` the edge's (top-p) draft distribution
    per position, flattened, `support_sizes` entries each.
    """

    TAG = "draft_verify"
    MAX_BYTES = 1024 * 1024
    session_id: str
    worker_id: str
    request_id: int  # per session, increasing; the verdict echoes it
    first_position: int
    draft_ids: tuple[int, ...]
    chunks_sent: int = 0
    temperature: float = 0.0  # 0: greedy verification (the cloud's argmax)
    top_p: float = 1.0
    seed: int = 0  # the worker's acceptance draws for this request
    draft_probabilities: tuple[float, ...] = ()
    support_sizes: tuple[int, ...] = ()
    draft_support: tuple[int, ...] = ()
    draft_support_probabilities: tuple[float, ...] = ()
    # greedy: a draft within this many logits of the worker's argmax stands (int8 rows blur near-ties; the
    # edge drafted from exact ones); 0 = the argmax only
    tie_tolerance: float = 0.0

    def __post_init__(self) -> None:
        _check_id(self.session_id, "session_id")
        _check_id(self.worker_id, "worker_id")
        _check_tie_tolerance(self.tie_tolerance)
        require(self.request_id >= 0, "request_id must be >= 0")
        require(self.first_position >= 0, "first_position must be >= 0")
        require(1 <= len(self.draft_ids) <= MAX_DRAFT_TOKENS, f"draft_ids must hold 1-{MAX_DRAFT_TOKENS} tokens")
        require(all(token >= 0 for token in self.draft_ids), "token ids must be >= 0")
        require(self.chunks_sent >= 0, "chunks_sent must be >= 0")
        require(0.0 <= self.temperature <= 100.0 and math.isfinite(self.temperature), "temperature must be 0-100")
        require(0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]")
        if self.temperature > 0:
            drafts = len(self.draft_ids)
            require(len(self.draft_probabilities) == drafts, "draft_probabilities needs one value per draft token")
            require(len(self.support_sizes) == drafts, "support_sizes needs one value per draft token")
            require(sum(self.support_sizes) == len(self.draft_support) == len(self.draft_support_probabilities),
                    "draft_support and its probabilities must hold sum(support_sizes) entries")
            require(all(0.0 <= p <= 1.0 for p in self.draft_probabilities), "draft probabilities must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class SessionClose(EdgeUpMessage):
    TAG = "session_close"
    session_id: str
    worker_id: str

    def __post_init__(self) -> None:
        _check_id(self.session_id, "session_id")
        _check_id(self.worker_id, "worker_id")


def _check_tie_tolerance(value: float) -> None:
    require(math.isfinite(value) and 0.0 <= value <= MAX_TIE_TOLERANCE, f"tie_tolerance must be 0-{MAX_TIE_TOLERANCE}")


def riding_fields(request: Message, rows_end: int) -> dict[str, object] | None:
    """The `ContextChunk` fields that carry `request` in a chunk whose rows end at `rows_end`, or None if it
    must go alone: another kind, a row it needs comes later, or a sampled verification (its draft
    distributions have no chunk fields; greedy verification reads none of them)."""
    match request:
        case TokenRequest() if request.position < rows_end:
            return {"ask_request_id": request.request_id, "ask_position": request.position}
        case DraftVerify() if request.temperature == 0.0 and request.first_position + len(request.draft_ids) <= rows_end:
            return {"ask_request_id": request.request_id, "ask_position": request.first_position,
                    "ask_drafts": request.draft_ids, "ask_tie_tolerance": request.tie_tolerance}
    return None


def riding_request(chunk: ContextChunk) -> TokenRequest | DraftVerify | None:
    """The request a chunk carries (as if sent alone right after it), or None."""
    if chunk.ask_request_id is None or chunk.ask_position is None:
        return None
    if chunk.ask_drafts is None:
        return TokenRequest(chunk.session_id, chunk.worker_id, chunk.ask_request_id, chunk.ask_position, chunk.seq + 1)
    return DraftVerify(chunk.session_id, chunk.worker_id, chunk.ask_request_id, chunk.ask_position, chunk.ask_drafts,
                       chunk.seq + 1, tie_tolerance=chunk.ask_tie_tolerance)


# ---- infer/{edge}/{session}/down -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenReply(CloudDownMessage, CloudReply):
    """The cloud's token for `position` (also the reply to a NaiveStep)."""

    TAG = "token_reply"
    session_id: str  # request id for a NaiveStep
    request_id: int
    position: int
    token_id: int
    probability: float  # of `token_id` under the full model
    compute_ms: float = 0.0  # cloud-side time to bring the cache up to date and run the head

    def __post_init__(self) -> None:
        require(self.token_id >= 0, "token_id must be >= 0")
        require(0.0 <= self.probability <= 1.0 and math.isfinite(self.probability), "probability must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class DraftVerdict(CloudDownMessage):
    """The cloud's verdict on a `DraftVerify`: the first `accepted` drafts stand, then `token_id`.

    `token_id` is the full model's token at first_position + accepted + 1 (the correction of the first
    rejected draft), or -1 when every draft was accepted (the edge carries on from its last draft).
    """

    TAG = "draft_verdict"
    session_id: str
    request_id: int
    first_position: int
    accepted: int
    token_id: int
    compute_ms: float = 0.0  # cloud-side: bring the cache up to date, verify, roll back
    positions_run: int = 0  # positions pushed through layers [k, L) for this verdict

    def __post_init__(self) -> None:
        require(0 <= self.accepted <= MAX_DRAFT_TOKENS, f"accepted must be 0-{MAX_DRAFT_TOKENS}")
        require(self.token_id >= -1, "token_id must be >= -1")


@dataclass(frozen=True, slots=True)
class SessionUnknown(CloudDownMessage):
    """The addressed worker does not hold the session (never opened, expired, evicted, restarted)."""

    TAG = "session_unknown"
    session_id: str
    request_id: int  # -1 when not answering a token request
    reason: str

    def __post_init__(self) -> None:
        require(len(self.reason) <= 1000, "reason must be <= 1000 chars")


@dataclass(frozen=True, slots=True)
class ResendRequest(CloudDownMessage):
    """The worker lacks positions from `from_position` on (a lost chunk): send them again."""

    TAG = "resend_request"
    session_id: str
    request_id: int  # the token request waiting on them, or -1 for a gap seen in the chunk stream
    from_position: int

    def __post_init__(self) -> None:
        require(self.from_position >= 0, "from_position must be >= 0")


@dataclass(frozen=True, slots=True)
class ChunkRejected(CloudDownMessage):
    """A chunk the worker refused (wrong shape, NaN/inf, positions out of range); the session goes on."""

    TAG = "chunk_rejected"
    session_id: str
    seq: int
    reason: str

    def __post_init__(self) -> None:
        require(len(self.reason) <= 1000, "reason must be <= 1000 chars")
