"""The machine record: the CPU's generation where a cloud VM's model name hides it."""

from __future__ import annotations

import pathlib

import pytest

from bench.machine import cpu_generation

GENOA = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni
processor\t: 1
cpu family\t: 99
model\t\t: 99
"""


@pytest.mark.parametrize(("cpuinfo", "expected"), [
    (GENOA, {"family": "25", "model": "17",
             "vector_extensions": ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni"]}),
    ("processor\t: 0\ncpu family\t: 6\nmodel\t\t: 85\nflags\t\t: fpu sse2\n",
     {"family": "6", "model": "85", "vector_extensions": []}),
    ("", {"family": None, "model": None, "vector_extensions": []}),
], ids=["avx512", "no-avx", "empty"])
def test_cpu_generation_reads_the_first_cpus_family_model_and_extensions(tmp_path: pathlib.Path, cpuinfo: str,
                                                                         expected: dict) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    assert cpu_generation(path) == expected


def test_a_missing_cpuinfo_gives_no_generation(tmp_path: pathlib.Path) -> None:
    assert cpu_generation(tmp_path / "absent") == {"family": None, "model": None, "vector_extensions": []}
