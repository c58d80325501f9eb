"""What the CPU can do, read from ``/proc/cpuinfo``: the three x86 classes the product meets, and a Jetson."""
from __future__ import annotations

import pytest

from runtime.cpu import parse_cpuinfo, this_cpu

ZEN3 = ("fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi1 bmi2 sha_ni vaes vpclmulqdq")
ZEN4 = ZEN3 + " avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx512_vbmi2"
SAPPHIRE_RAPIDS = ZEN4 + " avx_vnni avx512_fp16 amx_bf16 amx_tile amx_int8"
SKYLAKE_SP = ZEN3 + " avx512f avx512dq avx512bw avx512vl"  # AVX-512 before VNNI


def _x86(model: str, flags: str) -> str:
    return f"processor\t: 0\nvendor_id\t: X\nmodel name\t: {model}\nflags\t\t: {flags}\n\nprocessor\t: 1\n" \
           f"model name\t: {model}\nflags\t\t: {flags}\n"


@pytest.mark.parametrize("model, flags, isa, bf16, int8_dot, fp16", [
    ("AMD EPYC 7B13", ZEN3, "AVX2", False, False, False),
    ("AMD EPYC 9B14", ZEN4, "AVX-512", True, True, False),
    ("Intel(R) Xeon(R) Platinum 8481C", SAPPHIRE_RAPIDS, "AMX", True, True, True),
    ("Intel(R) Xeon(R) Gold 6148", SKYLAKE_SP, "AVX-512", False, False, False),
])
def test_x86_classes_and_their_arithmetic(model, flags, isa, bf16, int8_dot, fp16):
    cpu = parse_cpuinfo(_x86(model, flags), "x86_64")
    assert (cpu.model, cpu.isa, cpu.bf16, cpu.int8_dot, cpu.fp16) == (model, isa, bf16, int8_dot, fp16)
    assert cpu.describe().startswith(f"{model} ({isa}; ")
    assert ("no INT8 dot products" in cpu.describe()) == (not int8_dot)


def test_jetson_orin_reads_the_arm_features_line():
    text = ("processor\t: 0\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
            "asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat ilrcpc flagm\nCPU implementer\t: 0x41\n")
    cpu = parse_cpuinfo(text, "aarch64")
    assert (cpu.isa, cpu.bf16, cpu.int8_dot, cpu.fp16) == ("Arm", False, True, True)
    assert cpu.model  # no model name line on Arm: platform's answer or the machine name


def test_without_cpuinfo_every_answer_is_the_conservative_one():
    cpu = parse_cpuinfo("", "x86_64")
    assert (cpu.bf16, cpu.int8_dot, cpu.fp16, cpu.flags) == (False, False, False, frozenset())


def test_this_cpu_is_read_once():
    assert this_cpu() is this_cpu() and this_cpu().model


def test_int8_sums_saturate_only_on_x86_without_dot_products():
    from runtime.cpu import int8_saturates

    zen3, zen4 = (parse_cpuinfo(_x86("AMD EPYC", flags), "x86_64") for flags in (ZEN3, ZEN4))
    skylake, amx = (parse_cpuinfo(_x86("Xeon", flags), "x86_64") for flags in (SKYLAKE_SP, SAPPHIRE_RAPIDS))
    arm = parse_cpuinfo("Features\t: fp asimd asimddp\n", "aarch64")
    assert [int8_saturates(c) for c in (zen3, skylake, zen4, amx, arm)] == [True, True, False, False, False]
