"""How many UNet calls each VideoCrafter sampler needs: distance to the converged solution, and time at DDIM-50's.

Same prompt, same initial noise, the bundle's guidance. Two comparisons of the
final latent (relative RMS distance ``‖x − x_ref‖ / ‖x_ref‖``) at 10/15/20/25/50 steps:

- ``official``: against the official DDIM with eta 0 at 250 steps, each sampler as
  the pipeline runs it. The official DDIM's timesteps start lower with fewer steps
  (981 at 50, 997 at 250) and the solvers start at 999, so this distance also holds
  the gap between starting points, not only the solver's discretization error.
- ``same_start``: every schedule starting at 999 (diffusers' ``linspace`` spacing),
  against DDIM with eta 0 at 250 such steps (DPM-Solver++ of order 1 is exactly
  that DDIM): the discretization error alone, where DDIM is the order-1 row.

A sampler reaches DDIM-50 at the fewest steps whose ``official`` distance is at most
the official DDIM-50's (eta 0); the end-to-end ``generate`` time (decode included,
the bundle's eta for DDIM) is measured there.
"""
from __future__ import annotations

import numpy as np

from benchmarks.measure import Row, measure
from runtime.arrays import agreement
from runtime.videocrafter1 import VideoPipeline
from runtime.videocrafter1.dpm_solver import DPMSolverMultistep
from runtime.videocrafter1.sampling import denoise

STEPS = (10, 15, 20, 25, 50)
REFERENCE_STEPS = 250
# sampler name -> eta for the distances (DDIM at eta 0: the deterministic sampler the solvers are compared with)
ETAS = {"ddim": 0.0, "dpmpp-2m": None, "unipc": None}
TARGET_STEPS = 50  # of DDIM (eta 0), the distance the others have to reach
ORDER_1 = "ddim (start 999)"


def relative_distance(reference: np.ndarray, found: np.ndarray) -> float:
    """‖found − reference‖ / ‖reference‖."""
    return 10.0 ** (-agreement(reference, found).snr_db / 20.0)


def matching_steps(distances: dict[int, float], target: float) -> int | None:
    """The fewest steps whose distance is at most ``target`` (None when no step count gets there)."""
    return min((steps for steps, d in distances.items() if d <= target), default=None)


def _order_1(pipeline: VideoPipeline, steps: int) -> DPMSolverMultistep:
    """DDIM with eta 0 on timesteps from 999 (DPM-Solver++ of order 1)."""
    solver = DPMSolverMultistep(pipeline.constants.sampling.diffusion, order=1)
    solver.set_timesteps(steps)
    return solver


