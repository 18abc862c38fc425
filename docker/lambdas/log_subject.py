"""Print each message's subject and let the rule set go on.

An example handler for compose.yaml: this folder is mounted at /lambdas,
which is on the image's PYTHONPATH, so a configuration names it as
``log_subject:handler``.
"""


def handler(event, context):
    mail = event["Records"][0]["ses"]["mail"]
    subject = mail["commonHeaders"].get("subject", "(no subject)")
    print(f"{mail['messageId']}: {subject}")
    return {"disposition": "CONTINUE"}
