"""routes.yaml's TLS keys (proxy/config/tls.py): what loads, and every problem as FILE:LINE on the key's line."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import load
from proxy.model.errors import ConfigError
from tests.certs import Authority
from tests.helpers import REPO

ROUTES = 'upstreams:\n  a: {url: "http://127.0.0.1:9"}\nroutes:\n  - {name: r, match: {path: /}, legacy: a}\n'


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """routes.yaml's folder, with certs/ holding a CA, pairs it issued, one expired, and one from another CA."""
    root = tmp_path_factory.mktemp("tls")
    ca = Authority(root / "certs")
    ca.issue("edge")
    ca.issue("other")
    ca.issue("old", expired=True)
    ca.issue("client", client=True)
    Authority(root / "certs", name="Elsewhere CA")
    (root / "certs" / "garbage.pem").write_text("not a certificate\n")
    os.mkfifo(root / "certs" / "fifo.pem")  # would hold a reader that blocks forever
    locked = ["openssl", "pkey", "-in", str(root / "certs" / "edge-key.pem"), "-aes256", "-passout", "pass:x",
              "-out", str(root / "certs" / "locked-key.pem")]
    subprocess.run(locked, check=True)  # a key with a passphrase
    return root


def loaded(folder: Path, text: str):
    path = folder / "routes.yaml"
    path.write_text("version: 1\n" + text)
    return load(path)


