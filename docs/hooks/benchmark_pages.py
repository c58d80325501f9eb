"""MkDocs hook: ``benchmarks/results.md``, generated at every build from the JSON files of ``benchmarks/results/``.

Each ``*.json`` written by ``python -m benchmarks ... --json FILE`` becomes one section: its date,
the CPU (model, class, native BF16 / INT8 dot products, core count), GPU, library versions,
the command, the ONNX Runtime settings, then per family a table of its rows, its plots (drawn as SVG
from the plot data in the JSON by ``benchmarks.figures``) and its notes.
Files of the older format (no ``date``, no ``cpu_class``) show ``-`` there; a file with top-level
``rows`` (``python -m benchmarks.gpu --json``) shows its rows, one with ``soak``
(``python -m benchmarks.serving --soak``) its load table; any other JSON is listed as not shown.
An empty or missing folder gives a page that says no results are recorded yet. A file that is not
JSON at all is a warning, so ``mkdocs build --strict`` fails on it.

``EDGE_BENCH_RESULTS=/some/folder`` reads another folder (to try the page on a JSON file
outside the repository). The page is never written to disk and never edited by hand.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File

from benchmarks.figures import svg_line_plot

log = logging.getLogger("mkdocs.hooks.benchmark_pages")

PAGE = "benchmarks/results.md"
PLOTS = "benchmarks/plots"  # the generated SVG files, beside the page
ENV = "EDGE_BENCH_RESULTS"
RESULTS = Path("benchmarks") / "results"
# the table's columns, in the order of python -m benchmarks' own table (without the FLOP columns)
COLUMNS = ("bundle", "item", "shape", "backend", "precision", "runtime ms", "torch ms", "torch/rt", "fp32/this",
           "cosine", "SNR dB", "peak MB")


def results_dir(config) -> Path:
    """``$EDGE_BENCH_RESULTS`` if set, else ``benchmarks/results/`` beside ``mkdocs.yml``."""
    override = os.environ.get(ENV)
    if override:
        return Path(override)
    return Path(config.config_file_path).parent / RESULTS


def _cell(value: Any) -> str:
    """Text for a table cell: ``-`` for nothing, pipes and Markdown emphasis characters escaped."""
    if value is None or value == "":
        return "-"
    text = str(value).replace("\n", " ")
    for char in "\\|*_[]<>`":
        text = text.replace(char, "\\" + char)
    return text


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 10000 else f"{value:.4g}"


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(row: dict, key: str, numerator: str) -> float | None:
    """A derived ratio as written by ``_row_json``, or computed from the row where the file lacks it."""
    if row.get(key) is not None:
        return row[key]
    top, bottom = row.get(numerator), row.get("runtime_ms")
    return top / bottom if top is not None and bottom else None


def rows_table(rows: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "| " + " | ".join("---" if i < 5 else "---:" for i in range(len(COLUMNS))) + " |"]
    for row in rows:
        shape = row.get("shape")
        cells = [_cell(row.get("bundle")), _cell(row.get("item")), f"`{shape}`" if shape else "-",
                 _cell(row.get("backend")), _cell(row.get("precision")), _ms(row.get("runtime_ms")),
                 _ms(row.get("torch_ms")), _fixed(_ratio(row, "torch_over_runtime", "torch_ms"), 2),
                 _fixed(_ratio(row, "fp32_over_this", "backend_fp32_ms"), 2), _fixed(row.get("cosine"), 6),
                 _fixed(row.get("snr_db"), 1), _ms(row.get("runtime_peak_mb"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _yes_no(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "no")


def device_lines(result: dict) -> list[str]:
    device = result.get("device") or {}
    versions = device.get("versions") or {}
    ort = result.get("onnxruntime_settings") or {}
    facts = [
        ("date", result.get("date")),
        ("CPU", device.get("cpu")),
        ("CPU class", device.get("cpu_class")),
        ("native BF16 / INT8 dot products",
         f"{_yes_no(device.get('cpu_bf16'))} / {_yes_no(device.get('cpu_int8_dot'))}"),
        ("logical CPUs", device.get("cpu_count")),
        ("GPU", device.get("gpu") or ("none" if device else None)),
        ("platform", device.get("platform")),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v) or None),
        ("ONNX Runtime", "; ".join(f"{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in ort.items()
                                   if k in ("graph_optimization_level", "intra_op_num_threads", "providers")) or None),
        ("statistic", f"{result['statistic']} of {result['repeats']} runs after 1 warm-up"
         if "statistic" in result and "repeats" in result else result.get("statistic")),
        ("wall time", f"{result['wall_s']:.0f} s" if isinstance(result.get("wall_s"), (int, float)) else None),
    ]
    lines = ["| run | |", "| --- | --- |"]
    command = result.get("command")
    lines.append(f"| command | {'`' + command + '`' if command else '-'} |")
    lines += [f"| {name} | {_cell(value)} |" for name, value in facts]
    return lines


def breakdown_lines(family: str, figures: dict) -> list[str]:
    lines = []
    for b in figures.get("end_to_end_breakdown", []):
        try:
            graphs = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in b["graph_s"].items())
            lines.append(f"- {_cell(b['bundle'])}: end to end {b['end_to_end_s'] * 1e3:.1f} ms = graphs "
                         f"({_cell(graphs)}) + outside the graphs {b['outside_graphs_s'] * 1e3:.1f} ms "
                         f"({b['outside_graphs_share']:.1%})")
        except (KeyError, TypeError, AttributeError):
            continue
    video = [v for v in figures.get("whole_video") or [] if isinstance(v, dict)]
    if video:
        lines += ["", "Whole video (seconds; UNet marked * adds the calls not made at the measured per-call time):", "",
                  "| variant | sampler | steps | guided | backend | precision | text | UNet | VAE | opening/freeing "
                  "| total | peak RSS GiB | UNet GFLOP/s | VAE GFLOP/s | PSNR vs ONNX Runtime FP32 dB |",
                  "| --- | --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for v in video:
            try:
                unet = f"{v['unet_s']:.0f}{' *' if v.get('projected') else ''}"
                lines.append("| " + " | ".join(_cell(x) for x in (
                    v["variant"], v["sampler"], v["steps"], _yes_no(v["guided"]), v["backend"], v["precision"],
                    f"{v['text_s']:.1f}", unet, f"{v['vae_s']:.0f}", f"{v['switch_s']:.0f}",
                    f"{v['end_to_end_s']:.0f}", f"{v['peak_rss_bytes'] / 2**30:.2f}",
                    *(f"{v[k]:.0f}" if k in v else "-" for k in ("unet_gflops_per_s", "vae_gflops_per_s")),
                    _fixed(v.get("psnr_vs_fp32_db"), 1))) + " |")
            except (KeyError, TypeError, ValueError):
                continue
        lines.append("")
    others = sorted(k for k in figures if k not in ("end_to_end_breakdown", "whole_video"))
    if others:
        lines.append(f"- also in the JSON (`families.{family}.figures`): " + ", ".join(f"`{k}`" for k in others))
    return lines


def plot_files(path: Path, plots: Any) -> list[tuple[str, str, str]]:
    """(file under :data:`PLOTS`, title, SVG text) of every well-formed plot of one family's report."""
    drawn = []
    for plot in plots if isinstance(plots, list) else []:
        try:
            svg = svg_line_plot(plot["title"], plot["x_label"], plot["y_label"], plot["series"])
            name = f"{PLOTS}/{path.stem}-{Path(plot['file']).stem}.svg"
        except (KeyError, TypeError, ValueError) as error:
            log.warning("benchmark results: a plot of %s cannot be drawn (%s)", path, error)
            continue
        drawn.append((name, str(plot["title"]), svg))
    return drawn


