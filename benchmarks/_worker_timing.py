"""Timing and JSON report shared by the model-benchmark workers (_mlip_worker, _mace_worker).

Standard library and numpy only: the MACE worker imports it from .venv-mace, which has neither
mlip nor this venv's e3nn.
"""

from __future__ import annotations

import json
import resource
import time
from typing import Callable

import numpy as np


def rss_mb() -> float:
    """Current resident set size, MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def time_and_report(call: Callable[[], object], repeats: int, n_params: int, n_atoms: int) -> None:
    """Call once (warm-up), time ``repeats`` more calls, print the result as one JSON line.

    ``peak_mb`` is the peak resident set size after the calls less the one before the warm-up.
    """
    before = rss_mb()
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = float(np.median(times))
    print(json.dumps({"params": n_params, "ms": seconds * 1e3,
                      "atom_steps_per_s": n_atoms / seconds, "peak_mb": peak - before,
                      "n_atoms": n_atoms}))
