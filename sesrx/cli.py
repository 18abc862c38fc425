"""The ``sesrx`` command.

Exit codes: 0 success, 1 failure to start (such as a port in use),
2 a configuration that cannot be used or a wrong command line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

import yaml

from sesrx import __version__
from sesrx.aws_import import ip_filters_from_aws, read_json, rule_set_from_aws
from sesrx.config import ApiConfig, Config
from sesrx.errors import ConfigError, SesrxError
from sesrx.health import api_address, probe, url_host
from sesrx.listen import bind
from sesrx.loader import MAX_WORKERS, load_config, load_default_config
from sesrx.log_setup import configure_logging
from sesrx.server import Server, host_port
from sesrx.storage import DataDir
from sesrx.summary import buckets_line, describe, warnings
from sesrx.threads import idle_threads
from sesrx.tls import server_context
from sesrx.workers import Shared, Worker, fork_workers

__all__ = ["main"]

log = logging.getLogger("sesrx")

EXIT_OK, EXIT_START, EXIT_CONFIG = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return _check_config(args)
        if args.command == "import-aws":
            return _import_aws(args)
        if args.command == "healthcheck":
            return _healthcheck(args)
        return _serve(args)
    except ConfigError as exc:
        print(f"sesrx: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BrokenPipeError:
        # The reader (``| head``) left; say nothing more (Python docs, signal).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sesrx",
        description="A local SMTP server that runs an Amazon SES receipt rule set.",
    )
    parser.add_argument("--version", action="version", version=f"sesrx {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the SMTP server until stopped")
    serve.add_argument(
        "--config",
        type=Path,
        default=_from_environment(),
        help="YAML configuration file (default: $SESRX_CONFIG, else the embedded one)",
    )
    serve.add_argument("--host", help="address to listen on")
    serve.add_argument("--port", type=int, help="port to listen on")
    serve.add_argument("--api-port", type=int, help="port of the HTTP API and page")
    serve.add_argument("--data-dir", type=Path, help="folder for objects and logs")
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text for people (default), json for one object per line",
    )
    serve.add_argument(
        "--workers", type=int, help="processes sharing the SMTP port (default 1)"
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="log debug lines")

    health = commands.add_parser(
        "healthcheck", help="exit 0 if a running server is ready, else 1"
    )
    health.add_argument(
        "--config",
        type=Path,
        default=_from_environment(),
        help="the server's configuration, for its API address "
        "(default: $SESRX_CONFIG, else 127.0.0.1:8025)",
    )
    health.add_argument("--api-port", type=int, help="port of the HTTP API")
    health.add_argument(
        "--timeout", type=_seconds, default=3.0, help="seconds to wait for an answer"
    )

    check = commands.add_parser("check-config", help="validate a configuration")
    check.add_argument("path", type=Path, help="YAML configuration file")

    convert = commands.add_parser(
        "import-aws", help="print the YAML for a rule set the AWS CLI printed"
    )
    convert.add_argument(
        "path", type=Path, help="output of aws ses describe-active-receipt-rule-set"
    )
    convert.add_argument(
        "--ip-filters", type=Path, help="output of aws ses list-receipt-filters"
    )
    return parser


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.path)
    print(describe(config))
    for warning in warnings(config):
        print(f"warning: {warning}")
    return EXIT_OK


def _import_aws(args: argparse.Namespace) -> int:
    document: dict[str, Any] = {
        "rule_set": rule_set_from_aws(read_json(args.path), args.path)
    }
    if args.ip_filters:
        document["ip_filters"] = ip_filters_from_aws(
            read_json(args.ip_filters), args.ip_filters
        )
    print("# Converted from the AWS CLI's output; Lambda functions named by ARN")
    print("# need an entry under functions: (name -> module:attribute).")
    print(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), end="")
    return EXIT_OK


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= 3600:  # also false for nan
        raise argparse.ArgumentTypeError(f"expected 0 to 3600 seconds, got {text!r}")
    return seconds


def _from_environment() -> Path | None:
    value = os.environ.get("SESRX_CONFIG")
    return Path(value) if value else None


def _healthcheck(args: argparse.Namespace) -> int:
    # Exit 0 or 1 only: Docker reserves 2, and a bad edit the running server
    # refused says nothing about its health.
    address = api_address(args.config)
    if address is None and args.api_port is None:
        print("sesrx: the configuration turns the HTTP API off", file=sys.stderr)
        return EXIT_START
    host, port = address or ("127.0.0.1", 0)
    if args.api_port is not None:
        port = args.api_port
    ready, answer = probe(host, port, args.timeout)
    print(answer, file=sys.stdout if ready else sys.stderr)
    return EXIT_OK if ready else EXIT_START


def _serve(args: argparse.Namespace) -> int:
    configure_logging(args.verbose, args.log_format)
    config = _with_overrides(
        load_config(args.config) if args.config else load_default_config(), args
    )
    shared = None
    code = EXIT_OK
    try:
        if config.server.workers > 1:
            shared = _share(config)
        asyncio.run(_run(config, shared))
    except SesrxError as exc:
        log.error("cannot start: %s", exc)
        code = EXIT_START
    except KeyboardInterrupt:
        # Ctrl+C before the signal handlers were in place: the primary
        # says so once, for every process of the group.
        if shared is None or not isinstance(shared.role, Worker):
            raise
        code = EXIT_START
    except BaseException:
        if shared is None or not isinstance(shared.role, Worker):
            raise
        log.exception("worker failed")
        code = EXIT_START
    if shared is not None and isinstance(shared.role, Worker):
        # A forked worker must not run the exit handlers it copied.
        _leave(code)
    _exit_if_held()
    return code


def _share(config: Config) -> Shared:
    """Bind the listening sockets and fork the workers that share them."""
    server = config.server
    sockets = bind(server.host, server.port)
    tls = server.tls
    tls_sockets = bind(server.host, tls.port) if tls and tls.port is not None else []
    context = server_context(tls, server.hostname) if tls else None
    # Before the fork: no process may clear temporary files another writes.
    DataDir(config.data_dir).prepare()
    return Shared(sockets, tls_sockets, context, fork_workers(server.workers))


def _exit_if_held() -> None:
    """End the process now if handlers left behind what Python waits for.

    At exit Python joins non-daemon threads and thread-pool workers, and
    multiprocessing joins child processes: any of these started by a handler
    would keep sesrx alive past its grace period. Otherwise exit normally,
    so that profilers and coverage can write their data.
    """
    # Threads of sesrx's that wait for work hold nothing up.
    waiting = idle_threads()
    threads = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and t not in waiting
    ]
    children = multiprocessing.active_children()
    if not threads and not children:
        return
    log.warning(
        "exiting with %d threads and %d child processes of handlers still running",
        len(threads),
        len(children),
    )
    _leave(EXIT_OK)


def _leave(code: int) -> NoReturn:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _with_overrides(config: Config, args: argparse.Namespace) -> Config:
    server = config.server
    if args.host is not None:
        server = dataclasses.replace(server, host=args.host)
    if args.port is not None:
        _check_port("--port", args.port)
        server = dataclasses.replace(server, port=args.port)
    if args.api_port is not None:
        _check_port("--api-port", args.api_port)
        api = server.api or ApiConfig()
        server = dataclasses.replace(
            server, api=dataclasses.replace(api, port=args.api_port)
        )
    if args.workers is not None:
        if not 1 <= args.workers <= MAX_WORKERS:
            raise ConfigError(
                "--workers", "", f"expected 1 to {MAX_WORKERS}, got {args.workers}"
            )
        server = dataclasses.replace(server, workers=args.workers)
    data_dir = args.data_dir.resolve() if args.data_dir else config.data_dir
    return dataclasses.replace(config, server=server, data_dir=data_dir)


def _check_port(flag: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(flag, "", f"expected 0 to 65535, got {port}")


async def _run(config: Config, shared: Shared | None) -> None:
    # From here a signal asks for a clean stop, once start-up is done. First
    # of all: until then asyncio's own SIGINT handler cancels this task, and
    # a cancellation lost somewhere in start-up left a server running with
    # its Ctrl+C ignored (seen once in a hundred tries with two processes).
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    server = Server(config, shared)
    if server.worker is not None:
        server.worker.on_stop = stopping.set
    await server.start()
    # What start-up made lives as long as the process: out of the collector's
    # sight, a full collection takes well under a millisecond instead of tens
    # (a pause every session would feel).
    gc.freeze()
    if server.worker is None:
        _log_start(server)
    else:
        log.debug("worker %d serving, pid %d", server.worker.number, os.getpid())

    await stopping.wait()

    if server.worker is not None:
        server.worker.leaving()
        await server.stop()
        return
    log.info("shutting down (grace period %g s)", config.server.grace_period)
    await server.stop()
    log.info("stopped")


def _processes(server: Server) -> str:
    """Say how many processes serve, and their ids, the first one's first."""
    if server.primary is None:
        return f"1 (pid {os.getpid()})"
    pids = [os.getpid(), *(child.pid for child in server.primary.children)]
    return f"{len(pids)} (pids {', '.join(map(str, pids))}; the first runs the API)"


def _implicit_tls(server: Server) -> str:
    if server.tls_port is None:
        return ""
    where = host_port(server.config.server.host, server.tls_port)
    return f", TLS from the first byte on {where}"


def _log_start(server: Server) -> None:
    config = server.config
    api = "off"
    if config.server.api is not None:
        api = f"http://{url_host(config.server.api.host)}:{server.api_port}/"
    log.info(
        "sesrx %s listening on %s%s\n"
        "  web page:  %s\n"
        "  config:    %s\n"
        "  rule set:  %s (%d rule%s)\n"
        "  data:      %s\n"
        "  buckets:   %s\n"
        "  processes: %s\n"
        "  press Ctrl+C to stop",
        __version__,
        server.address,
        _implicit_tls(server),
        api,
        config.source_name,
        config.rule_set.name,
        len(config.rule_set.rules),
        "" if len(config.rule_set.rules) == 1 else "s",
        config.data_dir.resolve(),
        buckets_line(config),
        _processes(server),
        extra={"multiline": True},
    )
    for warning in warnings(config):
        log.warning("%s", warning)
