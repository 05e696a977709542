"""deploy/tf-serving-scann: the TF Serving + ScaNN image is pinned to the versions setup.py pins, compose and
k8s default to its tag, and its source patcher makes the edits ScaNN's TF Serving recipe needs (run on a
small source tree of the same shape; the image itself is not built here: no Docker engine)."""

from __future__ import annotations

import importlib.util
import pathlib
import re
from types import ModuleType

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
IMAGE_DIR = ROOT / "deploy" / "tf-serving-scann"
DOCKERFILE = IMAGE_DIR / "Dockerfile"


def _arg_defaults() -> dict[str, set[str]]:
    """Every `ARG NAME=value` default of the Dockerfile (a name may be declared in several stages)."""
    found: dict[str, set[str]] = {}
    for name, value in re.findall(r"^ARG (\w+)=(\S*)$", DOCKERFILE.read_text(), flags=re.MULTILINE):
        found.setdefault(name, set()).add(value)
    return found


def _pins() -> dict[str, str]:
    """setup.py's install_requires pins: {"tensorflow": "2.20.*", "scann": "1.4.2", ...}."""
    text = (ROOT / "setup.py").read_text()
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', text))


def _image_tag() -> str:
    args = _arg_defaults()
    (serving,), (scann,) = args["TF_SERVING_VERSION"], args["SCANN_VERSION"]
    return f"recommender/tf-serving-scann:{serving}-scann{scann}"


def test_the_dockerfile_pins_the_versions_setup_py_pins():
    args, pins = _arg_defaults(), _pins()
    assert args["TF_SERVING_VERSION"] == {"2.20.0"} and args["SCANN_VERSION"] == {"1.4.2"}
    (serving,), (scann,) = args["TF_SERVING_VERSION"], args["SCANN_VERSION"]
    for package in ("tensorflow", "tensorflow-serving-api"):
        major_minor = pins[package].removesuffix(".*")
        assert serving.startswith(major_minor + "."), (package, pins[package], serving)
    assert pins["scann"] == scann
    assert "FROM tensorflow/serving:${TF_SERVING_VERSION}-devel AS build" in DOCKERFILE.read_text()
    assert 'git clone --depth 1 --branch "${TF_SERVING_VERSION}"' in DOCKERFILE.read_text()


def test_compose_and_kubernetes_default_to_that_image():
    compose = yaml.safe_load((ROOT / "serving" / "docker-compose.yml").read_text())
    retrieval = compose["services"]["retrieval"]
    assert retrieval["image"] == "${TF_SERVING_SCANN_IMAGE:-" + _image_tag() + "}"
    assert (ROOT / "serving" / retrieval["build"]["context"]).resolve() == IMAGE_DIR
    args = {name: {value} for name, value in retrieval["build"]["args"].items()}
    assert args.items() <= _arg_defaults().items()
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "serving-scann.yaml").read_text().split("\n---")[0])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == _image_tag()
    kustomization = yaml.safe_load((ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text())
    tags = {image["name"]: image["newTag"] for image in kustomization["images"]}
    name, tag = _image_tag().split(":")
    assert tags[name] == tag and tags["tensorflow/serving"] == next(iter(_arg_defaults()["TF_SERVING_VERSION"]))


@pytest.mark.parametrize("manifest", ["serving-scann.yaml", "serving-stock.yaml"])
def test_kubernetes_runs_each_request_in_its_own_thread_as_the_benchmarks_do(manifest: str):
    from bench.machine import serving_thread_flags

    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / manifest).read_text().split("\n---")[0])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    cpus = int(container["resources"]["requests"]["cpu"])
    benched = serving_thread_flags()
    assert int(flags["tensorflow_inter_op_parallelism"]) == benched["tensorflow_inter_op_parallelism"] == -1
    # TF Serving applies inter-op -1 only beside a positive intra-op count: the pod's CPUs
    assert int(flags["tensorflow_intra_op_parallelism"]) == cpus > 0


def test_the_docs_say_it_was_not_built_here_and_date_the_public_image():
    deploy = (ROOT / "serving" / "DEPLOY.md").read_text()
    assert "deploy/tf-serving-scann/Dockerfile" in deploy and _image_tag() in deploy
    assert "was never built here" in deploy and "2.11.0" in deploy
    assert "not built here" in DOCKERFILE.read_text().lower()


@pytest.fixture
def patcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("add_scann_ops", IMAGE_DIR / "add_scann_ops.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OPS_BUILD = '''load("@pybind11_bazel//:build_defs.bzl", "pybind_library")

cc_library(
    name = "scann_ops",
    srcs = ["ops/scann_ops.cc"],
    deps = [
        "@local_config_tf//:libtensorflow_framework",
        "@local_config_tf//:tf_header_lib",
    ],
    alwayslink = 1,
)

cc_library(
    name = "scann_ops_kernels",
    srcs = ["kernels/scann_ops.cc"],
    deps = [":scann_ops", "@local_config_tf//:tf_header_lib"],
    alwayslink = 1,
)

pybind_library(
    name = "bindings",
    srcs = ["bindings.cc"],

    deps = [":scann_ops"],
)
'''
SERVERS_BUILD = '''SUPPORTED_TENSORFLOW_OPS = if_v2([]) + [
    "@org_tensorflow_text//tensorflow_text:ops_lib",
]
'''


def test_the_patcher_links_the_ops_into_the_model_server(tmp_path, patcher):
    scann, serving = tmp_path / "scann", tmp_path / "serving"
    (scann / "scann" / "scann_ops" / "cc").mkdir(parents=True)
    (scann / "scann" / "scann_ops" / "cc" / "BUILD.bazel").write_text(OPS_BUILD)
    (scann / "scann" / "utils").mkdir()
    (scann / "scann" / "utils" / "BUILD.bazel").write_text('cc_library(name = "u", deps = '
                                                           '["@local_config_tf//:tf_header_lib"])\n')
    (serving / "tensorflow_serving" / "model_servers").mkdir(parents=True)
    (serving / "tensorflow_serving" / "model_servers" / "BUILD").write_text(SERVERS_BUILD)
    (serving / "WORKSPACE").write_text('workspace(name = "tf_serving")\n')

    patcher.patch_scann(scann)
    patcher.patch_serving(serving, scann)

    ops = (scann / "scann" / "scann_ops" / "cc" / "BUILD.bazel").read_text()
    assert "@local_config_tf" not in ops and "pybind" not in ops and "bindings" not in ops
    assert ops.count('"@org_tensorflow//tensorflow/core:framework"') == 1
    assert 'name = "scann_ops_static"' in ops and "alwayslink = 1" in ops.split("scann_ops_static")[1]
    assert "@org_tensorflow//tensorflow/core:lib" in (scann / "scann" / "utils" / "BUILD.bazel").read_text()
    servers = (serving / "tensorflow_serving" / "model_servers" / "BUILD").read_text()
    assert "    \"@com_google_scann//scann/scann_ops/cc:scann_ops_static\",\n]" in servers
    assert f'local_repository(name = "com_google_scann", path = "{scann}")' in (serving / "WORKSPACE").read_text()


def test_the_patcher_stops_on_a_source_layout_it_does_not_know(tmp_path, patcher):
    serving = tmp_path / "serving"
    (serving / "tensorflow_serving" / "model_servers").mkdir(parents=True)
    (serving / "tensorflow_serving" / "model_servers" / "BUILD").write_text("cc_library(name = 'x')\n")
    with pytest.raises(SystemExit, match="no SUPPORTED_TENSORFLOW_OPS"):
        patcher.patch_serving(serving, tmp_path / "scann")
