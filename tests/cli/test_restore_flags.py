"""`zeebe-sim restore`'s flags: backup ids or a time window, never both; bad input is one line
and exit code 2, before any store is opened (A.8: `--backupId` with `--from`/`--to` is an
error)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from zeebe_sim.cli import main as cli_main


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--backup-id", "3", "--to", "2026-11-29T20:00:00Z"],
            {},
            "--backup-id cannot be combined with --from/--to",
        ),
        (
            ["--backup-id", "3,4"],
            {"ZEEBE_RESTORE_FROM_TIMESTAMP": "2026-11-29T20:00:00Z"},
            "--backup-id cannot be combined with --from/--to",
        ),
        ([], {}, "restore needs --backup-id ID[,ID...] or --to TIME"),
        (["--from", "2026-11-29T20:00:00Z"], {}, "restore needs --backup-id"),
        (["--to", "yesterday"], {}, "--to: expected an ISO-8601 time"),
        (["--backup-id", "3,x"], {}, "--backup-id: "),
        (["--backup-id", "3,,4"], {}, "--backup-id: "),
    ],
)
def test_bad_restore_flags_are_one_line_and_exit_2(
    args: list[str], env: dict[str, str], message: str
) -> None:
    """Each bad combination or value is refused with one line naming the problem, exit 2."""
    result = CliRunner().invoke(cli_main, ["restore", *args], env=env)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
