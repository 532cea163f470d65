from camunda_relay.compat import ExternalTask, TaskResult
from camunda_relay.compat import ExternalTaskWorker

default_config = {
    "maxTasks": 1,
    "lockDuration": 10000,
    "asyncResponseTimeout": 5000,
    "retries": 3,
    "retryTimeout": 5000,
    "sleepSeconds": 30
}

def handle_task(task: ExternalTask) -> TaskResult:
    key = task.get_business_key()

    print("business key from task event", key)
    print("create task event")

    return task.complete({"var1": 1, "var2": "value"})

ExternalTaskWorker(worker_id="1", config=default_config).subscribe(
    "messageSending", handle_task, reply="sample_response"
)
