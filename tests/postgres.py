"""A private PostgreSQL for tests: a cluster made with initdb in a temp folder, on a free port.

Never the machine's own server on 5432: the cluster listens on 127.0.0.1 on a port from
tests/ports.py and on a socket in its own folder, with trust auth for local tests.
initdb refuses to run as root, so as root the cluster is made and run by the `postgres`
system user (Debian's postgresql package creates it) through runuser; as anyone else, by
that user. `./dev test` installs Debian's postgresql when initdb is missing.

    cluster = Postgres().start()
    url = cluster.create_database("t1")     # postgresql://postgres@127.0.0.1:PORT/t1
    cluster.stop()

initdb runs once per machine and PostgreSQL version: its cluster is kept in the temp folder as
a template (never started itself) and each test cluster is a copy of it, ~0.1 s of CPU in
place of initdb's ~0.45 s in every xdist worker.
"""
from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ports import free_port

HOST = "127.0.0.1"
INITDB_OPTIONS = ("-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")


class PostgresError(RuntimeError):
    """The cluster could not be made or started; the message carries its log."""


def find_binary(name: str) -> str:
    """initdb, pg_ctl, psql: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0)
    if not candidates:
        raise PostgresError(f"{name} not found: apt-get install -y postgresql (./dev test does)")
    return candidates[-1]


class Postgres:
    """One throwaway cluster: `start()`, `create_database(name)`, `stop()` (which deletes it)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="dispenser-pg-"))
        self.data = self.folder / "data"
        self.log_path = self.folder / "postgres.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.folder, "postgres", "postgres")

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        full = ["runuser", "-u", "postgres", "--", *command] if self.as_root else list(command)
        result = subprocess.run(full, capture_output=True, text=True, cwd=self.folder, timeout=120)
        if result.returncode != 0:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise PostgresError(f"{Path(command[0]).name} failed: {result.stderr.strip()}\n{log}")
        return result

    def start(self) -> "Postgres":
        self._run("cp", "-a", str(self._template()), str(self.data))
        for attempt in range(3):
            options = (f"-p {self.port} -k {self.folder} -c listen_addresses={HOST} -c fsync=off "
                       "-c full_page_writes=off -c max_connections=100")
            try:
                self._run(find_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log_path),
                          "-w", "-t", "60", "start")
                return self
            except PostgresError as error:
                if "already in use" not in str(error) or attempt == 2:
                    raise
                self.port = free_port()
        return self

    def _template(self) -> Path:
        """The cluster initdb makes, made once (under a lock: xdist's workers start together)
        and named for initdb's binary and options, so another PostgreSQL gets a template of
        its own. It appears by a rename when complete; a cluster half made is never used."""
        initdb = find_binary("initdb")
        stat = os.stat(initdb)
        key = hashlib.sha256(repr((initdb, stat.st_size, stat.st_mtime_ns, INITDB_OPTIONS)).encode()).hexdigest()
        template = Path(tempfile.gettempdir()) / f"dispenser-pg-template-{os.geteuid()}-{key[:16]}"
        if (template / "PG_VERSION").exists():
            return template
        with open(f"{template}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (template / "PG_VERSION").exists():
                staging = Path(tempfile.mkdtemp(prefix="dispenser-pg-staging-"))
                try:
                    if self.as_root:
                        shutil.chown(staging, "postgres", "postgres")
                    self._run(initdb, "-D", str(staging / "data"), *INITDB_OPTIONS)
                    os.rename(staging / "data", template)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        return template

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            try:
                self._run(find_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except PostgresError:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)
