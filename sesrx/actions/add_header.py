"""Add-header action: prepend a header for the actions and rules after it."""

from __future__ import annotations

from sesrx.actions.base import ActionContext, ActionResult
from sesrx.config import AddHeaderAction
from sesrx.message import Header

__all__ = ["run_add_header"]


async def run_add_header(
    action: AddHeaderAction, context: ActionContext
) -> ActionResult:
    """Prepend ``header_name: header_value`` to the message being processed."""
    # SES does not say where the header goes; it goes on top, above SES's
    # own headers, and stays for later rules (reference section 3.5).
    context.delivery.add_header(Header(action.header_name, action.header_value))
    return ActionResult(
        detail={"header": f"{action.header_name}: {action.header_value}"}
    )
