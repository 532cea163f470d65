# ruff: noqa: T201, S113 - the conception's code as written (prints, no timeout)
"""The conception's worker (shared/seed/conception.md), as written.

Kept as the conception has it: camunda-external-task-client-python3's blocking
``ExternalTaskWorker`` (one fetch, one task at a time), ``handle_task`` starting a thread per
task, and that thread's ``time.sleep(2)`` before a bare ``requests.post`` of the message by
business key. ``default_config`` is the one from the client's README, which the conception
refers to without spelling it out.

Changed, and only this (the benchmark says so in docs/benchmarks.md):

- the URL, topic, message name and credentials come from the environment
  (``CAMUNDA_URL``, ``CAMUNDA_USER``, ``CAMUNDA_PASSWORD``) instead of being hard-coded;
- HTTP Basic auth: the bundled engine requires it, so ``auth_basic`` is added to the client's
  config and ``auth=`` to the ``requests.post`` of the message (the conception has none);
- ``CONCEPTION_SLEEP_SECONDS`` (default 2) is the length of the ``time.sleep``; 0 skips the
  sleep ("the same code without the sleep");
- one line of instrumentation in ``handle_task``: :func:`bench.marks.mark` records when the
  handler started (nothing is recorded unless ``BENCH_MARKS`` is set).
"""

import os
import threading
import time

import requests
from camunda.external_task.external_task import ExternalTask, TaskResult
from camunda.external_task.external_task_worker import ExternalTaskWorker

from bench.marks import mark

ENGINE_URL = os.environ.get("CAMUNDA_URL", "http://localhost:8080/engine-rest")
USER = os.environ.get("CAMUNDA_USER", "demo")
PASSWORD = os.environ.get("CAMUNDA_PASSWORD", "demo")
TOPIC = os.environ.get("CONCEPTION_TOPIC", "messageSending")
MESSAGE_NAME = os.environ.get("CONCEPTION_MESSAGE", "sample_response")
SLEEP_SECONDS = float(os.environ.get("CONCEPTION_SLEEP_SECONDS", "2"))

# configuration for the Client (the client's README), plus the credentials
default_config = {
    "maxTasks": 1,
    "lockDuration": 10000,
    "asyncResponseTimeout": 5000,
    "retries": 3,
    "retryTimeout": 5000,
    "sleepSeconds": 30,
    "auth_basic": {"username": USER, "password": PASSWORD},
}


def sendTaskResponse(businessKey):
    print("using businesskey", businessKey)
    if SLEEP_SECONDS:
        time.sleep(SLEEP_SECONDS)
    url = ENGINE_URL + "/message"
    data = {"businessKey": businessKey, "messageName": MESSAGE_NAME}
    print("used url is ", url)
    print("used json data is ", data)
    response = requests.post(
        url, headers={"Content-Type": "application/json"}, json=data, auth=(USER, PASSWORD)
    )

    if response.status_code == 204:
        print("Request successful")
        print(response)
    else:
        print("Request failed")
        print(response)


def handle_task(task: ExternalTask) -> TaskResult:
    mark(task.get_process_instance_id())  # benchmark instrumentation: the handler started
    key = task.get_business_key()

    print("business key from task event", key)
    # create a seperated thread for sendTaskResponse in
    e = threading.Event()  # noqa: F841 - as in the conception
    t1 = threading.Thread(target=sendTaskResponse, args=[key])
    t1.start()
    print("create task event")

    return task.complete({"var1": 1, "var2": "value"})


if __name__ == "__main__":
    ExternalTaskWorker(worker_id="1", base_url=ENGINE_URL, config=default_config).subscribe(
        TOPIC, handle_task
    )
