"""``python -m harness.run [--scenario S5 ...] [--seed N] [--instances N]``: run the fault
scenarios against the real engine and print the table.

Each scenario gets its own engine (H2 in file mode; S10 on PostgreSQL when installed), fault
proxy, worker subprocesses and folder under ``--results`` (default
``.camunda-relay/faults/<time>-seed<N>/``): the operation history (``history.jsonl``), the
worker logs, the journals, the ledger, the engine log and ``verdict.json``. The folders of
passing scenarios are removed unless ``--keep``; a failing run keeps its folder and its seed,
and the run's summary goes to ``summary.json`` beside them. Exit code 1 when any invariant
failed.

S11 (half-open connections) is emulated by the fault proxy, which stalls every exchange in
flight and new (no FIN, no RST), as a ``drop`` rule on established packets would; nftables is
not used (it needs the nft tool and a private network namespace around engine and worker).
S16 (clock skew) is not implemented. S17, S19 and S21 keep their journal on a PostgreSQL
server of their own and are skipped when none is installed; S21's "drop rule" is a TCP proxy
in front of that server (:mod:`harness.tcpproxy`), for the same reason.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from harness.scenarios import SCENARIOS, SMOKE, Context

COLUMNS = (
    ("scenario", 9),
    ("instances", 9),
    ("finished", 8),
    ("lost", 4),
    ("dup deliveries", 14),
    ("dup effects", 11),
    ("max attempts", 12),
    ("time s", 6),
    ("result", 0),
)


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _row(verdict: dict[str, Any]) -> str:
    result = "PASS" if verdict.get("ok") else "FAIL"
    if verdict.get("skipped"):
        result = f"SKIP ({verdict['skipped']})"
    elif verdict.get("error"):
        result = f"ERROR {verdict['error'][:60]}"
    elif not verdict.get("ok"):
        failed = [k for k, c in verdict.get("checks", {}).items() if not c["ok"]]
        note = verdict.get("notes", {}).get("result")
        result = f"FAIL {','.join(failed)}" + (f" ({note})" if note else "")
    values = [
        verdict.get("scenario", "?"),
        verdict.get("instances", "-"),
        verdict.get("finished", "-"),
        verdict.get("lost", "-"),
        verdict.get("dup_deliveries", "-"),
        verdict.get("dup_effects", "-"),
        verdict.get("max_attempts", "-"),
        verdict.get("seconds", "-"),
        result,
    ]
    return "  ".join(
        str(v).ljust(w) if w else str(v) for v, (_, w) in zip(values, COLUMNS, strict=True)
    )


def table(verdicts: list[dict[str, Any]]) -> str:
    header = "  ".join(name.ljust(w) if w else name for name, w in COLUMNS)
    return "\n".join([header, "-" * len(header), *(_row(v) for v in verdicts)])


def run(names: list[str], ctx: Context, *, keep: bool, echo: bool = True) -> list[dict[str, Any]]:
    verdicts: list[dict[str, Any]] = []
    for name in names:
        started = time.monotonic()
        try:
            verdict = SCENARIOS[name](ctx)
        except Exception as error:  # noqa: BLE001 - one scenario's crash is its verdict
            verdict = {
                "scenario": name,
                "ok": False,
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(),
            }
        verdict["seconds"] = round(time.monotonic() - started)
        folder = ctx.root / name
        if folder.exists():
            (folder / "verdict.json").write_text(json.dumps(verdict, indent=2, default=str))
            if verdict.get("ok") and not keep:
                shutil.rmtree(folder, ignore_errors=True)
        verdicts.append(verdict)
        if echo:
            _say(_row(verdict))
            if not verdict.get("ok"):
                for check, result in verdict.get("checks", {}).items():
                    if not result["ok"]:
                        _say(f"    {check}: {result['detail']}")
                if verdict.get("traceback"):
                    _say(verdict["traceback"])
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), default=None)
    parser.add_argument("--smoke", action="store_true", help=f"only {', '.join(SMOKE)}")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--instances", type=int, default=None, help="instances per scenario")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="S1.p=0.1",
        help="scenario parameter: S1.p, S2B.sweep, S3.cap, S6B.outage, S8.down, "
        "S8.db (h2|postgres), S8B.down, S9.hang, S10.postgres (auto|on|off), S11.silent, "
        "S15.window, S17.lease, S18.deadline, S18.down, S19.held, S19.lease, S20.rounds, "
        "S21.silence, S21.bound, S22.lease, S22S.lease, S24.lease",
    )
    parser.add_argument("--results", type=Path, default=Path(".camunda-relay/faults"))
    parser.add_argument("--keep", action="store_true", help="keep the folders of passing runs")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000
    names = args.scenario or (list(SMOKE) if args.smoke else list(SCENARIOS))
    root = args.results / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    params = dict(item.split("=", 1) for item in args.param)
    ctx = Context(root=root.resolve(), seed=seed, instances=args.instances, params=params)
    _say(f"seed {seed}; results in {root}")
    _say(table([]))
    verdicts = run(names, ctx, keep=args.keep)
    failed = [v for v in verdicts if not v.get("ok")]
    _say()
    _say(table(verdicts))
    _say(
        f"\n{len(verdicts) - len(failed)} passed, {len(failed)} failed; "
        f"instances: {sum(int(v.get('instances') or 0) for v in verdicts)}, lost: "
        f"{sum(int(v.get('lost') or 0) for v in verdicts)}; seed {seed}"
    )
    if root.exists():
        (root / "summary.json").write_text(json.dumps(verdicts, indent=2, default=str))
        if not failed and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            _say(
                f"kept: {root} (rerun: python -m harness.run --seed {seed} "
                + " ".join(f"--scenario {v['scenario']}" for v in failed)
                + ")"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
