from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from camunda_relay.settings import Settings, SettingsError


def test_defaults_match_the_conception() -> None:
    settings = Settings.load({})
    assert settings.url == "http://localhost:8080/engine-rest"
    assert settings.user is None
    assert settings.tls_verify is True


def test_environment_overrides_file(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[camunda-relay]\nurl = "http://file:1/engine-rest"\nlong_poll = 5\n')
    settings = Settings.load({"CAMUNDA_URL": "https://env:2/engine-rest/"}, config_file=config)
    assert settings.url == "https://env:2/engine-rest"
    assert settings.long_poll == timedelta(seconds=5)


def test_unknown_environment_variable_is_named() -> None:
    with pytest.raises(SettingsError, match="CAMUNDA_PASWORD"):
        Settings.load({"CAMUNDA_PASWORD": "x"})


def test_engine_and_spring_variables_are_not_ours() -> None:
    settings = Settings.load(
        {"CAMUNDA_PORT": "9000", "CAMUNDA_DB_URL": "jdbc:h2:mem:x", "CAMUNDA_BPM_FOO": "1"}
    )
    assert settings == Settings()


def test_the_engines_worker_and_tls_variables_are_not_ours() -> None:
    engine_only = {
        "CAMUNDA_WORKER_USER": "relayworker",
        "CAMUNDA_WORKER_PASSWORD": "s",
        "CAMUNDA_TLS_CERTIFICATE": "server.pem",
        "CAMUNDA_TLS_KEY": "server.key",
        "CAMUNDA_TLS_KEYSTORE": "server.p12",
        "CAMUNDA_TLS_KEYSTORE_PASSWORD": "s",
    }
    assert Settings.load(engine_only) == Settings()
    ours = Settings.load({**engine_only, "CAMUNDA_CA_BUNDLE": "ca.pem", "CAMUNDA_TLS_VERIFY": "1"})
    assert ours.ca_bundle == Path("ca.pem")


def test_unknown_file_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("[camunda-relay]\nlong_pol = 5\n")
    with pytest.raises(SettingsError, match="long_pol"):
        Settings.load({}, config_file=config)


def test_bad_toml_and_missing_file_are_clear(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("url = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        Settings.load({}, config_file=broken)
    with pytest.raises(SettingsError, match="cannot read settings file"):
        Settings.load({}, config_file=tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CAMUNDA_URL": "localhost:8080"}, "must start with http"),
        ({"CAMUNDA_USER": "demo"}, "CAMUNDA_PASSWORD is not"),
        ({"CAMUNDA_USER": "a", "CAMUNDA_PASSWORD": "b", "CAMUNDA_TOKEN": "t"}, "not both"),
        ({"CAMUNDA_MAX_IN_FLIGHT": "0"}, "CAMUNDA_MAX_IN_FLIGHT"),
        ({"CAMUNDA_LONG_POLL": "-1"}, "CAMUNDA_LONG_POLL"),
        ({"CAMUNDA_TLS_VERIFY": "maybe"}, "CAMUNDA_TLS_VERIFY"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(env)


def test_secrets_are_not_in_repr() -> None:
    settings = Settings.load({"CAMUNDA_USER": "u", "CAMUNDA_PASSWORD": "canary-secret"})
    assert "canary-secret" not in repr(settings)
