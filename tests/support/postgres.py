"""A throwaway PostgreSQL server on loopback, for tests (Debian's packaged server).

The server refuses to run as root, so when the tests run as root the data directory belongs
to the ``postgres`` user and the server commands run as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

USER = "relay"
PASSWORD = "relay-test-password"


@dataclass(frozen=True)
class PostgresServer:
    bin_dir: Path
    data_dir: Path
    port: int

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} password={PASSWORD} dbname={database}"

    def jdbc_url(self, database: str) -> str:
        return f"jdbc:postgresql://127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def _run(self, args: Sequence[str]) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run(
            [
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-o",
                f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1",
                "-l",
                str(self.data_dir / "server.log"),
                "-w",
                "start",
            ]
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        self._run(["pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop"])


def init_server(bin_dir: Path, base: Path, port: int) -> PostgresServer:
    data_dir = base / "pgdata"
    data_dir.mkdir(parents=True)
    password_file = base / "pwfile"
    password_file.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (base, data_dir, password_file):
            shutil.chown(path, owner.pw_uid, owner.pw_gid)
        base.chmod(0o755)
    data_dir.chmod(0o700)
    server = PostgresServer(bin_dir=bin_dir, data_dir=data_dir, port=port)
    server._run(
        [
            "initdb",
            "-D",
            str(data_dir),
            "-A",
            "scram-sha-256",
            "-U",
            USER,
            f"--pwfile={password_file}",
            "-E",
            "UTF8",
        ]
    )
    server.start()
    return server
