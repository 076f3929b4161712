"""Settings of collaborative generation on the edge: mode, split layer, exits, deadlines, upload batching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runtime.settings import check

CollabMode = Literal["standalone", "collaborative", "cloud_only", "naive_split"]
MODES: tuple[CollabMode, ...] = ("standalone", "collaborative", "cloud_only", "naive_split")


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
    max_reopens: int = 3  # per answer: session unknown at the cloud -> open again and re-upload
    session_close: bool = True  # tell the worker to drop the context when the answer is done

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
        check(self.max_reopens >= 0, "max_reopens", "must be >= 0")
