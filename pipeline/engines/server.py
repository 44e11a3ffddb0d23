"""A server subprocess on loopback: free port, API key, readiness with a timeout, log captured,
stopped by process group (SIGTERM, then SIGKILL) even when the stage using it fails.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import httpx

from pipeline.toolenv import ToolFailed


class ServerFailed(ToolFailed):
    """The server exited, did not become ready, or stopped answering; one line, its log named."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_api_key() -> str:
    return "qg-" + secrets.token_hex(16)


def exit_status(code: int) -> str:
    """'code 3', or 'signal SIGKILL' for a process killed by a signal (Popen's negative codes)."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies aside, which signal 0 still reaches)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ServerProcess:
    """Start `argv`, wait until `ready_url` answers 200, stop the whole process group on exit."""

    def __init__(
        self,
        argv: list[str],
        ready_url: str,
        log_path: Path,
        ready_timeout_s: float,
        env: dict[str, str] | None = None,
        ready_check: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
    ):
        self.argv = argv
        self.ready_url = ready_url
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.env = env
        self.ready_check = ready_check
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_seconds: float | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        started = time.monotonic()
        # Own session/process group: stopping it also stops any children the server spawned.
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()
        deadline = started + self.ready_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerFailed(f"server exited with {exit_status(self.proc.returncode)} before it was"
                                       " ready", self.log_path)
                try:
                    if self.ready_check(client.get(self.ready_url)):
                        self.ready_seconds = round(time.monotonic() - started, 2)
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
        self.stop()
        raise ServerFailed(f"server not ready after {self.ready_timeout_s:g} s", self.log_path)

    def check(self, timeout_s: float = 10.0) -> None:
        """Raise ServerFailed unless the server still runs and answers its health check: a number
        measured against a dead server is not a measurement."""
        proc = self.proc
        if proc is None:
            raise ServerFailed("server was never started")
        if proc.poll() is not None:
            raise ServerFailed(f"server exited with {exit_status(proc.returncode)}", self.log_path)
        try:
            with httpx.Client(timeout=timeout_s) as client:
                healthy = self.ready_check(client.get(self.ready_url))
        except httpx.HTTPError as exc:
            raise ServerFailed(f"server does not answer its health check ({type(exc).__name__})", self.log_path,
                               cause="") from None
        if not healthy:
            raise ServerFailed("server's health check failed", self.log_path)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after `grace_s`. The group is signalled
        even when the main process has already exited (killed, crashed): vLLM's engine-core and worker
        processes outlive it otherwise, holding gigabytes."""
        proc = self.proc
        if proc is None:
            return
        if _group_alive(proc.pid):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and (proc.poll() is None or _group_alive(proc.pid)):
                time.sleep(0.05)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()

    def __enter__(self) -> "ServerProcess":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServedEngine:
    """What engines that run one `ServerProcess` (set as self.server) share: a loopback address with
    a fresh port and API key, the served name, its log, and the context-manager plumbing."""

    name: str
    server: ServerProcess

    def __init__(self, artifact: Any, log_path: Path):
        self.artifact = artifact
        self.log_path = log_path
        self.api_key = new_api_key()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.served_model = artifact.variant

    @property
    def ready_seconds(self) -> float | None:
        return self.server.ready_seconds

    def check(self) -> None:
        self.server.check()

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)
