"""The smoke subset of the fault-injection suite (``make faults`` runs all of it).

Each test runs one scenario of :mod:`harness.scenarios` against a real engine of its own
(H2 in file mode; S17's journal on a throwaway PostgreSQL server), with the worker as a
subprocess behind the fault proxy, and asserts the checker's verdict: I1-I6, the journal
settled, and the scenario's own criterion. Instance counts are small so they take a few
minutes on a 2-core machine; a failing scenario's
folder (operation history, worker logs, journal, ledger, engine log, verdict) is kept under
pytest's tmp_path and named in the failure message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness.scenarios import SCENARIOS, Context

from tests.support.tools import missing

SEED = 20240611
SMOKE = {
    "S2A": 8,
    "S5": 12,
    "S6": 12,
    "S7": 6,
    "S12": 1,
    "S17": 5,
    "S18": 5,
    "S20": 5,
    "S22S": 20,
    "S26S": 30,
    "S23": 4,
}


@pytest.mark.engine
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("scenario", "instances"), SMOKE.items(), ids=list(SMOKE))
def test_fault_scenario_keeps_every_invariant(
    scenario: str, instances: int, engine_jar: Path, tmp_path: Path
) -> None:
    context = Context(root=tmp_path, seed=SEED, instances=instances, jar=engine_jar)
    verdict = SCENARIOS[scenario](context)
    if verdict.get("skipped"):
        missing(f"{scenario}'s tools", verdict["skipped"])
    failed = {name: check["detail"] for name, check in verdict["checks"].items() if not check["ok"]}
    report = json.dumps({"failed": failed, "notes": verdict["notes"]}, indent=2, default=str)
    assert verdict["ok"], f"{scenario} (seed {SEED}, files in {tmp_path / scenario}):\n{report}"
    assert verdict["finished"] == verdict["instances"] > 0