def problems(folder: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loaded(folder, text)
    return [str(p).replace(str(folder) + "/", "") for p in caught.value.problems if not p.warning]


def edge(cert: str, key: str) -> str:
    return f"{ROUTES}tls:\n  cert: {cert}\n  key: {key}\n"


def test_a_pair_loads_with_its_certificate_facts(folder):
    config = loaded(folder, edge("certs/edge.pem", "certs/edge-key.pem"))
    assert config.tls is not None and config.tls.cert == str(folder / "certs" / "edge.pem")
    assert config.tls.certificate.subject == "CN=localhost, O=Strangler Tests"
    assert config.tls.certificate.issuer == "CN=Strangler Test CA"
    context = config.tls.context
    assert context is not None and context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert config.warnings == ()


@pytest.mark.parametrize(("cert", "key", "line", "message"), [
    ("certs/missing.pem", "certs/edge-key.pem", 7,
     "tls: cannot read 'cert' file certs/missing.pem: No such file or directory"),
    ("certs/edge.pem", "certs/missing-key.pem", 8,
     "tls: cannot read 'key' file certs/missing-key.pem: No such file or directory"),
    ("certs/garbage.pem", "certs/edge-key.pem", 7,
     "tls: certs/garbage.pem holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' line)"),
    ("certs/edge-key.pem", "certs/edge-key.pem", 7,
     "tls: certs/edge-key.pem holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' line)"),
    ("certs/edge.pem", "certs/edge.pem", 8,
     "tls: certs/edge.pem holds no PEM private key (no '-----BEGIN ... PRIVATE KEY-----' line)"),
    ("certs/edge.pem", "certs/other-key.pem", 8,
     "tls: the key in certs/other-key.pem does not belong to the certificate in certs/edge.pem"),
    ("certs/edge.pem", "certs/locked-key.pem", 8,
     "tls: certs/locked-key.pem is encrypted with a passphrase, which the proxy cannot ask for: give it the key "
     "unencrypted, readable only by the proxy's user"),
    ("certs/edge.pem", '"-----BEGIN PRIVATE KEY-----\\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\\n"', 8,
     "tls: 'key' is the path of a PEM file, not its contents: keys never live in routes.yaml"),
    ("certs/edge.pem", "routes.yaml", 8,
     "tls: 'key' names routes.yaml itself: keys and certificates live in files of their own"),
    ("certs/fifo.pem", "certs/edge-key.pem", 7, "tls: cannot read 'cert' file certs/fifo.pem: not a regular file"),
])
def test_a_pair_that_cannot_load_is_an_error_on_its_line(folder, cert, key, line, message):
    assert problems(folder, edge(cert, key)) == [f"routes.yaml:{line}: {message}"]


def test_a_pair_needs_both_halves_and_no_other_key(folder):
    found = problems(folder, f"{ROUTES}tls:\n  cert: certs/edge.pem\n  chain: certs/edge.pem\n")
    assert found == ["routes.yaml:6: tls: 'key' is required",
                     "routes.yaml:8: unknown key 'chain' in tls (known: cert, key)"]


def test_an_expired_certificate_is_a_warning_not_an_error(folder):
    config = loaded(folder, edge("certs/old.pem", "certs/old-key.pem"))
    [warning] = [str(w).replace(str(folder) + "/", "") for w in config.warnings]
    assert warning.startswith("routes.yaml:7: warning: tls: the certificate in certs/old.pem expired at ")
    assert warning.endswith(" UTC; clients will refuse it")


def test_admin_tls_follows_the_same_rules(folder):
    config = loaded(folder, f"{ROUTES}admin:\n  tls: {{cert: certs/other.pem, key: certs/other-key.pem}}\n")
    assert config.admin.tls is not None and config.tls is None
    found = problems(folder, f"{ROUTES}admin:\n  listen: 127.0.0.1:9901\n  tls:\n    cert: certs/edge.pem\n"
                             "    key: certs/other-key.pem\n")
    assert found == ["routes.yaml:10: admin.tls: the key in certs/other-key.pem does not belong to the certificate "
                     "in certs/edge.pem"]


def upstream(keys: str, url: str = "https://localhost:9443") -> str:
    return f'upstreams:\n  a:\n    url: "{url}"\n{keys}routes:\n  - {{name: r, match: {{path: /}}, legacy: a}}\n'


def test_an_upstream_trusts_its_private_ca_only_and_shows_its_client_certificate(folder):
    config = loaded(folder, upstream("    ca: certs/strangler-test-ca.pem\n    client_cert: certs/client.pem\n"
                                     "    client_key: certs/client-key.pem\n"))
    tls = config.upstreams["a"].tls
    assert tls is not None and tls.verify and tls.ca == str(folder / "certs" / "strangler-test-ca.pem")
    assert tls.context is not None and tls.context.verify_mode is ssl.CERT_REQUIRED and tls.context.check_hostname
    assert [c["subject"] for c in tls.context.get_ca_certs()] == [((("commonName", "Strangler Test CA"),),)]


def test_verify_false_loads_with_a_warning(folder):
    config = loaded(folder, upstream("    verify: false\n"))
    tls = config.upstreams["a"].tls
    assert tls is not None and tls.context is not None and tls.context.verify_mode is ssl.CERT_NONE
    assert [str(w).partition(" ")[2] for w in config.warnings] == [
        "warning: upstream 'a': 'verify: false': the upstream's certificate is not checked, so anyone on the way "
        "can read and change this traffic; give it 'ca' instead"]


@pytest.mark.parametrize(("keys", "url", "expected"), [
    ("    ca: certs/missing.pem\n", "https://localhost:9443",
     ["routes.yaml:5: upstream 'a': cannot read 'ca' file certs/missing.pem: No such file or directory"]),
    ("    ca: certs/garbage.pem\n", "https://localhost:9443",
     ["routes.yaml:5: upstream 'a': certs/garbage.pem holds no PEM certificate OpenSSL can read (no start line: "
      "cadata does not contain a certificate)"]),
    ("    ca: certs/strangler-test-ca.pem\n", "http://localhost:9080",
     ["routes.yaml:5: upstream 'a': 'ca' is for https:// upstreams; this one's url is http://"]),
    ("    client_cert: certs/client.pem\n", "https://localhost:9443",
     ["routes.yaml:5: upstream 'a': 'client_cert' needs 'client_key' beside it"]),
    ("    client_key: certs/client-key.pem\n", "https://localhost:9443",
     ["routes.yaml:5: upstream 'a': 'client_key' needs 'client_cert' beside it"]),
    ("    client_cert: certs/client.pem\n    client_key: certs/edge-key.pem\n", "https://localhost:9443",
     ["routes.yaml:6: upstream 'a': the key in certs/edge-key.pem does not belong to the certificate in "
      "certs/client.pem"]),
    ("    ca: certs/strangler-test-ca.pem\n    verify: false\n", "https://localhost:9443",
     ["routes.yaml:5: upstream 'a': 'ca' and 'verify: false' contradict each other; keep one"]),
    ("    verify: no-thanks\n", "https://localhost:9443",
     ["routes.yaml:5: upstream 'a': 'verify' must be true or false, got a string 'no-thanks'"]),
])
def test_an_upstream_tls_problem_is_an_error_on_its_line(folder, keys, url, expected):
    assert problems(folder, upstream(keys, url)) == expected


def strangler(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_check_names_the_line_and_serve_exits_1(folder):
    path = folder / "routes.yaml"
    path.write_text("version: 1\nlisten: 127.0.0.1:0\n" + edge("certs/edge.pem", "certs/other-key.pem"))
    expected = (f"{path}:9: tls: the key in {folder}/certs/other-key.pem does not belong to the certificate in "
                f"{folder}/certs/edge.pem")
    checked = strangler("check", "--config", str(path), cwd=folder)
    assert (checked.returncode, checked.stdout.strip()) == (1, expected)
    served = strangler("serve", "--config", str(path), cwd=folder)
    assert served.returncode == 1 and expected in served.stderr


def test_check_shows_verify_false_and_an_expired_pair_as_warnings(folder):
    path = folder / "routes.yaml"
    path.write_text("version: 1\n" + edge("certs/old.pem", "certs/old-key.pem").replace(
        'a: {url: "http://127.0.0.1:9"}', 'a: {url: "https://localhost:9443", verify: false}'))
    checked = strangler("check", "--config", str(path), cwd=folder)
    assert checked.returncode == 0
    lines = checked.stdout.splitlines()
    assert lines[0] == (f"{path}:3: warning: upstream 'a': 'verify: false': the upstream's certificate is not "
                        "checked, so anyone on the way can read and change this traffic; give it 'ca' instead")
    assert lines[1].startswith(f"{path}:7: warning: tls: the certificate in {folder}/certs/old.pem expired at ")
    assert lines[2] == "ok: 1 routes, 1 upstreams"
