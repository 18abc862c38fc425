"""What every action receives and returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sesrx.buckets import BucketStore
from sesrx.config import Config, ReceiptRule
from sesrx.disposition import Disposition
from sesrx.inbound import Delivery
from sesrx.lambdas import LambdaRuntime
from sesrx.sns import Publisher
from sesrx.storage import DataDir
from sesrx.trace import ActionTrace

__all__ = ["ActionContext", "ActionResult", "Services"]


@dataclass(frozen=True, slots=True)
class Services:
    """The server's parts that actions use."""

    config: Config
    data_dir: DataDir
    lambdas: LambdaRuntime
    save_trace: Callable[[Delivery], Awaitable[None]]
    sns: Publisher
    buckets: BucketStore


@dataclass(frozen=True, slots=True)
class ActionContext:
    """One action's view: the message, its rule, the rule's recipients."""

    delivery: Delivery
    rule: ReceiptRule
    recipients: tuple[str, ...]
    services: Services
    trace: ActionTrace


@dataclass(frozen=True, slots=True)
class ActionResult:
    """How an action ended and what the runner should do next."""

    disposition: Disposition = Disposition.CONTINUE
    outcome: str = "ok"
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
