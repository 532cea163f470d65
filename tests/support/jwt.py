"""JSON Web Tokens made here (RS256, signed with ``openssl``) and taken apart, for the tests
of the engine's bearer-token check: an RSA key of our own, which a test can make Keycloak
trust (:meth:`tests.support.keycloak.Keycloak.add_signing_key`) or leave untrusted."""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JWT_PATTERN = r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}"
"""What a JWT looks like in a log line (base64url of ``{"``, twice)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def claims(token: str) -> dict[str, Any]:
    """The payload of ``token``, unchecked."""
    return _part(token, 1)


def header(token: str) -> dict[str, Any]:
    """The JOSE header of ``token``, unchecked."""
    return _part(token, 0)


def _openssl(*args: str, data: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["openssl", *args], input=data, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@dataclass(frozen=True)
class SigningKey:
    """An RSA private key (PEM file) that signs tokens with the key id ``kid``."""

    pem: Path
    kid: str = "unset"

    @classmethod
    def generate(cls, folder: Path, name: str) -> SigningKey:
        pem = folder / f"{name}.pem"
        _openssl("genrsa", "-traditional", "-out", str(pem), "2048")
        return cls(pem)

    def with_kid(self, kid: str) -> SigningKey:
        return SigningKey(self.pem, kid)

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK (what an issuer publishes in its JWK set)."""
        modulus = _openssl("rsa", "-in", str(self.pem), "-noout", "-modulus").decode()
        n = bytes.fromhex(modulus.strip().removeprefix("Modulus="))
        text = _openssl("rsa", "-in", str(self.pem), "-noout", "-text").decode()
        assert "publicExponent: 65537" in text
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": b64url(n),
            "e": b64url((65537).to_bytes(3, "big")),
        }

    def sign(self, payload: dict[str, Any], *, typ: str | None = "JWT") -> str:
        """``payload`` signed (RS256); ``typ`` is the header's (None: no ``typ``)."""
        fields = {"alg": "RS256", "kid": self.kid} | ({} if typ is None else {"typ": typ})
        head = b64url(json.dumps(fields).encode())
        body = b64url(json.dumps(payload).encode())
        signed = f"{head}.{body}".encode()
        signature = _openssl("dgst", "-sha256", "-sign", str(self.pem), data=signed)
        return f"{head}.{body}.{b64url(signature)}"
