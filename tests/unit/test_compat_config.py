"""The client's config keys, one by one: the camunda-relay setting each becomes (or the one
line that refuses it), the client's defaults, and the environment beneath them."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from camunda_relay import ConfigurationError, Router
from camunda_relay.compat import CONFIG_KEYS, ExternalTask, ExternalTaskWorker, TaskResult
from camunda_relay.compat.config import compat_config
from camunda_relay.testing import make_task
from camunda_relay.worker.context import POLL_BACKOFF

# The keys of the client's ExternalTaskClient.default_config and its worker's, 4.5.0.
CLIENT_KEYS = {
    "maxTasks",
    "lockDuration",
    "asyncResponseTimeout",
    "retries",
    "retryTimeout",
    "httpTimeoutMillis",
    "timeoutDeltaMillis",
    "includeExtensionProperties",
    "deserializeValues",
    "usePriority",
    "sorting",
    "sleepSeconds",
    "isDebug",
    "auth_basic",
    "auth_bearer",
}


def worker(config: dict[str, object], **environ: str) -> ExternalTaskWorker:
    return ExternalTaskWorker(worker_id="1", config=config, environ=environ)


def test_every_client_key_is_known() -> None:
    assert CONFIG_KEYS == CLIENT_KEYS


@pytest.mark.parametrize(
    ("key", "value", "setting", "expected"),
    [
        ("maxTasks", 5, "max_in_flight", 5),
        ("lockDuration", 10000, "lock_duration", timedelta(seconds=10)),
        ("asyncResponseTimeout", 5000, "long_poll", timedelta(seconds=5)),
        ("asyncResponseTimeout", 0, "long_poll", timedelta(0)),
        ("retries", 7, "retries", 7),
        ("retryTimeout", 5000, "retry_timeout", timedelta(seconds=5)),
        ("httpTimeoutMillis", 3000, "request_timeout", timedelta(seconds=3)),
        ("usePriority", True, "usePriority", True),
        ("sorting", None, "fetch_order", "none"),
        (
            "sorting",
            [{"sortBy": "createTime", "sortOrder": "asc"}],
            "fetch_order",
            "create-time-asc",
        ),
        (
            "sorting",
            [{"sortBy": "createTime", "sortOrder": "desc"}],
            "fetch_order",
            "create-time-desc",
        ),
        ("auth_bearer", "abc", "token", "abc"),
        ("auth_bearer", "Bearer abc", "token", "abc"),
        ("auth_bearer", {"access_token": "abc"}, "token", "abc"),
    ],
)
def test_a_key_becomes_its_setting(key: str, value: object, setting: str, expected: object) -> None:
    settings = worker({key: value}).settings
    name = "use_priority" if setting == "usePriority" else setting
    assert getattr(settings, name) == expected


def test_auth_basic_becomes_user_and_password() -> None:
    settings = worker({"auth_basic": {"username": "demo", "password": "pw"}}).settings
    assert (settings.user, settings.password) == ("demo", "pw")


def test_the_clients_defaults_apply_where_they_differ() -> None:
    settings = worker({}).settings
    assert settings.max_in_flight == 1
    assert settings.long_poll == timedelta(seconds=30)
    assert settings.lock_duration == timedelta(minutes=5)
    assert settings.use_priority is False


def test_the_environment_comes_before_a_clients_default_and_a_key_before_both() -> None:
    settings = worker({}, CAMUNDA_MAX_IN_FLIGHT="8", CAMUNDA_USE_PRIORITY="true").settings
    assert (settings.max_in_flight, settings.use_priority) == (8, True)
    assert worker({"maxTasks": 2}, CAMUNDA_MAX_IN_FLIGHT="8").settings.max_in_flight == 2


def test_base_url_and_worker_id_are_the_engine_url_and_the_worker_id() -> None:
    url = "http://engine:9090/engine-rest"
    made = ExternalTaskWorker(worker_id=3, base_url=url, environ={})
    assert (made.settings.url, made.settings.worker_id, made.worker_id) == (url, "3", "3")
    env = {"CAMUNDA_URL": "http://other:8080/engine-rest"}
    assert ExternalTaskWorker("1", environ=env).settings.url == env["CAMUNDA_URL"]
    assert ExternalTaskWorker("1", environ={}).settings.url == "http://localhost:8080/engine-rest"


def test_sleep_seconds_caps_the_pause_after_an_engine_error() -> None:
    assert compat_config({}, {}).poll_backoff == POLL_BACKOFF
    backoff = compat_config({"sleepSeconds": 30}, {}).poll_backoff
    assert backoff.cap == timedelta(seconds=30)
    assert backoff.ceiling(0) == POLL_BACKOFF.base.total_seconds()
    assert compat_config({"sleepSeconds": 0.1}, {}).poll_backoff.ceiling(5) == 0.1


def test_is_debug_turns_the_packages_loggers_to_debug() -> None:
    logger = logging.getLogger("camunda_relay")
    logger.setLevel(logging.INFO)
    worker({"isDebug": False})
    assert logger.level == logging.INFO
    worker({"isDebug": True})
    assert logger.level == logging.DEBUG


def _registration(config: dict[str, object]) -> Router:
    def handle(task: ExternalTask) -> TaskResult:
        return task.complete()

    return worker(config).router("topicName", handle)


def test_include_extension_properties_is_on_by_default_as_in_the_client() -> None:
    assert _registration({})["topicName"].extension_properties is True
    registration = _registration({"includeExtensionProperties": False})["topicName"]
    assert registration.extension_properties is False


def test_deserialize_values_false_hands_out_json_as_text() -> None:
    seen: list[object] = []

    def handle(task: ExternalTask) -> TaskResult:
        seen.append(task.get_variable("order"))
        return task.complete()

    task = make_task("topicName", {"order": {"id": 7}})
    for config in ({}, {"deserializeValues": False}):
        worker(config).router("topicName", handle)["topicName"].handler(task)  # type: ignore[call-arg]
    assert seen == [{"id": 7}, '{"id":7}']


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"timeoutDeltaMillis": 5000}, "config key 'timeoutDeltaMillis' is not supported"),
        ({"maxConcurrentTasks": 4}, "unknown config key 'maxConcurrentTasks'"),
        ({"lockduration": 4}, "unknown config key 'lockduration'"),
        ({"maxTasks": 0}, "config key 'maxTasks'"),
        ({"maxTasks": "3"}, "config key 'maxTasks' must be a whole number"),
        ({"lockDuration": "10s"}, "config key 'lockDuration' must be a number of milliseconds"),
        ({"lockDuration": 0}, "config key 'lockDuration'"),
        ({"asyncResponseTimeout": 3_600_000}, "config key 'asyncResponseTimeout'"),
        ({"retries": -1}, "config key 'retries'"),
        ({"httpTimeoutMillis": 0}, "config key 'httpTimeoutMillis'"),
        ({"usePriority": "yes"}, "config key 'usePriority' must be True or False"),
        ({"sorting": [{"sortBy": "priority"}]}, "config key 'sorting'"),
        ({"auth_basic": {"username": "demo"}}, "config key 'auth_basic'"),
        ({"auth_bearer": {"token": "x"}}, "config key 'auth_bearer'"),
        ({"sleepSeconds": 0}, "config key 'sleepSeconds'"),
        ({"isDebug": 1}, "config key 'isDebug'"),
        ({"includeExtensionProperties": "on"}, "config key 'includeExtensionProperties'"),
        ({"deserializeValues": None}, "config key 'deserializeValues'"),
    ],
)
def test_a_key_that_cannot_be_used_is_one_line_naming_it(
    config: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        worker(config)
    assert "\n" not in str(raised.value)


def test_a_password_in_a_refused_key_is_not_repeated() -> None:
    with pytest.raises(ConfigurationError) as raised:
        worker({"auth_basic": {"username": "demo", "password": "s3cr3t", "x": 1}})
    assert "s3cr3t" not in str(raised.value)
