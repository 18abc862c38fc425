"""What an action tells the rule runner to do next."""

from __future__ import annotations

import enum
import reprlib
from typing import Any

__all__ = ["Disposition", "disposition_of", "unknown_disposition"]


class Disposition(enum.Enum):
    """The values a ``RequestResponse`` Lambda function may return."""

    CONTINUE = "CONTINUE"
    STOP_RULE = "STOP_RULE"
    STOP_RULE_SET = "STOP_RULE_SET"


def disposition_of(result: Any) -> Disposition:
    """Read ``{"disposition": ...}`` from a handler's return value.

    AWS's own example returns ``stop_rule_set`` in lower case, so the value
    is read in any letter case; anything else means CONTINUE (SES Developer
    Guide, "Invoke Lambda function action").
    """
    value = result.get("disposition") if isinstance(result, dict) else None
    name = value.strip().upper() if isinstance(value, str) else ""
    return Disposition.__members__.get(name, Disposition.CONTINUE)


# A value shown in the log and the trace: a handler may return a huge one.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 120


def unknown_disposition(result: Any) -> str | None:
    """Return a ``disposition`` value that is given but means nothing to SES."""
    if not isinstance(result, dict) or "disposition" not in result:
        return None
    value = result["disposition"]
    known = isinstance(value, str) and value.strip().upper() in Disposition.__members__
    return None if known else _SHORT.repr(value)
