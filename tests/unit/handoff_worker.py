"""A worker for the hand-off tests (run as `python -m tests.unit.handoff_worker`): echoes its
request, or breaks the contract on purpose when asked to."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pipeline.workers.handoff import serve


@dataclass(frozen=True, kw_only=True)
class Echoed:
    words: list[str]
    count: int


@dataclass(frozen=True, kw_only=True)
class EchoRequest:
    result: ClassVar[type] = Echoed
    words: list[str]
    misbehave: str = ""  # "": behave; "type": return the wrong class; "field": a count that is not an int;
    # "hang": start a child that writes its pid to the first word (a path), then wait forever


@dataclass(frozen=True, kw_only=True)
class Other:
    text: str


def echo(request: EchoRequest) -> Echoed:
    if request.misbehave == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(request.words[0]).write_text(str(child.pid))
        time.sleep(600)
    if request.misbehave == "type":
        return Other(text="not what was declared")  # type: ignore[return-value]
    if request.misbehave == "field":
        return Echoed(words=request.words, count="three")  # type: ignore[arg-type]
    return Echoed(words=list(reversed(request.words)), count=len(request.words))


if __name__ == "__main__":
    serve(echo)
