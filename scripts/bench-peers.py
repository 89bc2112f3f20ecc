"""The worker's peers in scripts/bench, on the same simulator pages (run by worker-bench):

  msgraph  Microsoft's msgraph-sdk: fetch and parse the delta pages of one folder (no storing).
  plain    plain Python doing the worker's whole job: httpx + json for the pages, zstandard
           level 1 for the bodies (our codec), boto3 BatchWriteItem of the items.

Prints one JSON line: messages handled and the process's user+system CPU seconds."""

import asyncio
import json
import resource
import sys

SELECT = ("id,internetMessageId,conversationId,subject,from,sender,toRecipients,ccRecipients,"
          "bccRecipients,replyTo,receivedDateTime,sentDateTime,lastModifiedDateTime,changeKey,"
          "bodyPreview,hasAttachments,categories,webLink,parentFolderId,isRead,isDraft,"
          "importance,flag,body")


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def first_url(a):
    return (f"{a['graph_url']}/users/{a['user_id']}/mailFolders/{a['folder']}/messages/delta"
            f"?$select={SELECT}")


async def with_msgraph_sdk(a):
    from kiota_abstractions.authentication import (AccessTokenProvider, AllowedHostsValidator,
                                                   BaseBearerTokenAuthenticationProvider)
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import \
        DeltaRequestBuilder

    class StaticToken(AccessTokenProvider):
        async def get_authorization_token(self, uri, additional_authentication_context=None):
            return a["token"]

        def get_allowed_hosts_validator(self):
            return AllowedHostsValidator([])

    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(StaticToken()))
    adapter.base_url = a["graph_url"]
    client = GraphServiceClient(request_adapter=adapter)
    delta = client.users.by_user_id(a["user_id"]).mail_folders.by_mail_folder_id(a["folder"]).messages.delta
    query = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=SELECT.split(","))
    config = RequestConfiguration(query_parameters=query)
    config.headers.add("Prefer", f"odata.maxpagesize={a['page_size']}")
    config.headers.add("Prefer", 'IdType="ImmutableId"')
    follow = RequestConfiguration()
    follow.headers.add("Prefer", f"odata.maxpagesize={a['page_size']}")
    follow.headers.add("Prefer", 'IdType="ImmutableId"')
    handled = 0
    page = await delta.get(request_configuration=config)
    while True:
        handled += len(page.value or [])
        if handled >= a["messages"] or not page.odata_next_link:
            return handled
        page = await delta.with_url(page.odata_next_link).get(request_configuration=follow)


def plain(a):
    import boto3
    import httpx
    import zstandard

    headers = {"Authorization": f"Bearer {a['token']}",
               "Prefer": f"odata.maxpagesize={a['page_size']}, IdType=\"ImmutableId\""}
    dynamo = boto3.client("dynamodb", endpoint_url=a["dynamodb"], region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
    compressor = zstandard.ZstdCompressor(level=1)
    pk = f"peer#{a['user_id']}"
    handled = 0

    def person(r):
        e = (r or {}).get("emailAddress") or {}
        return {"M": {"name": {"S": e.get("name") or ""}, "address": {"S": e.get("address") or ""}}}

    with httpx.Client(timeout=60) as http:
        url = first_url(a)
        while url and handled < a["messages"]:
            page = json.loads(http.get(url, headers=headers).content)
            items = []
            for m in page.get("value", []):
                if "@removed" in m:
                    continue
                body = (m.get("body") or {}).get("content") or ""
                item = {
                    "pk": {"S": pk}, "sk": {"S": m["id"]},
                    "subject": {"S": m.get("subject") or ""},
                    "preview": {"S": m.get("bodyPreview") or ""},
                    "from": person(m.get("from")),
                    "to": {"L": [person(r) for r in m.get("toRecipients") or []]},
                    "cc": {"L": [person(r) for r in m.get("ccRecipients") or []]},
                    "received": {"S": m.get("receivedDateTime") or ""},
                    "change_key": {"S": m.get("changeKey") or ""},
                    "body_zst": {"B": compressor.compress(body.encode())},
                }
                items.append({"PutRequest": {"Item": item}})
            for i in range(0, len(items), 25):
                pending = {a["table"]: items[i:i + 25]}
                while pending:
                    pending = dynamo.batch_write_item(RequestItems=pending).get("UnprocessedItems")
            handled += len(items)
            url = page.get("@odata.nextLink")
    return handled


def main():
    mode, a = sys.argv[1], json.loads(sys.argv[2])
    # Imports are not the job: loaded before the clock starts.
    if mode == "msgraph":
        import msgraph  # noqa: F401
        import msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder  # noqa: F401
    else:
        import boto3  # noqa: F401
        import httpx  # noqa: F401
        import zstandard  # noqa: F401
    before = cpu_seconds()
    handled = asyncio.run(with_msgraph_sdk(a)) if mode == "msgraph" else plain(a)
    print(json.dumps({"messages": handled, "cpu_seconds": cpu_seconds() - before}))


main()
