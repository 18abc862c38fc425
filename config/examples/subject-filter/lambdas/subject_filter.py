"""Stop the rule set when the subject mentions a discount."""


def handler(event, context):
    subject = event["Records"][0]["ses"]["mail"]["commonHeaders"].get("subject", "")
    if "discount" in subject.lower():
        print(f"dropping: {subject}")
        return {"disposition": "stop_rule_set"}
    return {"disposition": "continue"}
