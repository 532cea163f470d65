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
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
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
    """``pythonX.Y`` on the PATH when it runs (a pyenv shim of a version not selected does
    not), else the newest ``X.Y.*`` in pyenv's versions."""
    candidates: list[Path] = []
    found = shutil.which(f"python{version}")
    if found:
        candidates.append(Path(found))
    roots = [Path(os.environ["PYENV_ROOT"])] if os.environ.get("PYENV_ROOT") else []
    roots.append(Path.home() / ".pyenv")
    for root in roots:
        releases = [
            p
            for p in (root / "versions").glob(f"{version}.*")
            if re.fullmatch(rf"{re.escape(version)}\.\d+", p.name)
        ]
        releases.sort(key=lambda p: int(p.name.rsplit(".", 1)[1]), reverse=True)
        candidates += [p / "bin" / "python" for p in releases]
    for python in candidates:
        if python.exists() and _runs(python, version):
            return python
    return None


def _runs(python: Path, version: str) -> bool:
    try:
        result = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == version


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
    with (OUT / f"py{version}-install.log").open("w") as log:
        for step in (["--upgrade", "pip"], ["-r", str(ROOT / "requirements.lock")]):
            subprocess.run([*pip, *step], check=True, stdout=log, stderr=subprocess.STDOUT)
        subprocess.run(
            [*pip, "--no-deps", "-e", str(ROOT)], check=True, stdout=log, stderr=subprocess.STDOUT
        )
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


def _guarded(target: str, run: Callable[..., Row], *args: object) -> Row:
    """One row; a run that breaks (not a failing test) is a FAILED row naming why."""
    try:
        return run(*args)
    except Exception as error:  # noqa: BLE001 - reported in the table, the others still run
        print(f"   {target}: {type(error).__name__}: {error}", flush=True)
        return Row(target, ok=False, note=f"{type(error).__name__}: {error}")


def _rescan() -> tuple[list[Row], list[Row], float]:
    """The table again from the logs in build/compat/ (the build times and the wall time from
    results.json where it has them)."""
    last: dict[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        last = json.loads((OUT / "results.json").read_text())
    saved = {
        row["target"]: row
        for kind in ("engines", "pythons")
        for row in last.get(kind, [])  # type: ignore[attr-defined]
    }

    def row(target: str, log: Path) -> Row:
        output = log.read_text(errors="replace")
        counts = _counts(output)
        took = re.findall(r" in ([\d.]+)s", output)
        bad = counts.get("failed") or counts.get("error")
        built = saved.get(target, {}).get("build_seconds")
        return Row(
            target,
            bool(counts) and not bad,
            counts,
            float(took[-1]) if took else 0.0,
            built,
            _skip_reasons(output),
            str(log),
        )

    engines = [
        row(flavour.title, OUT / f"{flavour.key}.log")
        for flavour in _engines("all")
        if (OUT / f"{flavour.key}.log").exists()
    ]
    logs = sorted(OUT.glob("python-*.log"), key=lambda p: [int(x) for x in p.stem[7:].split(".")])
    pythons = [row(f"Python {log.stem.removeprefix('python-')}", log) for log in logs]
    return engines, pythons, float(last.get("wall_seconds", 0))  # type: ignore[arg-type]


def _engines(text: str) -> list[EngineFlavour]:
    if text == "none":
        return []
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
        engines = [
            _guarded(flavour.title, run_engine, flavour, tests)
            for flavour in _engines(args.engines)
        ]
        wanted = "" if args.pythons == "none" else args.pythons
        pythons = [
            _guarded(f"Python {v.strip()}", run_python, v.strip())
            for v in wanted.split(",")
            if v.strip()
        ]
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
