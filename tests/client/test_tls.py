"""gRPC over TLS: `python -m serving.server --ssl_config_file` with a certificate made here, and the client
with `credentials=` / `--tls-ca-file`; a plain-text client is refused, and with client_verify so is a
client without a certificate signed by the server's custom_ca."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from google.protobuf import text_format

from bench import synthetic_models
from recsys_common import contract
from serving._protos.tensorflow_serving.config import ssl_config_pb2
from serving.client import RecommenderClient, ServerUnavailableError, UserContext, tls_credentials
from serving.testing import PROJECT_ROOT, ServerProcess, running_server

MODELS = (contract.RETRIEVAL_BRUTEFORCE, contract.RANKING)
K = 10


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _signed(name: str, subject: str, extensions: str, folder: pathlib.Path) -> None:
    """<name>.key and <name>.pem, signed by ca.key."""
    (folder / f"{name}.ext").write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj", subject, "-out",
             f"{name}.csr", cwd=folder)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A throwaway CA, a server certificate for localhost / 127.0.0.1 and a client certificate, signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    folder = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-subj", "/CN=test-ca",
             "-days", "2", "-out", "ca.pem", cwd=folder)
    _signed("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            folder)
    _signed("client", "/CN=test-client", "extendedKeyUsage=clientAuth\n", folder)
    return folder


def _ssl_config(pki: pathlib.Path, client_verify: bool) -> pathlib.Path:
    config = ssl_config_pb2.SSLConfig(server_key=(pki / "server.key").read_text(),
                                      server_cert=(pki / "server.pem").read_text(),
                                      custom_ca=(pki / "ca.pem").read_text(), client_verify=client_verify)
    path = pki / f"ssl-{'mutual' if client_verify else 'server'}.config"
    path.write_text(text_format.MessageToString(config))
    return path


@pytest.fixture(scope="module")
def model_config(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    base = tmp_path_factory.mktemp("saved_models")
    synthetic_models.export_synthetic_models(base, synthetic_models.make_catalog(60, dim=8, seed=2), MODELS, k=K)
    path = base / "models.config"
    path.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{base / name}" model_platform: "tensorflow" }}\n'
        for name in MODELS) + "}\n")
    return path


@pytest.fixture(scope="module")
def tls_server(pki: pathlib.Path, model_config: pathlib.Path) -> Iterator[ServerProcess]:
    with running_server(wait_for=MODELS, model_config_file=model_config,
                        ssl_config_file=_ssl_config(pki, client_verify=False)) as server:
        yield server


def _client(server: ServerProcess, **options: object) -> RecommenderClient:
    return RecommenderClient(server.grpc_target, retrieval_model=contract.RETRIEVAL_BRUTEFORCE, timeout=5.0,
                             retries=0, **options)


def test_a_tls_client_gets_recommendations(tls_server: ServerProcess, pki: pathlib.Path) -> None:
    with _client(tls_server, credentials=tls_credentials(pki / "ca.pem")) as client:
        recommendations = client.recommend(UserContext(user_id="alice", watch_history=["i1"]), k=5)
    assert len(recommendations) == 5
    scores = [rec.score for rec in recommendations]
    assert scores == sorted(scores, reverse=True)
    assert "i1" not in {rec.item_id for rec in recommendations}
    assert "(TLS)" in tls_server.log()


def test_a_plain_text_client_is_refused(tls_server: ServerProcess) -> None:
    with _client(tls_server) as client, pytest.raises(ServerUnavailableError):
        client.recommend(UserContext(user_id="alice"), k=5)


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_server: ServerProcess, pki: pathlib.Path) -> None:
    with _client(tls_server, credentials=tls_credentials(pki / "client.pem")) as client, \
            pytest.raises(ServerUnavailableError):
        client.recommend(UserContext(user_id="alice"), k=5)


def test_the_cli_connects_with_tls_flags(tls_server: ServerProcess, pki: pathlib.Path) -> None:
    command = [sys.executable, "-m", "serving.client", "--target", tls_server.grpc_target, "--retrieval-model",
               contract.RETRIEVAL_BRUTEFORCE, "--user-id", "bob", "-k", "3", "--timeout", "5"]
    secure = subprocess.run([*command, "--tls-ca-file", str(pki / "ca.pem")], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert secure.returncode == 0, secure.stderr
    assert len(secure.stdout.splitlines()) == 2 + 3
    plain = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert plain.returncode == 1 and plain.stderr.startswith("error:")


def test_tls_credentials_name_an_unreadable_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="cannot read TLS file .*missing.pem"):
        tls_credentials(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="both a client certificate and its key"):
        tls_credentials(cert_file=tmp_path / "client.pem")


def test_mutual_tls_needs_a_client_certificate(pki: pathlib.Path, model_config: pathlib.Path) -> None:
    with running_server(wait_for=MODELS, model_config_file=model_config,
                        ssl_config_file=_ssl_config(pki, client_verify=True)) as server:
        with _client(server, credentials=tls_credentials(pki / "ca.pem")) as anonymous, \
                pytest.raises(ServerUnavailableError):
            anonymous.recommend(UserContext(user_id="carol"), k=3)
        credentials = tls_credentials(pki / "ca.pem", pki / "client.pem", pki / "client.key")
        with _client(server, credentials=credentials) as known:
            assert len(known.recommend(UserContext(user_id="carol"), k=3)) == 3
