"""The worker's peers in scripts/bench, on the same simulator pages (run by worker-bench):

  msgraph  Microsoft's msgraph-sdk: fetch and parse the delta pages of one folder (no storing).
  plain    plain Python doing the worker's whole job: httpx + json for the pages, zstandard
           level 1 for the bodies (our codec), boto3 BatchWriteItem of the same items the
           worker stores (every captured field, the write's stamps, the person index entries).

Prints one JSON line: messages handled and the process's user+system CPU seconds."""

import asyncio
import json
import resource
import sys

SELECT = ("id,internetMessageId,conversationId,subject,from,sender,toRecipients,ccRecipients,"
          "bccRecipients,replyTo,receivedDateTime,sentDateTime,lastModifiedDateTime,changeKey,"
          "bodyPreview,hasAttachments,categories,webLink,parentFolderId,isRead,isDraft,"
          "importance,flag,body")

# As the worker: at most this many outside people of one message are indexed.
MAX_INDEXED_PEOPLE = 50


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
    import datetime
    import time
    import uuid

    import boto3
    import httpx
    import zstandard

    headers = {"Authorization": f"Bearer {a['token']}",
               "Prefer": f"odata.maxpagesize={a['page_size']}, IdType=\"ImmutableId\""}
    dynamo = boto3.client("dynamodb", endpoint_url=a["dynamodb"], region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
    compressor = zstandard.ZstdCompressor(level=1)
    pk = f"peer#{a['user_id']}"
    internal = "@" + a["internal_domain"]
    run = f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex}"
    writes = 0
    handled = 0

    def text(v):
        return {"S": v} if v else {"NULL": True}

    def flag(v):
        return {"BOOL": v} if isinstance(v, bool) else {"NULL": True}

    def person(r):
        if not r:
            return {"NULL": True}
        e = r.get("emailAddress") or {}
        return {"M": {"name": text(e.get("name")), "address": text(e.get("address"))}}

    def people(rs):
        return {"L": [person(r) for r in rs or []]}

    # The item the worker stores: every captured field, the listing key, the write's stamps,
    # and an index entry per outside participant (erasure by address).
    with httpx.Client(timeout=60) as http:
        url = first_url(a)
        while url and handled < a["messages"]:
            page = json.loads(http.get(url, headers=headers).content)
            items = []
            entries = []
            at = datetime.datetime.now(datetime.timezone.utc)
            now = at.strftime("%Y-%m-%dT%H:%M:%SZ")
            stored_at = at.isoformat().replace("+00:00", "Z")
            writes += 1
            # A batch may not name one key twice: the last copy of an id wins.
            latest = {m["id"]: m for m in page.get("value", []) if "@removed" not in m}
            for m in latest.values():
                body = m.get("body") or {}
                everyone = [m.get("from"), m.get("sender"), *(m.get("toRecipients") or []),
                            *(m.get("ccRecipients") or []), *(m.get("bccRecipients") or []),
                            *(m.get("replyTo") or [])]
                outside = []
                for r in everyone:
                    address = ((r or {}).get("emailAddress") or {}).get("address")
                    if address:
                        address = address.lower()
                        if not address.endswith(internal) and address not in outside:
                            outside.append(address)
                outside = outside[:MAX_INDEXED_PEOPLE]
                received = m.get("receivedDateTime") or m.get("sentDateTime") or now
                item = {
                    "pk": {"S": pk}, "sk": {"S": m["id"]}, "id": {"S": m["id"]},
                    "folder": {"S": "inbox"},
                    "internet_message_id": text(m.get("internetMessageId")),
                    "conversation_id": text(m.get("conversationId")),
                    "subject": text(m.get("subject")),
                    "from": person(m.get("from")),
                    "to": people(m.get("toRecipients")),
                    "cc": people(m.get("ccRecipients")),
                    "bcc": people(m.get("bccRecipients")),
                    "received_at": text(m.get("receivedDateTime")),
                    "sent_at": text(m.get("sentDateTime")),
                    "last_modified_at": text(m.get("lastModifiedDateTime")),
                    "change_key": text(m.get("changeKey")),
                    "preview": text(m.get("bodyPreview")),
                    "has_attachments": {"BOOL": bool(m.get("hasAttachments"))},
                    "categories": {"L": [{"S": c} for c in m.get("categories") or []]},
                    "web_link": text(m.get("webLink")),
                    "sender": person(m.get("sender")),
                    "reply_to": people(m.get("replyTo")),
                    "is_read": flag(m.get("isRead")),
                    "is_draft": flag(m.get("isDraft")),
                    "importance": text(m.get("importance")),
                    "flag_status": text((m.get("flag") or {}).get("flagStatus")),
                    "parent_folder_id": text(m.get("parentFolderId")),
                    "received_key": {"S": f"{received[:19]}Z#{m['id']}"},
                    "state": {"S": "live"},
                    "stored_at": {"S": stored_at},
                    "first_mark": {"S": f"{run}:{writes}"},
                    "recipients_truncated": {"BOOL": False},
                    "body_type": {"S": (body.get("contentType") or "html").lower()},
                    "body_zst": {"B": compressor.compress((body.get("content") or "").encode())},
                    "body_truncated": {"BOOL": False},
                }
                if outside:
                    item["people"] = {"SS": outside}
                for address in outside:
                    entries.append({"PutRequest": {"Item": {
                        "pk": {"S": f"~person#peer#{address}"},
                        "sk": {"S": f"{a['user_id']}#{m['id']}"},
                        "mailbox": {"S": a["user_id"]}, "id": {"S": m["id"]}}}})
                items.append({"PutRequest": {"Item": item}})
                handled += 1
            requests = entries + items
            for i in range(0, len(requests), 25):
                pending = {a["table"]: requests[i:i + 25]}
                while pending:
                    pending = dynamo.batch_write_item(RequestItems=pending).get("UnprocessedItems")
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