def soak_lines(soak: dict) -> list[str]:
    """A ``python -m benchmarks.serving --soak`` result: its load, a row per workload, retries and server memory."""
    lines = [f"Soak: {soak.get('seconds', 0):.0f} s, {soak.get('clients')} clients, {soak.get('servers')} "
             "server(s); every answer checked against the same request run locally.", "",
             "| workload | requests | errors | requests/s | p50 ms | p95 ms | p99 ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in soak.get("rows") or []:
        lines.append("| " + " | ".join(_cell(row.get(k)) for k in ("workload", "requests", "errors", "requests/s",
                                                                    "p50 ms", "p95 ms", "p99 ms")) + " |")
    rss = soak.get("server_rss_mb") or {}
    lines += ["", f"- retried requests: {_cell(soak.get('retried'))}; errors: {_cell(len(soak.get('errors') or []))}",
              f"- server RSS {_cell(rss.get('start'))} MB at the start, {_cell(rss.get('end'))} MB at the end: "
              f"{_cell(rss.get('growth_per_1000_requests'))} MB per 1000 requests", ""]
    return lines


def section(path: Path, result: Any, drawn: list | None = None) -> list[str]:
    """The page's section for one JSON file; the plots it draws are appended to ``drawn``."""
    drawn = [] if drawn is None else drawn
    lines = [f"## {path.name}", ""]
    if isinstance(result, dict) and "families" not in result and isinstance(result.get("rows"), list):
        # python -m benchmarks.gpu --json: {gpu, torch, cuda, statistic, rows}
        result = {**result, "device": {"gpu": result.get("gpu"), "versions": {"torch": result.get("torch"),
                                                                               "cuda": result.get("cuda")}},
                  "families": {"torch CUDA": {"rows": result["rows"]}}}
    if isinstance(result, dict) and isinstance(result.get("soak"), dict):
        return lines + device_lines(result) + [""] + soak_lines(result["soak"])
    if not isinstance(result, dict) or not isinstance(result.get("families"), dict):
        log.info("%s is not a python -m benchmarks --json result; listed, not shown", path)
        return lines + ["Not a `python -m benchmarks --json` result; not shown.", ""]
    lines += device_lines(result) + [""]
    for family, report in result["families"].items():
        report = report if isinstance(report, dict) else {}
        lines += [f"### {_cell(family)}", ""]
        rows = [r for r in report.get("rows", []) if isinstance(r, dict)]
        lines += rows_table(rows) if rows else ["No rows."]
        lines.append("")
        for name, title, svg in plot_files(path, report.get("plots")):
            drawn.append((name, svg))
            lines += [f"![{_cell(title)}]({Path(name).relative_to(Path(PAGE).parent)})", ""]
        extra = breakdown_lines(family, report.get("figures") or {})
        notes = [f"- {_cell(note)}" for note in report.get("notes") or []]
        if extra or notes:
            lines += extra + notes + [""]
    return lines


def render(folder: Path, shown: str | Path = RESULTS, drawn: list | None = None) -> str:
    """The whole page for the JSON files in ``folder`` (named ``shown`` on the page); the plots it shows are
    appended to ``drawn`` as (file, SVG text)."""
    lines = ["# Recorded results", "",
             "<!-- Generated by docs/hooks/benchmark_pages.py from benchmarks/results/*.json at every build; "
             "do not edit. -->", "",
             f"Every `*.json` file under `{shown}/` (written by `python -m benchmarks ... --json FILE`), newest "
             "first; peak MB is the runtime's. Columns: see [Benchmarks](index.md#what-the-columns-mean).", ""]
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            log.warning("benchmark results: %s is not readable JSON (%s); fix or remove it", path, error)
    if not found:
        return "\n".join(lines + [f"No results are recorded yet: `{shown}/` holds no JSON file.", ""])
    found.sort(key=lambda item: (str(item[1].get("date") or "") if isinstance(item[1], dict) else "",
                                 item[0].name), reverse=True)
    for path, result in found:
        lines += section(path, result, drawn)
    return "\n".join(lines)


def on_files(files, config):
    folder = results_dir(config)
    shown = folder if os.environ.get(ENV) else RESULTS
    drawn: list[tuple[str, str]] = []
    files.append(File.generated(config, PAGE, content=render(folder, shown, drawn)))
    for name, svg in drawn:
        files.append(File.generated(config, name, content=svg))
    return files


def on_serve(server, config, builder):
    folder = results_dir(config)
    if folder.is_dir():
        server.watch(str(folder))
    return server
