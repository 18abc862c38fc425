"""Write the whole SES event to the function's log."""

import json


def handler(event, context):
    print(json.dumps(event))
