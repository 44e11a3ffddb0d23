"""A server subprocess on loopback: free port (another one if it is taken when the server binds),
API key, readiness with a timeout, log captured, stopped by process group (SIGTERM, then SIGKILL)
even when the stage using it fails.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from pipeline import secrecy
from pipeline.settings import Settings
from pipeline.toolenv import ToolFailed


class ServerFailed(ToolFailed):
    """The server exited, did not become ready, or stopped answering; one line, its log named."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_api_key() -> str:
    return secrecy.register("qg-" + secrets.token_hex(16))


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


PORT_TAKEN = re.compile(r"address already in use|couldn't bind|could not bind|errno 98\b", re.IGNORECASE)
PORT_ATTEMPTS = 8


def ports() -> Iterator[int]:
    """Ports to try, at most PORT_ATTEMPTS: in order from the host's QUANTGATE_PORTS range (where a
    firewall allows only some), else fresh free ones from the OS. A port can be taken between the
    choice and the server's bind (another run, another program); the server then fails to bind and
    the next port is tried."""
    span = Settings().ports
    if span is not None:
        yield from itertools.islice(range(span[0], span[1] + 1), PORT_ATTEMPTS)
    else:
        for _ in range(PORT_ATTEMPTS):
            yield free_port()


class ServerProcess:
    """Start `argv(port)`, wait until `ready_path` answers 200 on loopback, stop the whole process
    group on exit. A port found taken when the server binds it is retried on the next port."""

    def __init__(
        self,
        argv: Callable[[int], list[str]],
        ready_path: str,
        log_path: Path,
        ready_timeout_s: float,
        env: dict[str, str] | None = None,
        ready_check: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
    ):
        self.argv = argv
        self.ready_path = ready_path
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.env = env
        self.ready_check = ready_check
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.ready_seconds: float | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server has no port before it starts")
        return f"http://127.0.0.1:{self.port}"

    @property
    def ready_url(self) -> str:
        return self.base_url + self.ready_path

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        tried = []
        for attempt, port in enumerate(ports()):
            try:
                self._start_on(port)
                return
            except _PortTaken:
                tried.append(port)
                self.stop()
                with open(self.log_path, "a") as log:
                    log.write(f"[quantgate] port {port} was taken when the server bound it; trying another\n")
                time.sleep(min(0.2 * 2 ** attempt, 2.0))
        raise ServerFailed(f"every port tried was taken ({', '.join(map(str, tried))})", self.log_path, cause="")

    def _start_on(self, port: int) -> None:
        self.port = port
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = self.argv(port)
        log = open(self.log_path, "ab")
        # how it was started, for whoever reads the log (secrets go in the environment, never in argv)
        log.write(f"[quantgate] starting: {shlex.join(argv)}\n".encode())
        log.flush()
        started = time.monotonic()
        # Own session/process group: stopping it also stops any children the server spawned.
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        log.close()
        deadline = started + self.ready_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    if _log_since(self.log_path, log_start, PORT_TAKEN):
                        raise _PortTaken()
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


class _PortTaken(Exception):
    """The server could not bind its port: someone took it after it was chosen."""


def _log_since(path: Path, offset: int, pattern: re.Pattern[str]) -> bool:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return bool(pattern.search(handle.read().decode(errors="replace")))


class ServedEngine:
    """What engines that run one `ServerProcess` (set as self.server) share: a loopback address with
    a fresh port and API key, the served name, its log, and the context-manager plumbing."""

    name: str
    server: ServerProcess

    def __init__(self, artifact: Any, log_path: Path):
        self.artifact = artifact
        self.log_path = log_path
        self.api_key = new_api_key()
        self.served_model = artifact.variant

    @property
    def base_url(self) -> str:
        return self.server.base_url

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
