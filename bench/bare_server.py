"""The baseline: a bare aiosmtpd server whose handler only writes each message.

Run by bench.py beside sesrx; prints ``listening on <port>`` once it accepts.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
from pathlib import Path

from aiosmtpd.smtp import SMTP


class WriteEach:
    """Write every message to its own file, as a mail catcher would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.numbers = itertools.count()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        path = self.folder / f"{os.getpid()}-{next(self.numbers)}.eml"
        path.write_bytes(envelope.original_content)
        return "250 OK"


async def serve(port: int, folder: Path) -> None:
    loop = asyncio.get_running_loop()
    handler = WriteEach(folder)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bare", data_size_limit=64 * 1024 * 1024),
        "127.0.0.1",
        port,
    )
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args.port, args.dir))


if __name__ == "__main__":
    main()
