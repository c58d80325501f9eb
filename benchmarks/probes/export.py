"""Export a released-size checkpoint through the CLI and report peak memory, wall time per phase and files.

    nice python -m benchmarks.probes.export --out /tmp/vc2 -- videocrafter1 --variant t2v-512-v2 --checkpoint vc2.ckpt

Everything after ``--`` is the ``python -m export`` command line (``--out`` is added). The export runs
in a child process under ``/usr/bin/time -v``; its log is echoed as it comes. The summary gives the
child's peak RSS (``Maximum resident set size``), its wall time, the ``built / traced / checked`` seconds
of every component from the export's own log, and every file written with its size, then one JSON line.
Make checkpoints in the released layouts with ``python -m benchmarks.probes.checkpoints``.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

PHASE_LINE = re.compile(r"^\[(\d+)/(\d+)\] (\S+): (.*) \(peak RSS ([\d.]+) GiB\)$")


def parse_time_v(lines: list[str]) -> dict[str, float]:
    """Peak RSS (GiB) and wall seconds from ``/usr/bin/time -v``'s report."""
    figures = {}
    for line in lines:
        key, _, value = line.strip().partition(": ")
        if key == "Maximum resident set size (kbytes)":
            figures["peak_rss_gib"] = int(value) / 1024**2
        elif key.startswith("Elapsed (wall clock) time"):
            parts = [float(p) for p in value.split(":")]
            figures["wall_s"] = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return figures


def parse_phases(lines: list[str]) -> dict[str, dict[str, float]]:
    """``{component: {built: s, traced: s, checked: s, peak_rss_gib: GiB so far}}`` from the export's log."""
    phases = {}
    for line in lines:
        match = PHASE_LINE.match(line.strip())
        if match:
            steps = dict(step.rsplit(" ", 2)[:2] for step in match.group(4).split(", "))
            phases[match.group(3)] = {k: float(v) for k, v in steps.items()} | {"peak_rss_gib": float(match.group(5))}
    return phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="bundle folder")
    parser.add_argument("export_args", nargs=argparse.REMAINDER, help="-- then the python -m export arguments")
    args = parser.parse_args(argv)
    export_args = [a for a in args.export_args if a != "--"]
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "export", *export_args, "--out", str(args.out)]
    print("$", " ".join(command), flush=True)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in child.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    if child.wait() != 0:
        print(f"export failed with exit code {child.returncode}", file=sys.stderr)
        return child.returncode
    files = {str(p.relative_to(args.out)): p.stat().st_size for p in sorted(args.out.rglob("*")) if p.is_file()}
    summary = {"command": export_args, **parse_time_v(lines), "phases": parse_phases(lines),
               "files": files, "total_gib": sum(files.values()) / 1024**3}
    print(f"peak RSS {summary['peak_rss_gib']:.2f} GiB, wall {summary['wall_s']:.0f} s, "
          f"{len(files)} files, {summary['total_gib']:.2f} GiB")
    for name, phase in summary["phases"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in phase.items()))
    for name, size in files.items():
        print(f"  {name}: {size / 1024**2:.1f} MiB")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
