from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from camunda_relay import Router
from camunda_relay.errors import ConfigurationError
from camunda_relay.settings import Settings, SettingsError, masked


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
        "CAMUNDA_WORKER_TENANTS": "tenanta",
        "CAMUNDA_JWT_ISSUER_URI": "https://idp.example/realms/relay",
        "CAMUNDA_JWT_AUDIENCE": "camunda",
        "CAMUNDA_JWT_USER_CLAIM": "azp",
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
        ({"CAMUNDA_LONG_POLL": "inf"}, "CAMUNDA_LONG_POLL.*finite"),
        ({"CAMUNDA_LONG_POLL": "1e400"}, "CAMUNDA_LONG_POLL.*finite"),
        ({"CAMUNDA_LONG_POLL": "nan"}, "CAMUNDA_LONG_POLL.*finite"),
        ({"CAMUNDA_LONG_POLL": "1801"}, "CAMUNDA_LONG_POLL.*at most 1800"),
        ({"CAMUNDA_RETRY_TIMEOUT": "1e20"}, "CAMUNDA_RETRY_TIMEOUT.*at most"),
        ({"CAMUNDA_REQUEST_TIMEOUT": "0"}, "CAMUNDA_REQUEST_TIMEOUT.*more than 0"),
        ({"CAMUNDA_LOCK_DURATION": "0"}, "CAMUNDA_LOCK_DURATION.*more than 0"),
        ({"CAMUNDA_LOCK_DURATION": "1e15"}, "CAMUNDA_LOCK_DURATION.*at most 604800"),
        ({"CAMUNDA_WORKER_ID": "w" * 256}, "256 characters.*at most 255"),
        ({"CAMUNDA_URL": "http://127.0.0.1:99999/engine-rest"}, "not a valid URL.*[Pp]ort"),
        ({"CAMUNDA_URL": "http://[::1"}, "not a valid URL"),
        ({"CAMUNDA_URL": "http:///engine-rest"}, "names no host"),
        ({"CAMUNDA_JOURNAL_RETENTION": "-1"}, "CAMUNDA_JOURNAL_RETENTION"),
        ({"CAMUNDA_LOG_ERROR_DETAILS": "perhaps"}, "CAMUNDA_LOG_ERROR_DETAILS"),
        ({"CAMUNDA_HTTP_PORT": "0"}, "CAMUNDA_HTTP_PORT.*from 1 to 65535"),
        ({"CAMUNDA_HTTP_PORT": "metrics"}, "CAMUNDA_HTTP_PORT.*port number"),
        ({"CAMUNDA_LOG_FORMAT": "xml"}, "CAMUNDA_LOG_FORMAT.*text, json"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(env)


def test_secrets_are_not_in_repr() -> None:
    settings = Settings.load({"CAMUNDA_USER": "u", "CAMUNDA_PASSWORD": "canary-secret"})
    assert "canary-secret" not in repr(settings)


def test_bounds_that_hold_are_accepted() -> None:
    settings = Settings.load(
        {
            "CAMUNDA_LONG_POLL": "1800",
            "CAMUNDA_LOCK_DURATION": "604800",
            "CAMUNDA_WORKER_ID": "w" * 255,
            "CAMUNDA_URL": "http://[::1]:8080/engine-rest",
            "CAMUNDA_JOURNAL_RETENTION": "0",
            "CAMUNDA_LOG_ERROR_DETAILS": "true",
        }
    )
    assert settings.long_poll == timedelta(minutes=30)
    assert settings.journal_retention == timedelta(0)
    assert settings.log_error_details is True
    assert Settings().journal_retention == timedelta(days=7)
    assert Settings().log_error_details is False


@pytest.mark.parametrize(
    "journal",
    [
        "postgresql://relay:canary-pw@db:5432/relay",
        "postgres://relay:canary-pw@db/relay?sslmode=require",
        "host=db password=canary-pw dbname=relay",
        "host=db password='canary pw' dbname=relay",
    ],
)
def test_the_journal_dsn_password_is_not_in_repr(journal: str) -> None:
    settings = Settings.load({"CAMUNDA_JOURNAL": journal})
    assert "canary" not in repr(settings)
    assert "canary" not in settings.shown_journal
    assert "db" in settings.shown_journal
    assert settings.journal == journal  # the value itself is intact


def test_a_password_in_the_url_is_masked_wherever_it_is_shown() -> None:
    settings = Settings.load({"CAMUNDA_URL": "https://relay:canary-pw@engine:8443/engine-rest"})
    assert "canary" not in repr(settings)
    assert settings.shown_url == "https://relay:***@engine:8443/engine-rest"
    with pytest.raises(SettingsError) as raised:
        Settings.load({"CAMUNDA_URL": "http://relay:canary-pw@engine:99999/engine-rest"})
    assert "canary" not in str(raised.value)


def test_masked_leaves_text_without_a_password_alone() -> None:
    assert masked("http://engine:8080/engine-rest") == "http://engine:8080/engine-rest"
    assert masked(".camunda-relay/journal.sqlite3") == ".camunda-relay/journal.sqlite3"
    assert masked("postgresql://relay@db/relay") == "postgresql://relay@db/relay"


def test_a_topics_own_lock_duration_has_the_same_bound() -> None:
    router = Router()
    with pytest.raises(ConfigurationError, match="lock_duration must be at most 7 days"):
        router.task("t", lock_duration=timedelta(days=8))(lambda task: None)
    router.task("t", lock_duration=timedelta(days=7))(lambda task: None)


def test_the_http_server_is_off_and_on_loopback_unless_set() -> None:
    default = Settings.load({})
    assert (default.http_address, default.http_port, default.log_format) == (
        "127.0.0.1",
        None,
        "text",
    )
    chosen = Settings.load(
        {
            "CAMUNDA_HTTP_ADDRESS": "0.0.0.0",  # noqa: S104 - a value, no bind
            "CAMUNDA_HTTP_PORT": "9464",
            "CAMUNDA_LOG_FORMAT": "JSON",
        }
    )
    wildcard = "0.0.0.0"  # noqa: S104 - a value, no bind
    assert (chosen.http_address, chosen.http_port, chosen.log_format) == (wildcard, 9464, "json")
    assert Settings.load({"CAMUNDA_HTTP_PORT": ""}).http_port is None


def test_the_engine_management_variables_are_the_engines() -> None:
    Settings.load({"CAMUNDA_MANAGEMENT_PORT": "8081", "CAMUNDA_MANAGEMENT_ADDRESS": "::1"})


def test_the_fetch_order_settings_load_and_a_direct_wrong_order_is_refused() -> None:
    loaded = Settings.load(
        {"CAMUNDA_USE_PRIORITY": "off", "CAMUNDA_FETCH_ORDER": "Create-Time-Desc"}
    )
    assert (loaded.use_priority, loaded.fetch_order) == (False, "create-time-desc")
    assert (Settings().use_priority, Settings().fetch_order) == (True, "none")
    with pytest.raises(SettingsError, match="CAMUNDA_FETCH_ORDER must be one of none, create"):
        Settings(fetch_order="oldest")  # type: ignore[arg-type]
