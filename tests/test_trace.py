"""The trace: its JSON form and its one-line summary."""

from __future__ import annotations

from dataclasses import asdict

from sesrx.trace import ActionTrace, MessageTrace, RuleTrace


def make_trace() -> MessageTrace:
    trace = MessageTrace("id", "2026-01-01T00:00:00.000+00:00", {"mail_from": "a@b"})
    trace.rules += [
        RuleTrace(
            "r",
            "matched",
            ["x@y"],
            [
                ActionTrace("S3", detail={"k": 1}),
                ActionTrace("Lambda", disposition="STOP_RULE"),
                ActionTrace("S3", outcome="not reached", disposition=None),
            ],
        ),
        RuleTrace("s", "skipped", [], [ActionTrace("Stop", outcome="not run")]),
    ]
    return trace


def test_trace_dict_has_every_field():
    """The hand-built trace dictionary keeps every field of the dataclasses."""
    trace = make_trace()

    assert trace.as_dict() == asdict(trace)


def test_summary_lists_rules_that_ran_with_their_actions():
    """Only matched rules appear, each with the actions that ran."""
    assert make_trace().summary() == "r(S3:ok,Lambda:ok->STOP_RULE)"
