"""Log who the message was for."""


def handler(event, context):
    record = event["Records"][0]["ses"]
    recipients = ", ".join(record["receipt"]["recipients"])
    print(f"message {record['mail']['messageId']} for {recipients}")
