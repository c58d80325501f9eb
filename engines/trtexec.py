"""trtexec command lines and the shell script that runs them on the target.

The script is written into the bundle and runs there (``bash build_engines_<target>_<precision>.sh``):
one ``trtexec`` per component, each saving ``<component>.<precision>.plan``
next to its graph, then prints the ``python -m engines register`` line that
records the plans in the manifest.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from engines.precision import fp32_node_names, keep_fp32_applies, layer_precisions_arg
from engines.profiles import check_precision, plan_name, profile_of, select_components, shapes_arg, source_graph
from runtime.bundle import Bundle


@dataclass(frozen=True)
class Target:
    """A deployment target: where its trtexec lives and how much build workspace it can spare."""

    name: str
    trtexec: str
    workspace_mb: int
    note: str


TARGETS = {
    "jetson-orin": Target("jetson-orin", "/usr/src/tensorrt/bin/trtexec", 2048,
                          "JetPack 6 (TensorRT 10.3); memory is shared with the CPU, so the workspace is modest"),
    "rtx": Target("rtx", "trtexec", 8192, "desktop RTX GPU with TensorRT 10.x; trtexec on PATH"),
}
TIMING_CACHE = "timing.cache"


def target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; expected one of {', '.join(TARGETS)}") from None


def command(bundle: Bundle, component: str, precision: str, *, workspace_mb: int,
            keep_fp32: str = "vae", timing_cache: str = TIMING_CACHE) -> list[str]:
    """The trtexec arguments (after the executable) that build one component's engine."""
    check_precision(precision)
    spec = bundle.component(component)
    ranges = profile_of(spec)
    graph = source_graph(bundle, spec, precision)
    args = [f"--onnx={graph}", f"--saveEngine={plan_name(component, precision)}"]
    if any(r.dynamic for r in ranges):
        args += [f"--{level}Shapes={shapes_arg(ranges, level)}" for level in ("min", "opt", "max")]
    if precision in ("fp16", "int8"):
        args.append("--fp16")
    if precision == "int8":
        args.append("--int8")
    if keep_fp32_applies(component, precision, keep_fp32):
        names = fp32_node_names(bundle.root / graph)
        if names:
            args += ["--precisionConstraints=obey", f"--layerPrecisions={layer_precisions_arg(names)}"]
    args += [f"--memPoolSize=workspace:{workspace_mb}M", f"--timingCacheFile={timing_cache}", "--skipInference"]
    return args


def script(bundle: Bundle, precision: str, *, target_name: str = "jetson-orin", components: list[str] | None = None,
           workspace_mb: int | None = None, keep_fp32: str = "vae") -> str:
    """The shell script text: one trtexec line per component, then the register hint."""
    chosen = target(target_name)
    workspace = workspace_mb or chosen.workspace_mb
    names = [c.name for c in select_components(bundle, components)]
    plans = " ".join(plan_name(n, precision) for n in names)
    lines = [
        "#!/usr/bin/env bash",
        f"# TensorRT engines for {bundle.manifest.family} {bundle.manifest.variant}, {precision}, target {chosen.name}",
        f"# ({chosen.note}). Run on the target: bash {script_name(chosen.name, precision)} [BUNDLE_DIR]",
        "set -euo pipefail",
        'cd "${1:-$(dirname "$0")}"',
        f'TRTEXEC="${{TRTEXEC:-{chosen.trtexec}}}"',
    ]
    for name in names:
        args = command(bundle, name, precision, workspace_mb=workspace, keep_fp32=keep_fp32)
        lines += [f'echo "building {name} ({precision})"',
                  '"$TRTEXEC" ' + " ".join(shlex.quote(a) for a in args)]
    lines += [f'echo "built: {plans}"',
              f'echo "now record them in the manifest: python -m engines register \\"$PWD\\" {plans}"']
    return "\n".join(lines) + "\n"


def script_name(target_name: str, precision: str) -> str:
    return f"build_engines_{target_name}_{precision}.sh"


def write_script(bundle: Bundle, precision: str, *, out: Path | None = None, **options) -> Path:
    """Write the script (into the bundle unless ``out`` is given), executable, and return its path."""
    path = out or bundle.root / script_name(options.get("target_name", "jetson-orin"), precision)
    path.write_text(script(bundle, precision, **options), encoding="utf-8")
    path.chmod(0o755)
    return path
