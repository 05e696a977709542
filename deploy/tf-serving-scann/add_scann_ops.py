"""Adds the ScaNN TensorFlow ops to a TF Serving source tree (run by ./Dockerfile, inside the build image).

ScaNN's own TF Serving recipe (google-research/google-research, scann/tf_serving) at our versions:
1. fetch ScaNN's sources (the google-research commit that set scann/setup.py to --scann-version,
   unless --scann-commit names one) and check their version;
2. point ScaNN's TensorFlow dependency (the pip package's headers and library, @local_config_tf)
   at TF Serving's own TensorFlow, and drop the Python bindings, which a server does not link;
3. add an alwayslink `scann_ops_static` library of the ops and their kernels, register ScaNN as
   the repository @com_google_scann, and add that library to SUPPORTED_TENSORFLOW_OPS of
   tensorflow_serving/model_servers/BUILD, which tensorflow_model_server links.
Every edit is checked: a source layout that differs from what it expects stops the build.
"""

from __future__ import annotations

import argparse
import io
import pathlib
import re
import subprocess
import tarfile
import tempfile
import urllib.request

REPOSITORY = "https://github.com/google-research/google-research"
TF_DEPENDENCIES = {
    '"@local_config_tf//:libtensorflow_framework"': '"@org_tensorflow//tensorflow/core:framework"',
    '"@local_config_tf//:tf_header_lib"': '"@org_tensorflow//tensorflow/core:lib"',
}
STATIC_LIBRARY = """
cc_library(
    name = "scann_ops_static",
    alwayslink = 1,
    deps = [":scann_ops", ":scann_ops_kernels"],
)
"""
OPS_ANCHOR = '"@org_tensorflow_text//tensorflow_text:ops_lib",'
SCANN_OPS = '"@com_google_scann//scann/scann_ops/cc:scann_ops_static",'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serving", type=pathlib.Path, required=True, help="the TF Serving source tree")
    parser.add_argument("--scann", type=pathlib.Path, required=True, help="where ScaNN's sources go")
    parser.add_argument("--scann-version", required=True)
    parser.add_argument("--scann-commit", default="", help="google-research commit (default: resolved)")
    parser.add_argument("--info", type=pathlib.Path, required=True, help="file to record what was built")
    args = parser.parse_args()
    commit = args.scann_commit or release_commit(args.scann_version)
    fetch_scann(commit, args.scann, args.scann_version)
    patch_scann(args.scann)
    patch_serving(args.serving, args.scann)
    args.info.write_text(f"scann_version={args.scann_version}\nscann_commit={commit}\n", encoding="utf-8")


def release_commit(version: str) -> str:
    """The first google-research commit whose scann/setup.py says `version`."""
    with tempfile.TemporaryDirectory() as clone:
        subprocess.run(["git", "clone", "--quiet", "--filter=blob:none", "--no-checkout", "--single-branch",
                        REPOSITORY, clone], check=True)
        log = subprocess.run(["git", "-C", clone, "log", "--reverse", "--format=%H", "-S", f'version="{version}"',
                              "--", "scann/setup.py"], check=True, capture_output=True, text=True).stdout.split()
    if not log:
        raise SystemExit(f"no google-research commit sets scann/setup.py to version {version}")
    print(f"ScaNN {version}: google-research commit {log[0]}")
    return log[0]


def fetch_scann(commit: str, target: pathlib.Path, version: str) -> None:
    with urllib.request.urlopen(f"{REPOSITORY}/archive/{commit}.tar.gz", timeout=600) as response:
        archive = tarfile.open(fileobj=io.BytesIO(response.read()), mode="r:gz")
    prefix = f"google-research-{commit}/scann/"
    members = [m for m in archive.getmembers() if m.name.startswith(prefix) and ".." not in m.name.split("/")
               and (m.isfile() or m.isdir())]
    for member in members:
        member.name = member.name[len(prefix):]
    target.mkdir(parents=True)
    archive.extractall(target, members=[m for m in members if m.name])  # noqa: S202 (GitHub archive, paths checked)
    found = re.search(r'version="([^"]+)"', (target / "setup.py").read_text(encoding="utf-8"))
    if not found or found.group(1) != version:
        raise SystemExit(f"google-research {commit} holds ScaNN {found and found.group(1)}, not {version}")


def patch_scann(root: pathlib.Path) -> None:
    for build in [*root.rglob("BUILD.bazel"), *root.rglob("BUILD")]:
        text = build.read_text(encoding="utf-8")
        for old, new in TF_DEPENDENCIES.items():
            text = text.replace(old, new)
        if "pybind_library(" in text or "pybind_extension(" in text:
            text = re.sub(r'load\("@pybind11_bazel//:build_defs.bzl"[^)]*\)\n', "", text)
            text = re.sub(r"\npybind_(library|extension)\(\n(?:    .*\n|\n)*?\)\n", "\n", text)
        build.write_text(text, encoding="utf-8")
    ops_build = root / "scann" / "scann_ops" / "cc" / "BUILD.bazel"
    text = ops_build.read_text(encoding="utf-8")
    for target in ('name = "scann_ops"', 'name = "scann_ops_kernels"'):
        if target not in text:
            raise SystemExit(f"{ops_build} has no {target}: ScaNN's layout changed, adapt this script")
    ops_build.write_text(text + STATIC_LIBRARY, encoding="utf-8")
    leftover = [str(p) for p in root.rglob("BUILD*") if "@local_config_tf" in p.read_text(encoding="utf-8")]
    if leftover:
        raise SystemExit(f"ScaNN still depends on @local_config_tf in {leftover}")


def patch_serving(serving: pathlib.Path, scann: pathlib.Path) -> None:
    build = serving / "tensorflow_serving" / "model_servers" / "BUILD"
    text = build.read_text(encoding="utf-8")
    if "SUPPORTED_TENSORFLOW_OPS" not in text or OPS_ANCHOR not in text:
        raise SystemExit(f"{build}: no SUPPORTED_TENSORFLOW_OPS with {OPS_ANCHOR}; adapt this script")
    build.write_text(text.replace(OPS_ANCHOR, f"{OPS_ANCHOR}\n    {SCANN_OPS}", 1), encoding="utf-8")
    workspace = serving / "WORKSPACE"
    workspace.write_text(workspace.read_text(encoding="utf-8")
                         + f'\nlocal_repository(name = "com_google_scann", path = "{scann}")\n', encoding="utf-8")


if __name__ == "__main__":
    main()
