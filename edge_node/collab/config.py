"""Settings of collaborative generation on the edge: mode, split layer, exits, deadlines, upload batching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from broker.messages.inference import MAX_TIE_TOLERANCE
from runtime.settings import check

CollabMode = Literal["standalone", "collaborative", "cloud_only", "naive_split", "speculative"]
MODES: tuple[CollabMode, ...] = ("standalone", "collaborative", "cloud_only", "naive_split", "speculative")
StateDtype = Literal["fp16", "int8", "fp32"]
STATE_DTYPES: tuple[StateDtype, ...] = ("fp16", "int8", "fp32")
DraftSource = Literal["model", "exits"]
DRAFT_SOURCES: tuple[DraftSource, ...] = ("model", "exits")


@dataclass(frozen=True)
class CollabConfig:
    mode: CollabMode = "collaborative"  # standalone: edge only; cloud_only / naive_split: baselines
    split_layer: int = 20  # the edge runs layers [0, split_layer), the cloud [split_layer, L)
    exit_layers: tuple[int, ...] = (10, 15, 20)  # exit heads the edge consults (those <= split_layer)
    threshold: float | None = None  # None: the model's calibrated policy; else top-probability threshold
    # at every exit (0 exits always at the first exit; >= 1.0 never exits, every token goes to the cloud)
    exit_thresholds: tuple[float, ...] = ()  # per exit layer (same order), replacing the calibrated policy's
    # thresholds with a collaborative operating point (edge_node/collab/operating_point.py); () keeps them
    cloud_deadline_s: float = 5.0  # a token not back from the cloud by then: finish the answer locally
    open_timeout_s: float = 5.0  # session open request/response
    upload_chunk_positions: int = 512  # most positions in one context chunk
    upload_min_positions: int = 8  # rows wait until this many are pending or a request needs them (fewer headers)
    max_reopens: int = 3  # per answer: session unknown at the cloud -> open again and re-upload
    session_close: bool = True  # tell the worker to drop the context when the answer is done
    # How layer-k rows travel: fp16; int8 with one scale per position; fp32 (as computed). None: the mode's own,
    # fp32 for speculative (its answer must be the cloud's exactly: fp16 rounding flips near-ties of ~1e-4
    # logits) and fp16 for collaborative (its answers are approximate anyway; half the bytes)
    state_dtype: StateDtype | None = None
    # speculative mode: what drafts. "model": the edge's whole model (every layer and the final head), its
    # layer-k rows streaming to the cloud as before; "exits": layers [0, k) and the exit heads, for an edge that
    # cannot afford the layers past k. Either way the cloud verifies with [k, L) (docs/collaboration.md).
    speculative_draft: DraftSource = "model"
    # speculative mode: the edge drafts gamma tokens, the cloud verifies them
    gamma: int = 0  # drafts per verification; 0 = adaptive per session (edge_node/collab/gamma.py)
    gamma_initial: int = 4  # adaptive: the first round's drafts
    gamma_max: int = 12  # adaptive: most drafts per verification
    draft_stop_unsure: bool = True  # exits drafting: end a round at the first draft no exit head was sure of (greedy),
    draft_continue_probability: float = 1.0  # unless the round's unsure drafts' head probabilities multiply
    # to at least this (1.0: always end there; lower: fewer round trips, more drafts wasted on a rejection)
    draft_ahead: bool = True  # keep drafting while a verification is in flight (rows held until its verdict)
    # int8 rows and whole-model drafts: a draft within this many logits of the cloud's argmax stands. The codec
    # moves logits by up to ~0.24 (docs/collaboration.md), enough to flip near-ties the edge's exact rows
    # decided; past this the cloud's token wins. 0 = the cloud's argmax only
    int8_tie_tolerance: float = 0.25
    # speculative mode: the edge drafts with layers [0, this) and the exit head there, when the model has one
    # (a deeper draft is accepted more often and leaves the cloud fewer layers); 0 = split_layer
    speculative_split_layer: int = 0
    # speculative mode: choose the drafting split per answer among split_layer and the model's deeper heads,
    # from what earlier answers measured (edge_node/collab/split_choice.py); speculative_split_layer is then unused
    speculative_split_auto: bool = False
    temperature: float = 0.0  # speculative sampling: 0 = greedy (output identical to cloud_only)
    top_p: float = 1.0  # speculative sampling: nucleus of both the draft and the verifier
    seed: int = 0  # speculative sampling: the edge's draft draws and the cloud's acceptance draws
    draft_support_max: int = 256  # speculative sampling: most tokens of a draft distribution sent per position

    def __post_init__(self) -> None:
        check(self.mode in MODES, "mode", f"{self.mode!r} is not one of {MODES}")
        check(self.split_layer >= 1, "split_layer", "must be >= 1")
        check(list(self.exit_layers) == sorted(set(self.exit_layers)), "exit_layers", "must be unique and ascending")
        check(all(0 < layer <= self.split_layer for layer in self.exit_layers), "exit_layers",
              f"must lie in 1..split_layer ({self.split_layer})")
        check(self.threshold is None or self.threshold >= 0.0, "threshold", "must be >= 0")
        check(not self.exit_thresholds or len(self.exit_thresholds) == len(self.exit_layers), "exit_thresholds",
              "give one threshold per exit layer, or none")
        check(self.cloud_deadline_s > 0, "cloud_deadline_s", "must be > 0")
        check(self.open_timeout_s > 0, "open_timeout_s", "must be > 0")
        check(1 <= self.upload_chunk_positions <= 8192, "upload_chunk_positions", "must be 1-8192")
        check(1 <= self.upload_min_positions <= 8192, "upload_min_positions", "must be 1-8192")
        check(self.max_reopens >= 0, "max_reopens", "must be >= 0")
        check(self.speculative_draft in DRAFT_SOURCES, "speculative_draft",
              f"{self.speculative_draft!r} is not one of {DRAFT_SOURCES}")
        check(self.state_dtype is None or self.state_dtype in STATE_DTYPES, "state_dtype",
              f"{self.state_dtype!r} is not one of {STATE_DTYPES}")
        check(0 <= self.gamma <= 64, "gamma", "must be 0 (adaptive) to 64")
        check(1 <= self.gamma_max <= 64, "gamma_max", "must be 1-64")
        check(1 <= self.gamma_initial <= self.gamma_max, "gamma_initial", "must be 1..gamma_max")
        check(0.0 <= self.temperature <= 100.0, "temperature", "must be 0-100")
        check(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]")
        check(1 <= self.draft_support_max <= 65536, "draft_support_max", "must be 1-65536")
        check(self.speculative_split_layer >= 0, "speculative_split_layer", "must be >= 0 (0: split_layer)")
        check(0.0 <= self.draft_continue_probability <= 1.0, "draft_continue_probability", "must be 0-1")
        check(0.0 <= self.int8_tie_tolerance <= MAX_TIE_TOLERANCE, "int8_tie_tolerance",
              f"must be 0-{MAX_TIE_TOLERANCE} logits")

    def wire_dtype(self) -> StateDtype:
        """How this answer's layer-k rows travel (`state_dtype`, or the mode's own when it is None)."""
        if self.state_dtype is not None:
            return self.state_dtype
        return "fp32" if self.mode == "speculative" else "fp16"


def drafts_with_whole_model(config: CollabConfig, num_layers: int) -> bool:
    """Does a speculative edge draft with its whole model? Asked to, and the model goes past the split."""
    return config.speculative_draft == "model" and config.split_layer < num_layers


def drafting_split(config: CollabConfig, num_layers: int, head_layers: tuple[int, ...]) -> int:
    """The layer a speculative edge drafts at: `speculative_split_layer` where the model has an exit head
    there (inside the model), else `split_layer` (a draft from the final head applied early is seldom right)."""
    layer = config.speculative_split_layer
    return layer if 0 < layer < num_layers and layer in head_layers else config.split_layer


def drafting_candidates(config: CollabConfig, num_layers: int, head_layers: tuple[int, ...]) -> tuple[int, ...]:
    """The splits a speculative edge may draft at: `split_layer` and every exit head deeper inside the model."""
    return (config.split_layer, *(layer for layer in head_layers if config.split_layer < layer < num_layers))
