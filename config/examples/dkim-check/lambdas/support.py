"""Open a support ticket for the message (here: print its subject)."""


def handler(event, context):
    mail = event["Records"][0]["ses"]["mail"]
    subject = mail["commonHeaders"].get("subject", "(no subject)")
    print(f"ticket for {mail['messageId']}: {subject}")
