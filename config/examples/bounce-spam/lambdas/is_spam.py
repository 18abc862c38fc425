"""Let the bounce that follows run for spam; skip it for clean mail."""

VERDICTS = ("spfVerdict", "dkimVerdict", "spamVerdict", "virusVerdict")


def handler(event, context):
    receipt = event["Records"][0]["ses"]["receipt"]
    if any(receipt[name]["status"] == "FAIL" for name in VERDICTS):
        return {"disposition": "CONTINUE"}
    return {"disposition": "STOP_RULE"}
