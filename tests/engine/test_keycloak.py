"""The Keycloak test support itself: a client-credentials token names the service account."""

from __future__ import annotations

import base64
import json

import httpx

from tests.support.jwt import claims, header
from tests.support.keycloak import Keycloak


def test_client_credentials_token_names_the_service_account(keycloak: Keycloak) -> None:
    client = keycloak.create_client("relay-smoke")
    response = httpx.post(
        keycloak.token_url,
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.secret),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    payload = response.json()["access_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["iss"] == keycloak.issuer
    assert claims["preferred_username"] == client.user


def test_what_keycloak_writes_in_typ(keycloak: Keycloak) -> None:
    """What the engine's token type check relies on: the same header (``typ`` JWT) on access
    and ID tokens, told apart by the claim ``typ`` (Bearer, ID)."""
    client = keycloak.create_client("relay-typ")
    access, identity = keycloak.token(client), keycloak.id_token(client)
    assert header(access)["typ"] == header(identity)["typ"] == "JWT"
    assert header(access)["kid"] == header(identity)["kid"]
    assert claims(access)["typ"] == "Bearer"
    assert claims(identity)["typ"] == "ID"
    assert claims(identity)["azp"] == client.client_id