def convergence(pipeline: VideoPipeline, prompt: str, *, repeats: int, steps: tuple[int, ...] = STEPS,
                reference_steps: int = REFERENCE_STEPS, target_steps: int = TARGET_STEPS, seed: int = 0) -> dict:
    """Both distance tables of every sampler at every step count (a T2V bundle), and the time of ``generate``
    where each reaches the official DDIM's distance at ``target_steps`` (one of ``steps``)."""
    if target_steps not in steps:
        raise ValueError(f"target_steps {target_steps} must be one of the step counts {list(steps)}")
    c = pipeline.constants
    shape = pipeline.latent_shape(1, c.frames, c.height, c.width)
    x_T = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    context, uncond = pipeline.conditioning([prompt], [c.uncond_prompt], None, c.height, c.width)
    predict = pipeline.predictor(context, uncond, c.fps)

    def final_latent(sampler) -> np.ndarray:
        return denoise(predict, x_T, sampler, guidance_scale=c.sampling.guidance_scale)

    official = final_latent(pipeline.make_sampler("ddim", reference_steps, 0.0))
    same_start = final_latent(_order_1(pipeline, reference_steps))
    tables = {"official": {"reference": f"official DDIM, eta 0, {reference_steps} steps", "distance": {}},
              "same_start": {"reference": f"DDIM, eta 0, {reference_steps} steps from 999", "distance": {}}}
    for name, eta in ETAS.items():
        finals = {n: final_latent(pipeline.make_sampler(name, n, eta)) for n in steps}
        tables["official"]["distance"][name] = {n: relative_distance(official, x) for n, x in finals.items()}
        if name == "ddim":
            finals = {n: final_latent(_order_1(pipeline, n)) for n in steps}
        tables["same_start"]["distance"][ORDER_1 if name == "ddim" else name] = {
            n: relative_distance(same_start, x) for n, x in finals.items()}
    target = tables["official"]["distance"]["ddim"][target_steps]
    result = {
        "prompt": prompt, "latent_shape": list(shape), "steps": list(steps), "tables": tables,
        "target": f"official DDIM-{target_steps}", "target_distance": target,
        "unet_calls": {name: {n: len(pipeline.make_sampler(name, n, eta).timesteps) for n in steps}
                       for name, eta in ETAS.items()},
        "matched": {}}
    def end_to_end(name: str, count: int) -> float:
        return measure(lambda: pipeline.generate(prompt, sampler=name, steps=count, seed=seed, progress=False),
                       repeats).median_s

    for name in ETAS:
        found = matching_steps(tables["official"]["distance"][name], target)
        result["matched"][name] = {"steps": found, "end_to_end_s": None if found is None else end_to_end(name, found)}
    result["baseline"] = {"steps": target_steps, "end_to_end_s": end_to_end("ddim", target_steps)}
    return result


def rows(variant: str, report: dict) -> list[Row]:
    """Table rows: ``generate`` at the step count where each sampler reaches DDIM-50, and DDIM-50 itself."""
    shape = "x".join(str(d) for d in report["latent_shape"])
    found = [Row("videocrafter1", variant, f"generate_video {name} at {report['target']}'s distance "
                 f"({m['steps']} steps)", shape, "onnxruntime", m["end_to_end_s"] * 1e3)
             for name, m in report["matched"].items() if m["steps"] is not None]
    base = report["baseline"]
    return found + [Row("videocrafter1", variant, f"generate_video ddim {base['steps']} steps (bundle eta)", shape,
                        "onnxruntime", base["end_to_end_s"] * 1e3)]


def plot(variant: str, report: dict) -> dict:
    """Distance to the official converged latent against steps, one line per sampler."""
    official = report["tables"]["official"]
    return {"file": f"bench_videocrafter1_{variant}_sampler_convergence.svg",
            "title": f"videocrafter1 {variant}: distance to {official['reference']}",
            "x_label": "steps", "y_label": "relative distance",
            "series": {name: list(by_steps.items()) for name, by_steps in official["distance"].items()}}


def table(variant: str, report: dict) -> list[str]:
    """Both convergence tables as markdown lines."""
    steps = report["steps"]
    base = report["baseline"]
    lines = [f"{variant}: relative distance of the final latent (prompt {report['prompt']!r}, latent "
             f"{report['latent_shape']}); UNet calls = steps unless noted; end to end with the official DDIM at "
             f"{base['steps']} steps (bundle eta): {base['end_to_end_s']:.2f} s"]
    for key, extra in (("official", f" | reaches {report['target']} at | end to end there |"), ("same_start", " |")):
        found = report["tables"][key]
        lines += ["", f"to {found['reference']}:",
                  "| sampler | " + " | ".join(f"{n} steps" for n in steps) + extra,
                  "|---" * (len(steps) + extra.count("|")) + "|"]
        for name, by_steps in found["distance"].items():
            calls = report["unet_calls"].get(name, {})
            cells = [f"{by_steps[n]:.2e}" + (f" ({calls[n]} calls)" if calls.get(n, n) != n else "") for n in steps]
            row = f"| {name} | " + " | ".join(cells)
            if key == "official":
                m = report["matched"][name]
                row += " | " + ("-" if m["steps"] is None else f"{m['steps']} steps") + " | " + (
                    "-" if m["end_to_end_s"] is None else f"{m['end_to_end_s']:.2f} s")
            lines.append(row + " |")
    return lines
