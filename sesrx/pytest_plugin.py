"""pytest fixtures for test suites that send mail to sesrx.

Installed with sesrx and loaded by pytest on its own (the ``pytest11``
entry point). ``sesrx_server`` runs a server in the test process on free
loopback ports, with the configuration that ``sesrx_config`` returns;
override ``sesrx_config`` in a test module or a conftest.py::

    @pytest.fixture
    def sesrx_config():
        return "sesrx.yaml"          # beside the test module; or a dict

    def test_signup_mail(sesrx_server):
        sesrx_server.send(message, to="signup@example.com")
        (received,) = sesrx_server.wait_for("signup@example.com")
        assert received.event()["Records"][0]["ses"]["receipt"]["action"]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sesrx.testing import Sesrx

__all__ = ["sesrx_config", "sesrx_server"]


@pytest.fixture
def sesrx_config() -> Any:
    """Return the configuration ``sesrx_server`` runs.

    A path (relative to the test module's folder), a dict with what the
    YAML file would hold, or None for the embedded default: every domain
    accepted, every message stored in the bucket ``inbound``.
    """
    return None


@pytest.fixture
def sesrx_server(
    sesrx_config: Any,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Sesrx]:
    """Run sesrx for one test; its data folder is a fresh temporary folder."""
    # Imported here, so that pytest starts as fast without sesrx in use.
    from sesrx.testing import Sesrx

    server = Sesrx(
        sesrx_config,
        data_dir=tmp_path_factory.mktemp("sesrx-data"),
        base_dir=request.path.parent,
    )
    server.start()
    yield server
    server.stop()
