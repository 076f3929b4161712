"""The fallback CPU quota: after each decoder layer, sleep as long as a slower CPU would still be busy.

A layer that took `elapsed` seconds on this CPU would take elapsed / quota on one with `quota` of its
speed, so the forward hook sleeps elapsed * (1 / quota - 1). Only the hooked layers slow down (the
embedding, head and Python around them run at full speed), and the sleep is wall time, so this is
an approximation of a cgroup quota, used where cgroups cannot be written (docs/emulation.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)


class LayerDelay:
    """Forward hooks on each module of `layers` that stretch its run time to elapsed / quota."""

    def __init__(self, quota: float, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        assert quota > 0, f"quota {quota} must be > 0"
        self.quota = quota
        self.factor = max(0.0, 1.0 / quota - 1.0)  # extra seconds per second of layer time
        self.slept_s = 0.0  # total added so far, for logs and tests
        self._clock = clock
        self._sleep = sleep
        self._started = threading.local()  # layer start times per thread: nodes may decode on several
        self._handles: list[Any] = []

    def install(self, layers: Iterable[Any]) -> LayerDelay:
        """Hook every module in `layers` (e.g. a transformers model's `model.model.layers` ModuleList)."""
        if self.factor == 0:
            return self
        for layer in layers:
            self._handles.append(layer.register_forward_pre_hook(self._before))
            self._handles.append(layer.register_forward_hook(self._after))
        return self

    @property
    def hooked_layers(self) -> int:
        return len(self._handles) // 2

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _before(self, module: Any, args: Any) -> None:
        self._started.__dict__[id(module)] = self._clock()

    def _after(self, module: Any, args: Any, output: Any) -> None:
        started = self._started.__dict__.pop(id(module), None)
        if started is None:
            return
        delay_s = (self._clock() - started) * self.factor
        self.slept_s += delay_s
        self._sleep(delay_s)


def install_layer_delay(layers: Iterable[Any], quota: float) -> LayerDelay:
    """Slow each layer of `layers` (an nn.ModuleList) down to `quota` of this CPU's speed."""
    return LayerDelay(quota).install(layers)
