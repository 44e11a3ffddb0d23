"""Where each heavy tool's environment lives and how to run a worker module inside it.

llama.cpp, vLLM, llm-compressor and transformers pin conflicting versions, so each has its own
virtual environment (made by the Makefile); the orchestrator never imports them, it runs
`python -m pipeline.workers.X` with that environment's interpreter and exchanges typed messages
(`pipeline/workers/messages.py`) as JSON files.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import secrecy
from pipeline.settings import REPO_ROOT, Settings
from pipeline.workers import handoff

# The transformers environment materialises model sources and computes reference logprobs
# (engine parity); the others are named by the specs of the backends that run in them.
TRANSFORMERS = "transformers"


class ToolEnvMissing(Exception):
    """A tool environment has not been set up (a user error: run `make setup`)."""


class ToolFailed(Exception):
    """A tool (a worker, a server) failed. Said in one line: what failed, the last error its log
    shows, and where the log is; the traceback stays in the log."""

    def __init__(self, what: str, log_path: Path | None = None, cause: str | None = None):
        self.what = what
        self.log_path = log_path
        self.cause = cause if cause is not None else (last_error(log_path) if log_path else None)
        super().__init__(what)

    def __str__(self) -> str:
        return self.what + (f": {self.cause}" if self.cause else "") + (f"; log {self.log_path}" if self.log_path else "")

    def relocate(self, old: Path, new: Path) -> None:
        """The log's folder moved (a failed build kept under failed/): point at where it is now."""
        if self.log_path is not None and self.log_path.is_relative_to(old):
            self.log_path = new / self.log_path.relative_to(old)


ERROR_LINE = re.compile(r"^(\w+\.)*\w*(Error|Exception|Exit|Interrupt|Failed|Timeout)\b.*|.*\b(error|failed|abort)\b.*",
                        re.IGNORECASE)


def last_error(path: Path, lines: int = 200) -> str | None:
    """The last line of a log that reads as an error (a Python exception line, or an error or
    failure a tool printed); None when none does (a process killed from outside leaves its last
    ordinary line, which would only mislead)."""
    try:
        text = [line.strip() for line in path.read_text(errors="replace").splitlines()[-lines:] if line.strip()]
    except OSError:
        return None
    found = next((line for line in reversed(text) if ERROR_LINE.match(line)), None)
    return found[:300] if found else None


@dataclass(frozen=True)
class ToolEnv:
    name: str
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def require(self) -> None:
        if not self.python.is_file():
            raise ToolEnvMissing(
                f"tool environment {self.name!r} is missing at {self.root}: run `make setup`"
            )

    def version(self, distribution: str) -> str | None:
        """The installed version of a Python distribution in this env, read from its dist-info
        folder (nothing is imported); None when it is not installed."""
        wanted = distribution.replace("-", "_").lower()
        for dist_info in sorted(self.root.glob("lib/python*/site-packages/*.dist-info")):
            name, _, version = dist_info.name.removesuffix(".dist-info").partition("-")
            if name.replace("-", "_").lower() == wanted:
                return version
        return None

    def environ(self, extra: dict[str, str] | None = None,
                keep_secrets: frozenset[str] = secrecy.HUB_SECRETS) -> dict[str, str]:
        """The environment a tool runs in: this process's, less every secret but `keep_secrets` (a
        worker may need the hub token for a hub model or dataset; tracking credentials stay here)."""
        env = secrecy.without_secrets(dict(os.environ), keep_secrets)
        env["PYTHONPATH"] = str(REPO_ROOT)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("HF_DATASETS_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("VIRTUAL_ENV", None)
        env.update(extra or {})
        return env

    def run_worker(
        self,
        module: str,
        request: Any,
        workdir: Path,
        log_name: str,
        extra_env: dict[str, str] | None = None,
        *,
        timeout_s: float,
    ) -> Any:
        """Run `python -m module --request R --result O` in this env; return its result, an instance
        of `type(request).result`, checked field by field.

        The worker's stdout and stderr go to `workdir/log_name`. Every call is bounded: past
        `timeout_s` (times the host's QUANTGATE_TIMEOUT_SCALE) it is stopped with its children.
        """
        timeout_s *= Settings().timeout_scale
        self.require()
        workdir.mkdir(parents=True, exist_ok=True)
        request_path = workdir / f"{log_name}.request.json"
        result_path = workdir / f"{log_name}.result.json"
        log_path = workdir / log_name
        handoff.write(request_path, request)
        with open(log_path, "ab") as log:
            # Its own process group: a worker's children (GuideLLM's, lm-eval's) stop with it.
            proc = subprocess.Popen(
                [str(self.python), "-m", module, "--request", str(request_path), "--result", str(result_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environ(extra_env),
                cwd=workdir,
                start_new_session=True,
            )
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise ToolFailed(f"{module} ran past its {timeout_s:.0f} s limit and was stopped with its children",
                                 log_path, cause="") from None
            except BaseException:  # interrupted: leave nothing running
                _kill_group(proc)
                raise
        request_path.unlink(missing_ok=True)
        if proc.returncode != 0 or not result_path.is_file():
            raise ToolFailed(f"{module} failed (exit {proc.returncode})", log_path)
        result = handoff.read(result_path, type(request).result)
        result_path.unlink()
        return result


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def tool_env(name: str, envs_root: Path) -> ToolEnv:
    return ToolEnv(name, envs_root / name)


def llamacpp_binary(env: ToolEnv, name: str) -> Path:
    """A llama.cpp program (llama-server, llama-quantize) built by scripts/setup_llamacpp.sh."""
    path = env.root / "build" / "bin" / name
    if not path.is_file():
        raise ToolEnvMissing(f"{name} is missing at {path}: run `make setup`")
    return path



def llama_cpp_src(env: ToolEnv) -> Path:
    """The llama.cpp tree vendored in the llama-cpp-python sdist that setup extracted."""
    found = sorted((env.root / "src").glob("llama_cpp_python-*/vendor/llama.cpp"))
    if not found:
        raise ToolEnvMissing(f"llama.cpp sources missing under {env.root / 'src'}: run `make setup`")
    return found[-1]


def llamacpp_version(env: ToolEnv) -> str:
    """The llama-cpp-python release whose vendored llama.cpp was built (programs and libraries)."""
    return llama_cpp_src(env).parent.parent.name.split("-")[-1]
