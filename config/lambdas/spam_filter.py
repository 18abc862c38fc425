"""Stop the rule set for mail that any verdict marks as FAIL.

The SES Developer Guide's "drop spam" function, in Python: deploy the same
file as a Lambda function behind a RequestResponse Lambda action.
"""

VERDICTS = ("spfVerdict", "dkimVerdict", "spamVerdict", "virusVerdict")


def handler(event, context):
    receipt = event["Records"][0]["ses"]["receipt"]
    if any(receipt[name]["status"] == "FAIL" for name in VERDICTS):
        return {"disposition": "STOP_RULE_SET"}
    return None
