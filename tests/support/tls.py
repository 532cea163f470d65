"""A certificate authority and a server certificate for 127.0.0.1, made with ``openssl``."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.tools import missing


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA certificate (PEM): what a client trusts
    certificate: Path  # the server's certificate, signed by the CA (PEM)
    key: Path  # the server's private key (PEM, unencrypted)
    self_signed: Path  # a CA of its own that signed nothing here: trusting it does not help


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def make_certificates(folder: Path) -> Certificates:
    if shutil.which("openssl") is None:
        missing("openssl", "install Debian's openssl package")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("ca", "other"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=relay test {name}",
            cwd=folder,
        )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1",
        cwd=folder,
    )  # fmt: skip
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
        cwd=folder,
    )  # fmt: skip
    return Certificates(
        ca=folder / "ca.pem",
        certificate=folder / "server.pem",
        key=folder / "server.key",
        self_signed=folder / "other.pem",
    )
