"""The machine a benchmark ran on: CPU, cores, memory, load, Python and library versions.

`python -m bench.machine --out FILE.json` writes it on its own; every section embeds it in its JSON.
Library versions come from the installed distributions' metadata, so nothing heavy is imported.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import pathlib
import platform
from typing import Any

import psutil

LIBRARIES = (
    "tensorflow",
    "tf-keras",
    "tensorflow-recommenders",
    "scann",
    "tensorflow-serving-api",
    "grpcio",
    "numpy",
    "pandas",
    "faiss-cpu",
    "annoy",
    "implicit",
    "matplotlib",
    "psutil",
)

CPUINFO = pathlib.Path("/proc/cpuinfo")
# The SIMD levels the ANN kernels dispatch on, oldest first.
VECTOR_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    if CPUINFO.is_file():
        for line in CPUINFO.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_generation(cpuinfo: pathlib.Path = CPUINFO) -> dict[str, Any]:
    """What `cpuinfo` says of the CPU's generation where its model name does not (a cloud VM often shows
    only "AMD EPYC"): family and model numbers (first CPU), and the vector extensions ScaNN and Faiss use."""
    fields: dict[str, str] = {}
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {"family": fields.get("cpu family"), "model": fields.get("model"),
            "vector_extensions": [name for name in VECTOR_EXTENSIONS if name in flags]}


def usable_cores() -> int:
    """The number of cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def serving_thread_flags() -> dict[str, int]:
    """The TF Serving thread flags the deploy manifests use (deploy/k8s/serving-*.yaml), sized to this machine:
    intra-op threads = the usable cores, and each request's ops run in the request's own thread (inter-op -1)."""
    return {"tensorflow_intra_op_parallelism": usable_cores(), "tensorflow_inter_op_parallelism": -1}


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed version of each distribution, None where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare figures across machines (and to judge noise: the load average)."""
    memory = psutil.virtual_memory()
    return {
        "cpu_model": cpu_model(),
        "cpu_generation": cpu_generation(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable_cores(),
        "ram_gib": round(memory.total / 2**30, 1),
        "available_ram_gib": round(memory.available / 2**30, 1),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="where to write the JSON")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(machine_info(), indent=2) + "\n")


if __name__ == "__main__":
    main()
