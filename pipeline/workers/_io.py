"""Request/result plumbing shared by the workers (standard library only)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable


def serve_request(handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Parse --request/--result, call the handler, write its result atomically."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--request", required=True, type=Path)
    parser.add_argument("--result", required=True, type=Path)
    args = parser.parse_args()
    request = json.loads(args.request.read_text())
    result = handler(request)
    tmp = args.result.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
    os.replace(tmp, args.result)
