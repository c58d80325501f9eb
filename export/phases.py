"""Exporting one component at a time, with its progress: wall time per phase and the process's peak memory.

``with Phase("[2/3] unet", log) as phase: ...; phase.mark("built"); ...`` logs one line
per component, e.g. ``[2/3] unet: built 4.1 s, traced 95.0 s, checked 60.2 s (peak RSS 8.31 GiB)``,
and keeps the timings on :attr:`Phase.seconds` for reports.
"""
from __future__ import annotations

import gc
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from export.graphs import ComponentSpec


def peak_rss_gib() -> float:
    """This process's peak resident set size so far (``ru_maxrss``), in GiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**3 if sys.platform == "darwin" else peak / 1024**2  # bytes on macOS, KiB on Linux


class Phase:
    """Times the named steps of one component of an export and logs them together when it ends."""

    def __init__(self, name: str, log: Callable[[str], None]):
        self.name = name
        self.log = log
        self.seconds: dict[str, float] = {}

    def __enter__(self) -> "Phase":
        self.log(f"{self.name} ...")
        self._last = time.perf_counter()
        return self

    def mark(self, step: str) -> None:
        """End the step ``step`` now."""
        now = time.perf_counter()
        self.seconds[step] = now - self._last
        self._last = now

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
            self.log(f"{self.name}: {steps} (peak RSS {peak_rss_gib():.2f} GiB)")


def export_component(label: str, spec: ComponentSpec, build: Callable[[], Any], root: Path,
                     log: Callable[[str], None], *, shape: Any = None) -> list:
    """Build one component with ``build`` (a module, or several that share graphs), trace the graphs of ``spec``
    into ``root`` on its example inputs at ``shape``, release the module, then check every graph under ONNX
    Runtime; returns their components.

    Only this component's weights are in memory while it is traced, and none while ONNX Runtime
    holds its graphs for the check.
    """
    from export.graphs import check_graph, trace_graph

    components = []
    with Phase(label, log) as phase:
        module = build()
        phase.mark("built")
        traced = [trace_graph(example, root / f"{example.spec.name}.onnx") for example in spec.plan(module, shape)]
        phase.mark("traced")
        del module
        gc.collect()
        for graph in traced:
            component, check, _ = check_graph(graph)
            components.append(component)
            log(check.line())
        phase.mark("checked")
    return components
