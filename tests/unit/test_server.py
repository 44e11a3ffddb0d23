"""Server lifecycle: readiness, failure with the log tail, and stopping the whole process group.

The servers here are small fake scripts: what is under test is the orchestrator's own lifecycle logic.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from pipeline.engines.server import ServerFailed, ServerProcess, free_port

HTTP_SERVER = """
import http.server, os, signal, subprocess, sys, time
port = int(sys.argv[1])
DELAY = {delay}
if {ignore_term}:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if {spawn_child}:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    open(sys.argv[2], "w").write(str(child.pid))
started = time.monotonic()

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = time.monotonic() - started >= DELAY
        self.send_response(200 if ready else 503)
        self.end_headers()
        self.wfile.write(b"ok" if ready else b"loading")

    def log_message(self, *args):
        pass

print("listening on", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def fake_server(tmp_path: Path, delay: float = 0.0, ignore_term: bool = False, spawn_child: bool = False) -> Path:
    script = tmp_path / "fake_server.py"
    script.write_text(HTTP_SERVER.format(delay=delay, ignore_term=ignore_term, spawn_child=spawn_child))
    return script


def server(tmp_path: Path, argv_tail: list[str], ready_timeout_s: float = 10.0,
           script: Path | None = None) -> ServerProcess:
    def argv(port: int) -> list[str]:
        return [sys.executable, str(script), str(port)] + argv_tail if script else argv_tail
    return ServerProcess(argv, "/health", tmp_path / "logs" / "server.log", ready_timeout_s)


def gone(pid: int) -> bool:
    """True when the process no longer runs (exited, or a zombie waiting for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


def test_ready_after_health_answers_200_and_stopped_on_exit(tmp_path):
    # /health answers 503 for the first half second, as llama-server does while loading the model.
    proc = server(tmp_path, [], script=fake_server(tmp_path, delay=0.5))
    with proc:
        assert proc.proc is not None and proc.proc.poll() is None
        assert proc.ready_seconds is not None and 0.5 <= proc.ready_seconds < 8
    assert proc.proc.poll() is not None
    assert "listening on" in (tmp_path / "logs" / "server.log").read_text()


def test_server_that_exits_raises_with_its_last_error_in_one_line(tmp_path):
    argv = [sys.executable, "-c", "import sys; print('loading model', flush=True);"
            " print('RuntimeError: boom', file=sys.stderr, flush=True); print('bye', flush=True); sys.exit(3)"]
    proc = server(tmp_path, argv)
    started = time.monotonic()
    with pytest.raises(ServerFailed) as info:
        with proc:
            pytest.fail("the body must not run when the server failed")
    assert time.monotonic() - started < 5  # noticed the exit; did not wait for the ready timeout
    message = str(info.value)
    assert message == (f"server exited with code 3 before it was ready: RuntimeError: boom;"
                       f" log {tmp_path / 'logs' / 'server.log'}")  # the log's error line, not its tail


def test_server_never_ready_times_out_and_is_killed(tmp_path):
    argv = [sys.executable, "-c", "import time; print('stuck', flush=True); time.sleep(120)"]
    proc = server(tmp_path, argv, ready_timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(ServerFailed) as info:
        with proc:
            pass
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 6
    # its log holds no error line ("stuck"): nothing misleading is quoted, the log is named
    assert str(info.value) == f"server not ready after 1.5 s; log {tmp_path / 'logs' / 'server.log'}"
    assert proc.proc.poll() is not None


def test_server_answering_503_forever_is_not_ready(tmp_path):
    proc = server(tmp_path, [], ready_timeout_s=1.5, script=fake_server(tmp_path, delay=999))
    with pytest.raises(ServerFailed, match="not ready"):
        proc.start()
    assert proc.proc.poll() is not None


def test_sigterm_ignored_is_killed(tmp_path):
    proc = server(tmp_path, [], script=fake_server(tmp_path, ignore_term=True))
    proc.start()
    try:
        started = time.monotonic()
        proc.stop(grace_s=0.5)
        assert proc.proc.poll() is not None
        assert proc.proc.returncode == -9  # SIGKILL, after SIGTERM was ignored
        assert time.monotonic() - started < 3
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()


def test_children_of_the_server_are_stopped_too(tmp_path):
    pid_file = tmp_path / "child.pid"
    proc = server(tmp_path, [str(pid_file)], script=fake_server(tmp_path, spawn_child=True))
    with proc:
        child = int(pid_file.read_text())
        assert not gone(child)
    try:
        assert wait_gone(child)
    finally:
        if not gone(child):
            os.kill(child, 9)


def test_stop_is_safe_before_start_and_twice(tmp_path):
    proc = server(tmp_path, [], script=fake_server(tmp_path))
    proc.stop()
    with proc:
        pass
    proc.stop()
    assert proc.proc.poll() is not None


def test_a_server_killed_outright_still_has_its_children_stopped(tmp_path):
    """vLLM's engine-core and workers outlive a SIGKILLed API server; stop() must still end them."""
    pid_file = tmp_path / "child.pid"
    proc = server(tmp_path, [str(pid_file)], script=fake_server(tmp_path, spawn_child=True))
    proc.start()
    child = int(pid_file.read_text())
    try:
        os.kill(proc.proc.pid, 9)
        assert wait_gone(proc.proc.pid) and not gone(child)
        proc.stop(grace_s=1.0)
        assert wait_gone(child)
    finally:
        if not gone(child):
            os.kill(child, 9)


def test_check_passes_while_healthy_and_names_the_exit_once_dead(tmp_path):
    proc = server(tmp_path, [], script=fake_server(tmp_path))
    with proc:
        proc.check()
        os.kill(proc.proc.pid, 9)
        proc.proc.wait()
        with pytest.raises(ServerFailed) as info:
            proc.check()
        assert "exited with signal SIGKILL" in str(info.value) and str(tmp_path / "logs" / "server.log") in str(info.value)


def test_check_fails_a_server_that_runs_but_no_longer_answers(tmp_path):
    proc = server(tmp_path, [], script=fake_server(tmp_path))
    with proc:
        os.kill(proc.proc.pid, 19)  # SIGSTOP: alive, silent (a hung server)
        try:
            with pytest.raises(ServerFailed, match="does not answer its health check"):
                proc.check(timeout_s=0.5)
        finally:
            os.kill(proc.proc.pid, 18)


def _taken_port_with_free_neighbour() -> tuple[socket.socket, int]:
    """A listening socket on port P, with P+1 free: QUANTGATE_PORTS=P-(P+1) makes the first try clash."""
    for _ in range(50):
        holder = socket.socket()
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        port = holder.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
                return holder, port
            except OSError:
                holder.close()
    pytest.skip("no two neighbouring free ports")


def test_a_port_taken_when_the_server_binds_it_is_retried_on_the_next(tmp_path, monkeypatch):
    holder, taken = _taken_port_with_free_neighbour()
    with holder:
        monkeypatch.setenv("QUANTGATE_PORTS", f"{taken}-{taken + 1}")
        proc = server(tmp_path, [], script=fake_server(tmp_path))
        with proc:  # the fake server's own bind fails on `taken` ("Address already in use"), then succeeds
            assert proc.port == taken + 1 and proc.base_url == f"http://127.0.0.1:{taken + 1}"
            proc.check()
    log = (tmp_path / "logs" / "server.log").read_text()
    assert "Address already in use" in log and f"port {taken} was taken when the server bound it" in log


def test_every_port_taken_fails_in_one_line(tmp_path, monkeypatch):
    holder, taken = _taken_port_with_free_neighbour()
    with holder:
        monkeypatch.setenv("QUANTGATE_PORTS", f"{taken}-{taken}")
        proc = server(tmp_path, [], script=fake_server(tmp_path))
        with pytest.raises(ServerFailed) as info:
            proc.start()
    assert str(info.value) == f"every port tried was taken ({taken}); log {tmp_path / 'logs' / 'server.log'}"
    assert proc.proc.poll() is not None


def test_a_server_failing_for_another_reason_is_not_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTGATE_PORTS", "40000-40004")
    proc = server(tmp_path, [sys.executable, "-c", "import sys; print('ValueError: bad model', flush=True); sys.exit(1)"])
    with pytest.raises(ServerFailed, match="exited with code 1 before it was ready: ValueError: bad model"):
        proc.start()
    assert proc.port == 40000  # the first port only
