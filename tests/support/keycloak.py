"""A real Keycloak for the OAuth2 tests: downloaded once from Maven Central with the engine's
Maven wrapper, started in dev mode on a free loopback port, with a realm and confidential
clients (client credentials) made through the admin REST API."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from camunda_relay.engine_build import cache_dir

VERSION = "26.4.0"
ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{VERSION}:zip"
JAVA_RELEASE = 21
REALM = "relay"
ADMIN = "admin"


class KeycloakUnavailable(Exception):
    """No Java 21+ or no distribution: the tests that need Keycloak cannot run here."""


def _java_release(java: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    return int(match.group(1)) if match else None


def find_java_home(environ: dict[str, str] | None = None) -> Path:
    """A Java 21+ home: JAVA_HOME when it is one, else the newest under /usr/lib/jvm."""
    env = dict(os.environ) if environ is None else environ
    candidates: list[Path] = []
    if env.get("JAVA_HOME"):
        candidates.append(Path(env["JAVA_HOME"]))
    candidates += sorted(Path("/usr/lib/jvm").glob("*"), reverse=True)
    for home in candidates:
        release = _java_release(home / "bin" / "java")
        if release is not None and release >= JAVA_RELEASE:
            return home
    raise KeycloakUnavailable(f"no Java {JAVA_RELEASE}+ (JAVA_HOME or /usr/lib/jvm/*)")


def distribution(engine_dir: Path) -> Path:
    """The unzipped distribution in the cache, downloaded and unzipped on first use."""
    folder = cache_dir().parent / "keycloak"
    home = folder / f"keycloak-{VERSION}"
    if (home / "bin" / "kc.sh").is_file():
        return home
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"keycloak-quarkus-dist-{VERSION}.zip"
    if not archive.is_file():
        result = subprocess.run(
            [
                str(engine_dir / "mvnw"),
                "-q",
                "-B",
                "-f",
                str(engine_dir / "pom.xml"),
                "dependency:copy",
                f"-Dartifact={ARTIFACT}",
                f"-DoutputDirectory={folder}",
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if result.returncode != 0 or not archive.is_file():
            raise KeycloakUnavailable(f"download of {ARTIFACT} failed: {result.stdout[-500:]}")
    partial = folder / f"unzip-{os.getpid()}"
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(partial)
    for script in (partial / f"keycloak-{VERSION}" / "bin").glob("*.sh"):
        script.chmod(0o755)
    (partial / f"keycloak-{VERSION}").rename(home)
    shutil.rmtree(partial, ignore_errors=True)
    return home


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str

    @property
    def user(self) -> str:
        """The engine user the token names (its ``preferred_username``)."""
        return f"service-account-{self.client_id}"


@dataclass
class Keycloak:
    url: str
    admin_password: str
    process: subprocess.Popen[bytes]
    startup_seconds: float

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/{REALM}"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    def _admin(self) -> httpx.Client:
        token = httpx.post(
            f"{self.url}/realms/master/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": ADMIN,
                "password": self.admin_password,
            },
            timeout=30,
        )
        token.raise_for_status()
        return httpx.Client(
            base_url=f"{self.url}/admin/realms",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=30,
        )

    def create_realm(self) -> None:
        with self._admin() as admin:
            response = admin.post("", json={"realm": REALM, "enabled": True})
            assert response.status_code in (201, 409), response.text

    def create_client(self, client_id: str) -> Client:
        """A confidential client with service accounts: client credentials."""
        secret = secrets.token_urlsafe(24)
        with self._admin() as admin:
            response = admin.post(
                f"/{REALM}/clients",
                json={
                    "clientId": client_id,
                    "enabled": True,
                    "publicClient": False,
                    "secret": secret,
                    "serviceAccountsEnabled": True,
                    "standardFlowEnabled": False,
                    "directAccessGrantsEnabled": False,
                },
            )
            assert response.status_code == 201, response.text
        return Client(client_id, secret)

    def tokens(self, client: Client, *, scope: str | None = None) -> dict[str, str]:
        """The token response for ``client`` (client credentials); with ``scope="openid"``
        Keycloak adds an ID token (``id_token``)."""
        response = httpx.post(
            self.token_url,
            data={"grant_type": "client_credentials"} | ({"scope": scope} if scope else {}),
            auth=(client.client_id, client.secret),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return {name: str(value) for name, value in response.json().items()}

    def token(self, client: Client) -> str:
        """An access token for ``client`` (client credentials)."""
        return self.tokens(client)["access_token"]

    def id_token(self, client: Client) -> str:
        """An ID token for ``client``: signed by the realm's key like its access tokens."""
        return self.tokens(client, scope="openid")["id_token"]

    def add_signing_key(self, private_key_pem: str, *, priority: int = 1000) -> str:
        """Make the realm sign with this RSA key (and publish it in its JWK set) from now on;
        returns its key id, as Keycloak computed it."""
        with self._admin() as admin:
            realm = admin.get(f"/{REALM}")
            assert realm.status_code == 200, realm.text
            response = admin.post(
                f"/{REALM}/components",
                json={
                    "name": f"test-key-{secrets.token_hex(4)}",
                    "providerId": "rsa",
                    "providerType": "org.keycloak.keys.KeyProvider",
                    "parentId": realm.json()["id"],
                    "config": {
                        "priority": [str(priority)],
                        "enabled": ["true"],
                        "active": ["true"],
                        "algorithm": ["RS256"],
                        "privateKey": [private_key_pem],
                    },
                },
            )
            assert response.status_code == 201, response.text
            component = response.headers["Location"].rsplit("/", 1)[-1]
            keys = admin.get(f"/{REALM}/keys")
            assert keys.status_code == 200, keys.text
        (kid,) = [k["kid"] for k in keys.json()["keys"] if k.get("providerId") == component]
        return str(kid)

    def stop(self) -> None:
        _stop(self.process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def start(home: Path, java_home: Path, port: int, log: Path, *, timeout: float = 600) -> Keycloak:
    password = secrets.token_urlsafe(18)
    env = {
        **os.environ,
        "JAVA_HOME": str(java_home),
        "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN,
        "KC_BOOTSTRAP_ADMIN_PASSWORD": password,
    }
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(home / "bin" / "kc.sh"),
                "start-dev",
                f"--http-port={port}",
                "--http-host=127.0.0.1",
                # In memory: a fresh realm and bootstrap admin at every start.
                "--db=dev-mem",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = started + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"Keycloak exited with {process.returncode}; see {log}")
        try:
            ready = httpx.get(f"{url}/realms/master/.well-known/openid-configuration", timeout=5)
            if ready.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(f"Keycloak not ready after {timeout} s; see {log}")
        time.sleep(0.5)
    keycloak = Keycloak(url, password, process, time.monotonic() - started)
    try:
        keycloak.create_realm()
    except BaseException:
        keycloak.stop()
        raise
    return keycloak
