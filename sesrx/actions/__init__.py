"""Receipt rule actions: one module each, looked up by config type.

Every action is an ``async`` function taking its config object and an
:class:`ActionContext` and returning an :class:`ActionResult`; stopping is a
disposition in the result, never an exception. Only a failed write raises
(:class:`~sesrx.errors.StorageError`), because the sender must then retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sesrx.actions.add_header import run_add_header
from sesrx.actions.base import ActionContext, ActionResult, Services
from sesrx.actions.bounce import run_bounce
from sesrx.actions.lambda_ import run_lambda
from sesrx.actions.not_emulated import run_not_emulated
from sesrx.actions.s3 import run_s3
from sesrx.actions.sns import run_sns
from sesrx.actions.stop import run_stop
from sesrx.config import (
    Action,
    AddHeaderAction,
    BounceAction,
    ConnectAction,
    LambdaAction,
    S3Action,
    SnsAction,
    StopAction,
    WorkmailAction,
)

__all__ = ["ActionContext", "ActionResult", "Services", "action_type", "run_action"]

Runner = Callable[[Any, ActionContext], Awaitable[ActionResult]]

_RUNNERS: dict[type, tuple[str, Runner]] = {
    S3Action: ("S3", run_s3),
    LambdaAction: ("Lambda", run_lambda),
    BounceAction: ("Bounce", run_bounce),
    AddHeaderAction: ("AddHeader", run_add_header),
    StopAction: ("Stop", run_stop),
    SnsAction: ("SNS", run_sns),
    WorkmailAction: ("WorkMail", run_not_emulated),
    ConnectAction: ("Connect", run_not_emulated),
}


def action_type(action: Action) -> str:
    """Return the action's type as SES names it in ``receipt.action.type``."""
    return _RUNNERS[type(action)][0]


async def run_action(action: Action, context: ActionContext) -> ActionResult:
    """Run one action."""
    _, runner = _RUNNERS[type(action)]
    return await runner(action, context)
