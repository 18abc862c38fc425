"""Stop the rule set for mail whose DKIM verdict is FAIL."""


def handler(event, context):
    receipt = event["Records"][0]["ses"]["receipt"]
    if receipt["dkimVerdict"]["status"] == "FAIL":
        return {"disposition": "STOP_RULE_SET"}
    return {"disposition": "CONTINUE"}
