"""``make compat``: the engine-backed tests on every engine, the unit tests on every Python.

For each engine (:data:`camunda_relay.engine_flavours.FLAVOURS`: Camunda 7.24.0, 7.23.0,
7.22.0, 7.21.0 and Operaton 1.0.3) the engine is built (once; the build's time is shown) and
:data:`ENGINE_TESTS` run against it (``CAMUNDA_RELAY_TEST_ENGINE``); for each Python of
:data:`PYTHONS` a virtual environment with the locked dependencies (``build/compat/``, made
once) runs the unit and fake-engine tests. Then one table: engine x result, Python x result,
also written to ``build/compat/results.md`` (and ``.json``). Exit code 1 when anything failed
or a Python was not found.

    python -m tests.compat [--engines camunda,operaton] [--pythons 3.11,3.13] [--smoke]

A Python is looked for as ``pythonX.Y`` on the PATH, then in pyenv's versions
(``$(pyenv root)/versions/X.Y.*``, newest first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from camunda_relay import bundled_engine
from camunda_relay.engine_flavours import FLAVOURS, EngineFlavour

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "compat"

# Seed flow, Json support, worker, reply (deferred too), reconciler (pending, lost journal),
# CLI, rights, auth, the management port; then the fault-injection smoke subset.
ENGINE_TESTS = (
    "tests/engine/test_seed_flow.py",
    "tests/engine/test_json_support.py",
    "tests/engine/test_worker.py",
    "tests/engine/test_deferred_reply.py",
    "tests/engine/test_management.py",
    "tests/engine/test_client.py",
    "tests/engine/test_pending.py",
    "tests/engine/test_lost_journal.py",
    "tests/engine/test_cli_engine.py",
    "tests/engine/test_cli_process.py",
    "tests/engine/test_worker_rights.py",
    "tests/engine/test_auth.py",
    "tests/faults/test_smoke.py",
)
# --smoke (.ci/run's Operaton run): the seed flow, Json support, the worker, replies, the CLI.
SMOKE_TESTS = (
    "tests/engine/test_seed_flow.py",
    "tests/engine/test_json_support.py",
    "tests/engine/test_worker.py",
    "tests/engine/test_client.py",
    "tests/engine/test_cli_engine.py",
)
UNIT_TESTS = ("tests/unit", "tests/faults/test_faultproxy.py", "tests/faults/test_tcpproxy.py")
UNIT_MARKS = "not engine and not browser and not packaging"
PYTHONS = ("3.11", "3.12", "3.13")
# pytest's closing line: "94 passed in 812.42s (0:13:32)", "=== 1 failed, 3 passed in 2.1s ===".
_SUMMARY = re.compile(
    r"^=* ?(\d+ (?:passed|failed|errors?|skipped|deselected)[^\n]*?) in [\d.]+s", re.M
)
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)")


@dataclass
class Row:
    target: str  # "Camunda 7.24.0", "Python 3.12.1"
    ok: bool
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    build_seconds: float | None = None
    note: str = ""
    log: str = ""

    @property
    def result(self) -> str:
        if not self.counts:
            return self.note or "did not run"
        shown = [
            f"{self.counts[k]} {k}"
            for k in ("passed", "failed", "error", "skipped")
            if k in self.counts
        ]
        return ", ".join(shown)


def _counts(output: str) -> dict[str, int]:
    found = _SUMMARY.findall(output)
    if not found:
        return {}
    counts: dict[str, int] = {}
    for number, kind in _COUNT.findall(found[-1]):
        counts["error" if kind.startswith("error") else kind] = int(number)
    return counts


def _skip_reasons(output: str) -> str:
    """The distinct reasons of the SKIPPED lines of ``-rs``, with how many each."""
    reasons: dict[str, int] = {}
    for match in re.finditer(r"^SKIPPED \[(\d+)\] [^:]+:\d+: (.*)$", output, re.M):
        reasons[match.group(2)] = reasons.get(match.group(2), 0) + int(match.group(1))
    return "; ".join(f"{n} skipped: {reason}" for reason, n in reasons.items())


def _pytest(
    python: str, tests: Sequence[str], log: Path, *args: str, **env: str
) -> tuple[int, str, float]:
    began = time.monotonic()
    command = [python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args, *tests]
    with log.open("w") as out:
        code = subprocess.call(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
        )
    return code, log.read_text(errors="replace"), time.monotonic() - began


def run_engine(flavour: EngineFlavour, tests: Sequence[str]) -> Row:
    log = OUT / f"{flavour.key}.log"
    print(f"== {flavour.title}: building", flush=True)
    began = time.monotonic()
    try:
        bundled_engine.ensure_built(flavour=flavour, progress=lambda line: print(line, flush=True))
    except bundled_engine.EngineBuildError as error:
        first = str(error).splitlines()[0]
        return Row(flavour.title, ok=False, note=f"build failed: {first}", log=str(log))
    built = time.monotonic() - began
    print(f"== {flavour.title}: {len(tests)} test files", flush=True)
    code, output, seconds = _pytest(
        sys.executable, tests, log, CAMUNDA_RELAY_TEST_ENGINE=f"{flavour.name}:{flavour.version}"
    )
    counts = _counts(output)
    row = Row(
        flavour.title,
        code == 0 and bool(counts),
        counts,
        seconds,
        built,
        _skip_reasons(output),
        str(log),
    )
    print(
        f"   {row.result} in {seconds:.0f} s ({'ok' if row.ok else 'FAILED'}; log {log})",
        flush=True,
    )
    return row


def find_python(version: str) -> Path | None:
    found = shutil.which(f"python{version}")
    if found:
        return Path(found)
    roots = [Path(os.environ["PYENV_ROOT"])] if os.environ.get("PYENV_ROOT") else []
    roots.append(Path.home() / ".pyenv")
    for root in roots:
        candidates = sorted(
            (root / "versions").glob(f"{version}.*"),
            key=lambda p: [int(x) if x.isdigit() else -1 for x in p.name.split(".")],
        )
        for candidate in reversed(candidates):
            python = candidate / "bin" / "python"
            if python.exists() and re.fullmatch(rf"{re.escape(version)}\.\d+", candidate.name):
                return python
    return None


def _venv(python: Path, version: str) -> Path:
    """``build/compat/py<version>`` with the locked dependencies and this package (editable);
    made again when requirements.lock or pyproject.toml changed."""
    venv = OUT / f"py{version}"
    stamp = venv / ".installed"
    wanted = "".join((ROOT / name).read_text() for name in ("requirements.lock", "pyproject.toml"))
    if stamp.exists() and stamp.read_text() == wanted:
        return venv / "bin" / "python"
    shutil.rmtree(venv, ignore_errors=True)
    print(f"== Python {version}: making {venv}", flush=True)
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(ROOT / "requirements.lock")], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    stamp.write_text(wanted)
    return venv / "bin" / "python"


def run_python(version: str) -> Row:
    python = find_python(version)
    if python is None:
        return Row(
            f"Python {version}", ok=False, note="not found (pythonX.Y on the PATH or in pyenv)"
        )
    release = subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        venv_python = _venv(python, version)
    except subprocess.CalledProcessError as error:
        return Row(
            f"Python {release}", ok=False, note=f"installing the dependencies failed: {error}"
        )
    log = OUT / f"python-{release}.log"
    print(f"== Python {release}: unit and fake-engine tests", flush=True)
    code, output, seconds = _pytest(str(venv_python), UNIT_TESTS, log, "-m", UNIT_MARKS)
    counts = _counts(output)
    row = Row(
        f"Python {release}",
        code == 0 and bool(counts),
        counts,
        seconds,
        None,
        _skip_reasons(output),
        str(log),
    )
    print(
        f"   {row.result} in {seconds:.0f} s ({'ok' if row.ok else 'FAILED'}; log {log})",
        flush=True,
    )
    return row


def table(engines: Sequence[Row], pythons: Sequence[Row]) -> str:
    lines = []
    if engines:
        lines += [
            "| engine | build | engine-backed tests | time | result | skipped because |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in engines:
            built = f"{row.build_seconds:.0f} s" if row.build_seconds is not None else "-"
            note = row.note if row.counts else ""
            outcome = "ok" if row.ok else ("FAILED: " + row.note if not row.counts else "FAILED")
            took = f"{row.seconds:.0f} s"
            lines.append(f"| {row.target} | {built} | {row.result} | {took} | {outcome} | {note} |")
    if pythons:
        if lines:
            lines.append("")
        lines += [
            "| Python | unit and fake-engine tests | time | result |",
            "| --- | --- | --- | --- |",
        ]
        for row in pythons:
            outcome = "ok" if row.ok else ("FAILED: " + row.note if not row.counts else "FAILED")
            lines.append(f"| {row.target} | {row.result} | {row.seconds:.0f} s | {outcome} |")
    return "\n".join(lines)


def _rescan() -> tuple[list[Row], list[Row], float]:
    """The rows of the last run, their counts read again from the logs."""
    last = json.loads((OUT / "results.json").read_text())
    rows: dict[str, list[Row]] = {}
    for kind in ("engines", "pythons"):
        rows[kind] = []
        for saved in last[kind]:
            row = Row(**saved)
            if row.log and Path(row.log).exists():
                output = Path(row.log).read_text(errors="replace")
                row.counts = _counts(output)
                row.note = _skip_reasons(output) or row.note
                row.ok = bool(row.counts) and not (
                    row.counts.get("failed") or row.counts.get("error")
                )
            rows[kind].append(row)
    return rows["engines"], rows["pythons"], float(last["wall_seconds"])


def _engines(text: str) -> list[EngineFlavour]:
    if text == "all":
        return [EngineFlavour(name, v) for name, releases in FLAVOURS.items() for v in releases]
    return [EngineFlavour.parse(item) for item in text.split(",") if item.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.compat", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--engines", default="all", help="all, or a comma-separated list (camunda:7.22.0,operaton)"
    )
    parser.add_argument(
        "--pythons",
        default=",".join(PYTHONS),
        help="comma-separated (3.11,3.12); none for no Python",
    )
    parser.add_argument(
        "--rescan",
        action="store_true",
        help="no run: the table again from build/compat/results.json and the logs",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="only the seed flow, worker, reply and CLI tests"
    )
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.rescan:
        engines, pythons, wall = _rescan()
    else:
        began = time.monotonic()
        tests = SMOKE_TESTS if args.smoke else ENGINE_TESTS
        engines = [run_engine(flavour, tests) for flavour in _engines(args.engines)]
        wanted = "" if args.pythons == "none" else args.pythons
        pythons = [run_python(v.strip()) for v in wanted.split(",") if v.strip()]
        wall = time.monotonic() - began
    shown = table(engines, pythons)
    (OUT / "results.md").write_text(shown + "\n")
    (OUT / "results.json").write_text(
        json.dumps(
            {
                "wall_seconds": round(wall),
                "engines": [asdict(r) for r in engines],
                "pythons": [asdict(r) for r in pythons],
            },
            indent=2,
        )
        + "\n"
    )
    print()
    print(shown)
    failed = [row.target for row in (*engines, *pythons) if not row.ok]
    passed = len(engines) + len(pythons) - len(failed)
    print(f"\nmake compat took {wall / 60:.1f} min")
    print(f"compat: {passed} passed, {len(failed)} failed")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
