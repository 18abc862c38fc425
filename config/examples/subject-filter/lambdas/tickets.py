"""Open a ticket for support mail; archive everything else."""


def handler(event, context):
    mail = event["Records"][0]["ses"]["mail"]
    print(f"ticket: {mail['commonHeaders'].get('subject', '')}")


async def archive(event, context):
    mail = event["Records"][0]["ses"]["mail"]
    print(f"archived {mail['messageId']}")
