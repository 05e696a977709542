"""Regenerates the vendored protobuf modules of the thin client (`python -m serving._protos.generate`).

The client must not import TensorFlow, but `tensorflow_serving.apis.*_pb2` import
`tensorflow.core.framework.*_pb2`, i.e. TensorFlow. So the messages the client needs
are compiled again, from the descriptors inside the installed wheels (the authority;
the wheels ship no .proto files), into `serving/_protos/`:

- only the message types reachable from `ROOT_MESSAGES` are kept (e.g. `SignatureDef`
  and `TensorInfo` out of meta_graph.proto, not the graph and function protos);
- every file is renamed under `serving/_protos/` and every package gets the prefix
  `PACKAGE_PREFIX`, so the copies and TensorFlow's own modules live side by side in the
  default descriptor pool of one process (the server and the tests load both);
- the wire format is unchanged (field numbers and types are copied), so a message
  serialised by one parses with the other;
- `PredictionService` / `ModelService` are called by their real method paths in
  `serving/_protos/services.py` (hand-written: renamed packages would change the paths
  that generated stubs use).

The two config messages that the tensorflow-serving-api wheel does not ship
(`BatchingParameters`, `MonitoringConfig`, `SSLConfig`) are written as .proto sources in
`serving/_protos/tensorflow_serving/config/` and compiled alongside.

Needs TensorFlow, tensorflow-serving-api and grpcio-tools (the `dev` extra).
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Iterable

from google.protobuf import descriptor, descriptor_pb2

PACKAGE_PREFIX = "recommender_client"
FILE_PREFIX = "serving/_protos/"
PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTOS_DIR = PROJECT_ROOT / "serving" / "_protos"
HANDWRITTEN_PROTOS = (
    "serving/_protos/tensorflow_serving/config/batching_parameters.proto",
    "serving/_protos/tensorflow_serving/config/monitoring_config.proto",
    "serving/_protos/tensorflow_serving/config/ssl_config.proto",
)
# (module, message) pairs the client sends, receives or unpacks.
ROOT_MESSAGES = (
    ("tensorflow_serving.apis.predict_pb2", "PredictRequest"),
    ("tensorflow_serving.apis.predict_pb2", "PredictResponse"),
    ("tensorflow_serving.apis.get_model_metadata_pb2", "GetModelMetadataRequest"),
    ("tensorflow_serving.apis.get_model_metadata_pb2", "GetModelMetadataResponse"),
    ("tensorflow_serving.apis.get_model_metadata_pb2", "SignatureDefMap"),
    ("tensorflow_serving.apis.get_model_status_pb2", "GetModelStatusRequest"),
    ("tensorflow_serving.apis.get_model_status_pb2", "GetModelStatusResponse"),
)
_KEEP_AS_IS = "google/protobuf/"


def root_descriptors() -> list[descriptor.Descriptor]:
    """The root message descriptors, from the installed (TensorFlow-importing) modules."""
    return [getattr(importlib.import_module(module), name).DESCRIPTOR for module, name in ROOT_MESSAGES]


def needed_types(roots: Iterable[descriptor.Descriptor]) -> set[str]:
    """Full names of the top-level messages and enums reachable from `roots`."""
    needed: set[str] = set()
    pending: list[descriptor.Descriptor | descriptor.EnumDescriptor] = list(roots)
    while pending:
        top = _top_level(pending.pop())
        if top.full_name in needed:
            continue
        needed.add(top.full_name)
        if isinstance(top, descriptor.Descriptor):
            pending.extend(_field_types(top))
    return needed


def pruned_files(
    roots: list[descriptor.Descriptor], needed: set[str]
) -> list[descriptor_pb2.FileDescriptorProto]:
    """Renamed FileDescriptorProtos holding only the needed types, dependencies first."""
    files = _files_in_dependency_order(roots, needed)
    return [_pruned_file(file, needed) for file in files if not file.name.startswith(_KEEP_AS_IS)]


def generate(output_root: pathlib.Path = PROJECT_ROOT) -> list[pathlib.Path]:
    """Writes the *_pb2.py / *_pb2.pyi modules under `output_root/serving/_protos/`; returns them."""
    roots = root_descriptors()
    files = pruned_files(roots, needed_types(roots))
    with tempfile.TemporaryDirectory() as scratch:
        descriptor_set = pathlib.Path(scratch) / "client_protos.pb"
        well_known = _well_known_files(files)
        file_set = descriptor_pb2.FileDescriptorSet(file=well_known + files)
        descriptor_set.write_bytes(file_set.SerializeToString())
        _protoc([f"--descriptor_set_in={descriptor_set}", *(file.name for file in files)], output_root)
    _protoc([f"-I{PROJECT_ROOT}", f"-I{_grpc_tools_include()}", *HANDWRITTEN_PROTOS], output_root)
    names = [file.name for file in files] + list(HANDWRITTEN_PROTOS)
    _write_package_inits(output_root, names)
    return sorted(output_root / name.replace(".proto", "_pb2.py") for name in names)


def _top_level(
    item: descriptor.Descriptor | descriptor.EnumDescriptor,
) -> descriptor.Descriptor | descriptor.EnumDescriptor:
    while item.containing_type is not None:
        item = item.containing_type
    return item


def _field_types(message: descriptor.Descriptor) -> list[descriptor.Descriptor | descriptor.EnumDescriptor]:
    types: list[descriptor.Descriptor | descriptor.EnumDescriptor] = []
    for field in message.fields:
        if field.message_type is not None:
            types.append(field.message_type)
        if field.enum_type is not None:
            types.append(field.enum_type)
    for nested in message.nested_types:
        types.extend(_field_types(nested))
    return types


def _files_in_dependency_order(
    roots: list[descriptor.Descriptor], needed: set[str]
) -> list[descriptor_pb2.FileDescriptorProto]:
    by_name: dict[str, descriptor.FileDescriptor] = {}
    for root in roots:
        _collect_files(root.file, by_name)
    ordered = [file for file in by_name.values() if _defines_any(file, needed)]
    protos = []
    for file in ordered:
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        protos.append(proto)
    return protos


def _collect_files(file: descriptor.FileDescriptor, by_name: dict[str, descriptor.FileDescriptor]) -> None:
    if file.name in by_name:
        return
    for dependency in file.dependencies:
        _collect_files(dependency, by_name)
    by_name[file.name] = file


def _defines_any(file: descriptor.FileDescriptor, needed: set[str]) -> bool:
    names = [*file.message_types_by_name.values(), *file.enum_types_by_name.values()]
    return any(item.full_name in needed for item in names)


def _pruned_file(
    proto: descriptor_pb2.FileDescriptorProto, needed: set[str]
) -> descriptor_pb2.FileDescriptorProto:
    package = proto.package
    keep_messages = [m for m in proto.message_type if f"{package}.{m.name}" in needed]
    keep_enums = [e for e in proto.enum_type if f"{package}.{e.name}" in needed]
    pruned = descriptor_pb2.FileDescriptorProto(
        name=_renamed_file(proto.name),
        package=f"{PACKAGE_PREFIX}.{package}",
        syntax=proto.syntax or "proto2",
        message_type=keep_messages,
        enum_type=keep_enums,
    )
    referenced = set()
    for message in pruned.message_type:
        referenced |= _rename_references(message)
    pruned.dependency.extend(sorted(_owning_files(referenced, own=pruned.name)))
    return pruned


def _rename_references(message: descriptor_pb2.DescriptorProto) -> set[str]:
    """Prefixes every non-google type reference; returns the original referenced type names."""
    referenced: set[str] = set()
    for field in message.field:
        if field.type_name:
            original = field.type_name.lstrip(".")
            referenced.add(original)
            if not original.startswith("google.protobuf."):
                field.type_name = f".{PACKAGE_PREFIX}.{original}"
    for nested in message.nested_type:
        referenced |= _rename_references(nested)
    return referenced


def _owning_files(type_names: set[str], own: str) -> set[str]:
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    files = set()
    for name in type_names:
        try:
            file = pool.FindMessageTypeByName(name).file
        except KeyError:
            file = pool.FindEnumTypeByName(name).file
        renamed = file.name if file.name.startswith(_KEEP_AS_IS) else _renamed_file(file.name)
        if renamed != own:
            files.add(renamed)
    return files


def _renamed_file(name: str) -> str:
    return FILE_PREFIX + name


def _well_known_files(files: list[descriptor_pb2.FileDescriptorProto]) -> list[descriptor_pb2.FileDescriptorProto]:
    from google.protobuf import descriptor_pool

    names = sorted({dep for file in files for dep in file.dependency if dep.startswith(_KEEP_AS_IS)})
    protos = []
    for name in names:
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor_pool.Default().FindFileByName(name).CopyToProto(proto)
        protos.append(proto)
    return protos


def _grpc_tools_include() -> pathlib.Path:
    import grpc_tools

    return pathlib.Path(grpc_tools.__file__).parent / "_proto"


def _protoc(arguments: list[str], output_root: pathlib.Path) -> None:
    command = [sys.executable, "-m", "grpc_tools.protoc", f"--python_out={output_root}",
               f"--pyi_out={output_root}", *arguments]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed ({' '.join(command)}):\n{result.stderr}")


def _write_package_inits(output_root: pathlib.Path, proto_names: list[str]) -> None:
    for name in proto_names:
        folder = (output_root / name).parent
        while folder != output_root / "serving" / "_protos" and folder != output_root:
            init = folder / "__init__.py"
            if not init.exists():
                init.write_text('"""Generated protobuf modules (python -m serving._protos.generate)."""\n')
            folder = folder.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-root", type=pathlib.Path, default=PROJECT_ROOT,
                        help="folder that receives serving/_protos/... (default: the project root)")
    args = parser.parse_args(argv)
    for path in generate(args.output_root):
        print(path.relative_to(args.output_root))


if __name__ == "__main__":
    main()
