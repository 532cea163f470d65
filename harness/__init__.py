"""The fault-injection harness: the real engine, the worker as a subprocess, and faults between
and inside them (see FAULTS.md of the project's shared notes).

Parts, one module each:

- :mod:`harness.faultproxy`: an asyncio HTTP proxy between worker and engine that injects
  latency, blackholes, resets, lost and truncated responses and 5xx answers per route;
- :mod:`harness.history`: the Jepsen-style record of every engine call the worker made;
- :mod:`harness.ledger`: the side-effect ledger (``applied`` once per job, every ``attempt``);
- :mod:`harness.fault_worker`: the worker module under test (``camunda-relay worker
  harness.fault_worker``), writing its effects to the ledger;
- :mod:`harness.chaos`: kill -9 / SIGSTOP / restart of the worker, the engine and PostgreSQL;
- :mod:`harness.lab`: one scenario's engine, proxy, workers and folder;
- :mod:`harness.checker`: the invariants I1-I6, as a JSON-able verdict;
- :mod:`harness.scenarios`: S1-S15; :mod:`harness.run`: ``python -m harness.run``.
"""
