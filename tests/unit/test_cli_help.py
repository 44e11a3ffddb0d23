"""The CLI's own help renders: its texts are plain, never read as rich markup."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline import cli

COMMANDS = sorted(command.name or command.callback.__name__ for command in cli.app.registered_commands)


@pytest.mark.parametrize("args", [["--help"]] + [[name, "--help"] for name in COMMANDS], ids=lambda a: " ".join(a))
def test_help_renders(args):
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "Traceback" not in result.output


def test_every_command_is_listed():
    output = CliRunner().invoke(cli.app, ["--help"]).output
    assert COMMANDS and all(name in output for name in COMMANDS)
