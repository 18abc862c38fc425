"""Shared fixtures: configs written to disk, servers on free ports, corpus."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sesrx.config import Config
from sesrx.loader import load_config
from sesrx.threaded import ServerThread

from helpers import RECORDING_HANDLERS

pytest_plugins = ["pytester"]

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
EXAMPLES = Path(__file__).resolve().parent.parent / "config" / "examples"


@pytest.fixture
def corpus() -> Path:
    """Return the shared test corpus, or skip where it is not beside the clone."""
    if not CORPUS.is_dir():
        pytest.skip(f"no shared corpus at {CORPUS} (only the team's checkout has it)")
    return CORPUS


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Return a factory that writes a YAML config (and test handlers) to disk."""

    def write(document: dict[str, Any], handlers: bool = True) -> Path:
        document = {"data_dir": "./data", **document}
        settings = document.setdefault("server", {})
        settings.setdefault("port", 0)
        settings.setdefault("api", {"port": 0})
        if handlers:
            (tmp_path / "handlers.py").write_text(RECORDING_HANDLERS)
        path = tmp_path / "sesrx.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    return write


@pytest.fixture
def serve() -> Iterator[Callable[..., ServerThread]]:
    """Return a factory that starts servers on free ports; stops them after."""
    running: list[ServerThread] = []

    def start(config: Config | Path, **server: Any) -> ServerThread:
        if isinstance(config, Path):
            config = load_config(config)
        api = config.server.api and dataclasses.replace(config.server.api, port=0)
        server = {"port": 0, "api": api, **server}
        settings = dataclasses.replace(config.server, **server)
        thread = ServerThread(dataclasses.replace(config, server=settings))
        thread.start()
        running.append(thread)
        return thread

    yield start
    for thread in running:
        thread.stop()
