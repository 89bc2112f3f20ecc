//! Captured mail through the API: listed newest first without bodies, filtered, paged; one
//! message with its body, every body read audited; only the owner and the org's admins.

use o365_domain::message::WriteStamp;
use std::sync::Arc;

use ms_sim::SimConfig;
use o365_domain::ids::{Email, OrgId};
use o365_domain::mailbox::MailFolder;
use o365_domain::message::{
    BodyType, CapturedMessage, MessageBody, MessageRemoval, Recipient, RemovalReason,
};
use o365_domain::ports::MessageArchive;
use o365_e2e::api::{ApiHarness, GLOBAL_ADMIN, NoQueue};
use reqwest::StatusCode;
use serde_json::Value;
use time::macros::datetime;

fn message(id: &str, folder: MailFolder, received: time::OffsetDateTime) -> CapturedMessage {
    CapturedMessage {
        internet_message_id: Some(format!("<{id}@contoso.com>")),
        conversation_id: Some("conv-1".into()),
        subject: Some(format!("Subject {id}")),
        from: Some(Recipient {
            name: Some("Alex".into()),
            address: Some("alex@contoso.com".into()),
        }),
        to: vec![Recipient {
            name: None,
            address: Some("adele@contoso.com".into()),
        }],
        received_at: Some(received),
        sent_at: Some(received),
        last_modified_at: Some(received),
        change_key: Some("ck".into()),
        preview: Some("Hello".into()),
        body: Some(MessageBody {
            content_type: BodyType::Html,
            content: format!("<p>Body of {id}</p>"),
        }),
        ..CapturedMessage::new(id, folder)
    }
}

async fn world() -> ApiHarness {
    let h = ApiHarness::start(SimConfig::default(), Arc::new(NoQueue)).await;
    h.org("acme").await;
    h.org("globex").await;
    let org = OrgId::parse("acme").unwrap();
    let adele = Email::parse("adele@contoso.com").unwrap();
    let messages = [
        message("m1", MailFolder::Inbox, datetime!(2026-11-01 09:00 UTC)),
        message("m2", MailFolder::SentItems, datetime!(2026-11-02 09:00 UTC)),
        message("m3", MailFolder::Inbox, datetime!(2026-11-03 09:00 UTC)),
        CapturedMessage {
            details: o365_domain::message::MessageDetails {
                sender: Some(Recipient {
                    name: Some("Assistant".into()),
                    address: Some("assistant@contoso.com".into()),
                }),
                reply_to: vec![],
                is_read: Some(true),
                is_draft: Some(false),
                importance: Some("high".into()),
                flag_status: Some("flagged".into()),
                parent_folder_id: Some("AAMkInbox".into()),
            },
            ..message("m4", MailFolder::Inbox, datetime!(2026-11-04 09:00 UTC))
        },
    ];
    h.fixture
        .store
        .write_page(
            &org,
            &adele,
            &messages,
            &[],
            WriteStamp::from(time::OffsetDateTime::now_utc()),
        )
        .await
        .unwrap();
    // m1 was deleted later.
    let removal = MessageRemoval {
        id: "m1".into(),
        folder: MailFolder::Inbox,
        reason: RemovalReason::Deleted,
    };
    h.fixture
        .store
        .write_page(
            &org,
            &adele,
            &[],
            &[removal],
            WriteStamp::from(time::OffsetDateTime::now_utc()),
        )
        .await
        .unwrap();
    h
}

fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn reads_of(h: &ApiHarness) -> Vec<Value> {
    let r = h
        .as_user("acme", GLOBAL_ADMIN, "GET", "/v1/audit?limit=200", None)
        .await;
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "message_read")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_listed_newest_first_filtered_and_paged_without_bodies() {
    let h = world().await;
    let base = "/v1/users/adele@contoso.com/messages";
    let r = h.as_user("acme", GLOBAL_ADMIN, "GET", base, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        ids(&r.body),
        ["m4", "m3", "m2"],
        "newest first, removed left out"
    );
    let first = &r.body["items"][0];
    assert_eq!(first["subject"], "Subject m4");
    assert_eq!(first["from"]["address"], "alex@contoso.com");
    assert!(first.get("body").is_none(), "no bodies in listings");
    assert_eq!(first["sender"]["address"], "assistant@contoso.com");
    assert_eq!(
        (
            &first["is_read"],
            &first["importance"],
            &first["flag_status"]
        ),
        (
            &serde_json::json!(true),
            &serde_json::json!("high"),
            &serde_json::json!("flagged")
        )
    );
    // Listings carry previews: someone else's listing is audited, the owner's own is not.
    h.as_user("acme", "adele@contoso.com", "GET", base, None)
        .await;
    let audit = h
        .as_user("acme", GLOBAL_ADMIN, "GET", "/v1/audit?limit=200", None)
        .await;
    let listed: Vec<_> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "mail_listed")
        .map(|e| e["actor"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, [GLOBAL_ADMIN]);

    let r = h
        .as_user(
            "acme",
            GLOBAL_ADMIN,
            "GET",
            &format!("{base}?folder=inbox"),
            None,
        )
        .await;
    assert_eq!(ids(&r.body), ["m4", "m3"]);
    let r = h
        .as_user(
            "acme",
            GLOBAL_ADMIN,
            "GET",
            &format!(
                "{base}?received_since=2026-11-02T00:00:00Z&received_until=2026-11-03T09:00:00Z"
            ),
            None,
        )
        .await;
    assert_eq!(ids(&r.body), ["m3", "m2"], "both ends inclusive");
    let r = h
        .as_user(
            "acme",
            GLOBAL_ADMIN,
            "GET",
            &format!("{base}?include_removed=true"),
            None,
        )
        .await;
    assert_eq!(ids(&r.body), ["m4", "m3", "m2", "m1"]);
    assert_eq!(r.body["items"][3]["state"], "removed");

    // Pages follow one another without gaps or repeats.
    let mut seen = Vec::new();
    let mut path = format!("{base}?limit=2");
    loop {
        let r = h.as_user("acme", GLOBAL_ADMIN, "GET", &path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        seen.extend(ids(&r.body));
        match r.body["next"].as_str() {
            Some(next) => path = format!("{base}?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["m4", "m3", "m2"]);

    for bad in [
        "folder=archive",
        "received_since=yesterday",
        "limit=0",
        "received_since=2026-11-05T00:00:00Z&received_until=2026-11-01T00:00:00Z",
    ] {
        let r = h
            .as_user("acme", GLOBAL_ADMIN, "GET", &format!("{base}?{bad}"), None)
            .await;
        assert!(r.status.is_client_error(), "{bad}: {}", r.status);
        assert_eq!(r.headers["content-type"], "application/problem+json");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_is_read_by_the_owner_or_an_admin_only_and_every_read_is_audited() {
    let h = world().await;
    let one = "/v1/users/adele@contoso.com/messages/m3";
    let r = h.as_user("acme", GLOBAL_ADMIN, "GET", one, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["body"]["content"], "<p>Body of m3</p>");
    assert_eq!(r.body["body"]["content_type"], "html");
    assert_eq!(r.body["subject"], "Subject m3");
    let r = h
        .as_user("acme", "adele@contoso.com", "GET", one, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "the owner reads their own mail");
    let reads = reads_of(&h).await;
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert!(reads.iter().any(|e| e["actor"] == GLOBAL_ADMIN));
    assert!(reads.iter().any(|e| e["actor"] == "adele@contoso.com"));
    assert!(
        reads
            .iter()
            .all(|e| e["object"] == "message:adele@contoso.com/m3")
    );

    // Refused: another member's mail, another org's user, a message that is not there.
    h.as_user(
        "acme",
        GLOBAL_ADMIN,
        "POST",
        "/v1/users",
        Some(serde_json::json!({"email": "bob@contoso.com", "display_name": "Bob", "role": "member"})),
    )
    .await;
    let r = h.as_user("acme", "bob@contoso.com", "GET", one, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h.as_user("globex", GLOBAL_ADMIN, "GET", one, None).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "another org's mailbox does not exist for it"
    );
    let r = h
        .as_user(
            "acme",
            GLOBAL_ADMIN,
            "GET",
            "/v1/users/adele@contoso.com/messages/nope",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A removed message has no body to read, and reading it is not a body read.
    let r = h
        .as_user(
            "acme",
            GLOBAL_ADMIN,
            "GET",
            "/v1/users/adele@contoso.com/messages/m1",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["state"], "removed");
    assert!(r.body["body"].is_null());
    assert_eq!(
        reads_of(&h).await.len(),
        2,
        "refused and bodiless reads are not body reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_removes_the_archive_and_the_sync_position_and_is_audited() {
    let h = world().await;
    let org = OrgId::parse("acme").unwrap();
    let adele = Email::parse("adele@contoso.com").unwrap();
    // A sync position, as a worker leaves it.
    o365_domain::ports::MailboxStateStore::save_cursor(
        &h.fixture.store,
        &o365_domain::mailbox::MailboxCursor {
            org: org.clone(),
            mailbox: adele.clone(),
            folder: MailFolder::Inbox,
            link: o365_domain::mailbox::SyncLink::Delta("https://graph/delta?$deltatoken=x".into()),
            saved_at: time::OffsetDateTime::now_utc(),
            resync_started_at: None,
        },
    )
    .await
    .unwrap();
    let purge = "/v1/users/adele@contoso.com/purge";
    // Refused while sync is on: the next run would capture it all again.
    h.as_user(
        "acme",
        GLOBAL_ADMIN,
        "POST",
        "/v1/users/sync",
        Some(
            serde_json::json!({"changes": [{"email": "adele@contoso.com", "sync_enabled": true}]}),
        ),
    )
    .await;
    let r = h.as_user("acme", GLOBAL_ADMIN, "POST", purge, None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(
        h.fixture
            .store
            .all_messages(&org, &adele, o365_domain::page::PageRequest::first(50))
            .await
            .unwrap()
            .items
            .len(),
        4,
        "nothing deleted"
    );
    h.as_user(
        "acme",
        GLOBAL_ADMIN,
        "POST",
        "/v1/users/sync",
        Some(
            serde_json::json!({"changes": [{"email": "adele@contoso.com", "sync_enabled": false}]}),
        ),
    )
    .await;
    // Refused while a run that began before the switch still holds the mailbox.
    let now = time::OffsetDateTime::now_utc();
    assert!(
        o365_domain::ports::MailboxStateStore::acquire_lease(
            &h.fixture.store,
            &org,
            &adele,
            "job-1",
            now + time::Duration::minutes(5),
            now,
        )
        .await
        .unwrap()
    );
    let r = h.as_user("acme", GLOBAL_ADMIN, "POST", purge, None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    o365_domain::ports::MailboxStateStore::release_lease(&h.fixture.store, &org, &adele, "job-1")
        .await
        .unwrap();
    let r = h.as_user("acme", GLOBAL_ADMIN, "POST", purge, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["deleted"], 4, "three live messages and a tombstone");
    assert_eq!(r.body["complete"], true);
    assert!(
        h.fixture
            .store
            .all_messages(&org, &adele, o365_domain::page::PageRequest::first(50))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    for folder in MailFolder::ALL {
        assert!(
            o365_domain::ports::MailboxStateStore::cursor(&h.fixture.store, &org, &adele, folder)
                .await
                .unwrap()
                .is_none(),
            "switched on again, the mailbox starts a fresh backfill"
        );
    }
    // Idempotent, and audited each time.
    let again = h.as_user("acme", GLOBAL_ADMIN, "POST", purge, None).await;
    assert_eq!(again.body["deleted"], 0);
    assert_eq!(again.body["complete"], true);
    let audit = h
        .as_user("acme", GLOBAL_ADMIN, "GET", "/v1/audit?limit=200", None)
        .await;
    let purges = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "mailbox_purged")
        .count();
    assert_eq!(purges, 2);
    // Members cannot purge, not even their own mailbox.
    let r = h
        .as_user("acme", "adele@contoso.com", "POST", purge, None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

/// Every archived item of a mailbox (tombstones too), by id.
async fn archived_ids(h: &ApiHarness, org: &OrgId, mailbox: &Email) -> Vec<String> {
    let mut ids: Vec<String> = h
        .fixture
        .store
        .all_messages(org, mailbox, o365_domain::page::PageRequest::first(50))
        .await
        .unwrap()
        .items
        .iter()
        .map(|m| m.id().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_is_erased_from_every_mailbox_kept_out_and_audited() {
    let h = world().await;
    let org = OrgId::parse("acme").unwrap();
    let (adele, bob) = (
        Email::parse("adele@contoso.com").unwrap(),
        Email::parse("bob@contoso.com").unwrap(),
    );
    // As the sync stamps pages: under the org's policy, which names its own domains.
    let policy = o365_domain::capture_policy::CapturePolicy {
        internal_domains: vec!["contoso.com".into()],
        ..Default::default()
    };
    let with_eve = |id: &str, how: &str| {
        let mut m = message(id, MailFolder::Inbox, datetime!(2026-11-05 09:00 UTC));
        let eve = Recipient {
            name: Some("Eve".into()),
            address: Some("Eve@Evil.example".into()),
        };
        match how {
            "from" => m.from = Some(eve),
            _ => m.cc = vec![eve],
        }
        m
    };
    let stamp = WriteStamp::under(&policy, time::OffsetDateTime::now_utc());
    for (mailbox, page) in [
        (
            &adele,
            vec![
                with_eve("e1", "from"),
                message("n1", MailFolder::Inbox, datetime!(2026-11-06 09:00 UTC)),
            ],
        ),
        (
            &bob,
            vec![
                with_eve("e2", "cc"),
                message("n2", MailFolder::Inbox, datetime!(2026-11-06 09:00 UTC)),
            ],
        ),
    ] {
        h.fixture
            .store
            .write_page(&org, mailbox, &page, &[], stamp.clone())
            .await
            .unwrap();
    }
    // Another org's mail with Eve is not acme's to erase.
    let globex = OrgId::parse("globex").unwrap();
    h.fixture
        .store
        .write_page(&globex, &adele, &[with_eve("g1", "cc")], &[], stamp.clone())
        .await
        .unwrap();

    let erase = |address: &str| serde_json::json!({ "address": address });
    let r = h
        .as_user(
            "acme",
            GLOBAL_ADMIN,
            "POST",
            "/v1/erasures",
            Some(erase("not an address")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    // The org's own people go by purging their mailbox, not by erasure.
    let own = h
        .as_user(
            "acme",
            GLOBAL_ADMIN,
            "POST",
            "/v1/erasures",
            Some(erase("Adele@contoso.com")),
        )
        .await;
    assert_eq!(
        own.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        own.body
    );
    assert_eq!(
        own.body["errors"][0]["code"], "own_person",
        "{:?}",
        own.body
    );
    assert!(
        archived_ids(&h, &org, &adele)
            .await
            .contains(&"e1".to_owned())
    );
    let r = h
        .as_user(
            "acme",
            GLOBAL_ADMIN,
            "POST",
            "/v1/erasures",
            Some(erase("eve@EVIL.example")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["deleted"], 2);
    assert_eq!(
        r.body["mailboxes"],
        serde_json::json!(["adele@contoso.com", "bob@contoso.com"])
    );
    assert_eq!(
        (
            r.body["complete"].as_bool(),
            r.body["excluded_now"].as_bool()
        ),
        (Some(true), Some(true))
    );

    let adele_ids = archived_ids(&h, &org, &adele).await;
    assert!(
        !adele_ids.contains(&"e1".to_owned()) && adele_ids.contains(&"n1".to_owned()),
        "{adele_ids:?}"
    );
    let bob_ids = archived_ids(&h, &org, &bob).await;
    assert_eq!(bob_ids, ["n2"], "exactly Eve's message went");
    assert!(
        h.fixture
            .store
            .message(&globex, &adele, "g1")
            .await
            .unwrap()
            .is_some(),
        "other orgs keep theirs"
    );
    // From now on the sync keeps Eve out; the request is in the audit log.
    let policy = h
        .as_user(
            "acme",
            GLOBAL_ADMIN,
            "GET",
            "/v1/integration/capture-policy",
            None,
        )
        .await;
    assert_eq!(
        policy.body["excluded_addresses"],
        serde_json::json!(["eve@evil.example"])
    );
    let audit = h
        .as_user("acme", GLOBAL_ADMIN, "GET", "/v1/audit?limit=20", None)
        .await;
    assert!(
        audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "person_erased" && e["object"] == "person:eve@evil.example"),
        "{:?}",
        audit.body
    );
    // A repeat confirms nothing is left.
    let again = h
        .as_user(
            "acme",
            GLOBAL_ADMIN,
            "POST",
            "/v1/erasures",
            Some(erase("eve@evil.example")),
        )
        .await;
    assert_eq!(
        (
            again.body["deleted"].as_u64(),
            again.body["excluded_now"].as_bool()
        ),
        (Some(0), Some(false))
    );
}
