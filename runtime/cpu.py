"""What this CPU can do, read once: its model, instruction-set class and native low-precision arithmetic.

The backends' results and speed depend on three facts of the CPU, and every place that
asks (OpenVINO's precision, the INT8 format, ``auto``, the benchmarks' labels, the tests)
reads them here:

- **BF16**: native BF16 arithmetic (x86: AVX-512 BF16 or AMX BF16; Arm: the BF16
  extension). Without it OpenVINO runs a ``bf16`` request in FP32.
- **INT8 dot products** that accumulate u8 x s8 pairs straight into int32 (x86: AVX-512
  VNNI, AVX-VNNI or AMX INT8; Arm: the dot-product extension). Without them x86 kernels
  (ONNX Runtime's MLAS, OpenVINO's oneDNN) add two u8 x s8 products in int16 first, which
  saturates for 8-bit weights (255 x 127 x 2 > 32767): :func:`int8_saturates`.
- **FP16** arithmetic (x86: AVX-512 FP16; Arm: half-precision SIMD).

Linux reports them in ``/proc/cpuinfo``; elsewhere the flags are empty and each answer is
the conservative one (no BF16, no INT8 dot products).
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# flag names as Linux spells them, x86 first, then Arm (its "Features" line)
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
FP16_FLAGS = frozenset({"avx512_fp16", "asimdhp"})


@dataclass(frozen=True)
class Cpu:
    """A CPU as the backends see it: ``model`` name, ``machine`` (``x86_64``, ``aarch64``) and its flags."""

    model: str
    machine: str
    flags: frozenset[str]

    @property
    def bf16(self) -> bool:
        """Native BF16 arithmetic."""
        return bool(self.flags & BF16_FLAGS)

    @property
    def int8_dot(self) -> bool:
        """INT8 dot products into int32 without an int16 intermediate (VNNI, AMX INT8, Arm dot product)."""
        return bool(self.flags & INT8_DOT_FLAGS)

    @property
    def fp16(self) -> bool:
        """Native FP16 arithmetic."""
        return bool(self.flags & FP16_FLAGS)

    @property
    def isa(self) -> str:
        """The class a figure is labelled with: ``AMX``, ``AVX-512``, ``AVX2``, ``Arm`` or the machine name."""
        if {"amx_bf16", "amx_int8"} & self.flags:
            return "AMX"
        if "avx512f" in self.flags:
            return "AVX-512"
        if "avx2" in self.flags:
            return "AVX2"
        if self.machine in ("aarch64", "arm64"):
            return "Arm"
        return self.machine or "unknown"

    def describe(self) -> str:
        """One line for a log or a table: model, class, and what it lacks or has of BF16 / VNNI."""
        return (f"{self.model} ({self.isa}; {'native BF16' if self.bf16 else 'no native BF16'}, "
                f"{'INT8 dot products' if self.int8_dot else 'no INT8 dot products (VNNI)'})")


def parse_cpuinfo(text: str, machine: str) -> Cpu:
    """A :class:`Cpu` from the text of ``/proc/cpuinfo`` (its first processor's model name and flags)."""
    model, flags = "", ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = value
    return Cpu(model or platform.processor() or machine, machine, frozenset(flags.split()))


@functools.lru_cache(maxsize=1)
def this_cpu() -> Cpu:
    """The CPU this process runs on (read once)."""
    machine = platform.machine().lower()
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:  # not Linux: no flags to read
        text = ""
    return parse_cpuinfo(text, machine)


def int8_saturates(cpu: Cpu | None = None) -> bool:
    """Whether the default INT8 kernels of ONNX Runtime and OpenVINO saturate on ``cpu`` (default: this one).

    An x86 CPU without INT8 dot products (no VNNI, no AMX: AMD Zen 2/3, Intel before Cascade Lake) multiplies
    u8 activations by s8 weights with ``vpmaddubsw``, which adds each pair of products in int16:
    ``2 x 255 x 127 > 32767``. ONNX Runtime then takes its U8U8 kernels (``session.x64quantprecision``,
    set by :func:`runtime.backends.onnxrt.inference_session`), exact at the same speed (released ImageBind
    vision encoder on an AMD EPYC Zen 3: 30.8 dB against FP32 instead of 27.9 dB, 2141 ms against 2098 ms);
    OpenVINO has no such switch and warns.
    """
    cpu = cpu or this_cpu()
    return cpu.machine in ("x86_64", "amd64", "i686") and not cpu.int8_dot
