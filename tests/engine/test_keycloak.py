"""The Keycloak test support itself: a client-credentials token names the service account."""

from __future__ import annotations

import base64
import json

import httpx

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
