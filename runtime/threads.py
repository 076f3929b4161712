"""Thread priorities: model compute yields the CPU to the threads that keep a node on the bus."""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger(__name__)

COMPUTE_NICE = 10  # nice increment for inference threads: uploads and acks run first when cores are busy


def lower_thread_priority(increment: int = COMPUTE_NICE) -> None:
    """Raise the calling thread's nice value (Linux schedules threads individually). Never raises:
    where it is not allowed the thread simply keeps its priority."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except (OSError, AttributeError) as error:
        logger.debug("could not lower thread priority: %s", error)
