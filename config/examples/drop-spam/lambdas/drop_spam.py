"""Stop the rule set when any verdict of the message is FAIL."""

VERDICTS = ("spfVerdict", "dkimVerdict", "spamVerdict", "virusVerdict")


def handler(event, context):
    record = event["Records"][0]["ses"]
    receipt = record["receipt"]
    failed = [name for name in VERDICTS if receipt[name]["status"] == "FAIL"]
    if failed:
        print(f"dropping {record['mail']['messageId']}: {', '.join(failed)}")
        return {"disposition": "STOP_RULE_SET"}
    return None
