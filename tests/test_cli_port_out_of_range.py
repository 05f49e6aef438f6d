"""`roomfit serve --port` and `roomfit up --port` take only a TCP port (0-65535), as
ROOMFIT_PORT does. Before, `serve --port 70000` started uvicorn, which logged "running on :70000"
while the kernel bound 70000 mod 65536 = 4464; `up --port 70000` migrated and made the dev tenant
first (its keys shown once, their origins naming :70000) and then restarted a dying API five times."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from core.settings import Settings


@pytest.fixture
def started(embedded_env: Settings, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """What `serve` and `up` would have started, recorded instead of started."""
    import uvicorn

    import cli.embedded

    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(("uvicorn", kwargs["port"])))
    monkeypatch.setattr(cli.embedded, "run_embedded", lambda _s, host, port: calls.append(("up", port)) or 0)
    return calls


@pytest.mark.parametrize("command", ["serve", "up"])
@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_outside_0_65535_is_refused(command: str, port: str, started: list) -> None:
    from cli.main import app

    result = CliRunner().invoke(app, [command, "--port", port])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "--port" in result.output and started == []


@pytest.mark.parametrize("command", ["serve", "up"])
def test_a_port_in_range_still_starts(command: str, started: list) -> None:
    from cli.main import app

    result = CliRunner().invoke(app, [command, "--port", "8123"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert started == [("uvicorn" if command == "serve" else "up", 8123)]
