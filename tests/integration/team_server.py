"""A team tracking server for tests: a PostgreSQL cluster of its own (data directory, socket folder
and port under the test's tmp folder) and `mlflow server` over it with an artifacts destination,
both on loopback, both stopped afterwards. PostgreSQL refuses to run as root, so as root its tools
run as the `postgres` user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from pipeline.engines.server import free_port
from pipeline.settings import REPO_ROOT

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _pg(tool: str) -> str:
    found = PG_BIN / tool if (PG_BIN / tool).is_file() else shutil.which(tool)
    if not found:
        raise AssertionError(f"PostgreSQL's {tool} is not installed (Debian: apt-get install postgresql)")
    return str(found)


@contextmanager
def postgres() -> Iterator[str]:
    """A running cluster; yields its SQLAlchemy URI (database `mlflow`, user `postgres`, no password
    over loopback: `trust` for this throwaway cluster only). Its folder is outside pytest's, which
    the `postgres` user may not enter."""
    folder = Path(tempfile.mkdtemp(prefix="qg-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, sockets = folder / "data", folder / "sockets"
    subprocess.run(_as_postgres(["mkdir", str(sockets)]), check=True)
    subprocess.run(_as_postgres([_pg("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    subprocess.run(_as_postgres([_pg("pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "pg.log"),
                                 "-w", "start"]), check=True, capture_output=True)
    try:
        subprocess.run(_as_postgres([_pg("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"]),
                       check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres([_pg("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def psql(uri: str, query: str) -> str:
    """One query's rows, tab-separated."""
    port = uri.rsplit(":", 1)[1].split("/")[0]
    return subprocess.run(_as_postgres([_pg("psql"), "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "mlflow",
                                        "-At", "-F", "\t", "-c", query]), check=True, capture_output=True,
                          text=True).stdout


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path) -> Iterator[str]:
    """`mlflow server` over `backend_uri`, artifacts proxied to `artifacts`; yields its URL."""
    port = free_port()
    with open(log, "w") as handle:
        proc = subprocess.Popen([str(REPO_ROOT / ".venv" / "bin" / "mlflow"), "server", "--backend-store-uri",
                                 backend_uri, "--artifacts-destination", artifacts.as_uri(), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"], stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"mlflow server not ready in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
