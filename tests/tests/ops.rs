//! The operator commands (`o365-ops`) against the local stack: dynoxide for the store, moto for
//! SQS and Secrets Manager. Each change is a dry run first (nothing changes), then confirmed.

use o365_domain::audit::{Actor, AuditAction};
use o365_domain::connection::ConnectionStatus;
use o365_domain::failure::{Failure, FailureCode};
use o365_domain::ids::Email;
use o365_domain::mailbox::{MailFolder, MailboxCursor, SyncLink};
use o365_domain::message::WriteStamp;
use o365_domain::message::{CapturedMessage, MessageRemoval, RemovalReason};
use o365_domain::page::PageRequest;
use o365_domain::ports::{AuditLog, MailboxStateStore, MessageArchive, OrgStore, UserStore};
use o365_domain::user::{NewUser, SyncState};
use o365_e2e::{StoreFixture, audit, now, org};
use o365_runtime::ops;

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

async fn seeded() -> StoreFixture {
    let fixture = StoreFixture::dynoxide().await;
    let store = &fixture.store;
    for name in ["acme", "globex"] {
        let o = org(name);
        store
            .create_org(
                &o,
                &NewUser::parse("root@contoso.com", "Root", "admin").unwrap(),
                audit(&o, AuditAction::OrgCreated, "org"),
            )
            .await
            .unwrap();
    }
    let acme = org("acme");
    store
        .add_user(
            &acme,
            &NewUser::parse("adele@contoso.com", "Adele", "member").unwrap(),
            audit(&acme, AuditAction::UserAdded, "user"),
        )
        .await
        .unwrap();
    fixture
}

fn message(id: &str) -> CapturedMessage {
    CapturedMessage {
        subject: Some("Hi".into()),
        received_at: Some(now()),
        ..CapturedMessage::new(id, MailFolder::Inbox)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_show_orgs() {
    let f = seeded().await;
    let acme = org("acme");
    f.store
        .set_sync_state(
            &acme,
            &email("adele@contoso.com"),
            &SyncState::Error {
                cause: Failure::new(FailureCode::UserNotFound, Some("x"), "gone", now()),
            },
        )
        .await
        .unwrap();
    let lines = ops::list_orgs(&f.store).await.unwrap();
    let names: Vec<_> = lines.iter().map(|l| l.org.to_string()).collect();
    assert_eq!(names, ["acme", "globex"]);
    assert!(
        lines
            .iter()
            .all(|l| l.connection.status == ConnectionStatus::None)
    );
    let report = ops::show_org(&f.store, &acme).await.unwrap();
    assert_eq!(
        report.users_in_error,
        vec![(email("adele@contoso.com"), "user_not_found".to_owned())]
    );
    assert!(ops::show_org(&f.store, &org("nobody")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_and_purge_are_dry_runs_until_confirmed() {
    let f = seeded().await;
    let (acme, adele) = (org("acme"), email("adele@contoso.com"));
    f.store
        .save_cursor(&MailboxCursor {
            org: acme.clone(),
            mailbox: adele.clone(),
            folder: MailFolder::Inbox,
            link: SyncLink::Delta("https://graph/delta?$deltatoken=1".into()),
            saved_at: now(),
            resync_started_at: None,
        })
        .await
        .unwrap();
    let dry = ops::resync_mailbox(&f.store, &acme, &adele, false)
        .await
        .unwrap();
    assert_eq!(dry, vec![MailFolder::Inbox]);
    assert!(
        f.store
            .cursor(&acme, &adele, MailFolder::Inbox)
            .await
            .unwrap()
            .is_some()
    );
    ops::resync_mailbox(&f.store, &acme, &adele, true)
        .await
        .unwrap();
    assert!(
        f.store
            .cursor(&acme, &adele, MailFolder::Inbox)
            .await
            .unwrap()
            .is_none()
    );

    let messages: Vec<_> = (0..7).map(|i| message(&format!("m{i}"))).collect();
    f.store
        .write_page(&acme, &adele, &messages, &[], WriteStamp::from(now()))
        .await
        .unwrap();
    let removal = MessageRemoval {
        id: "m0".into(),
        folder: MailFolder::Inbox,
        reason: RemovalReason::Deleted,
    };
    f.store
        .write_page(&acme, &adele, &[], &[removal], WriteStamp::from(now()))
        .await
        .unwrap();
    let dry = ops::purge(&f.store, &acme, &adele, false).await.unwrap();
    assert_eq!(dry.deleted, 7, "the dry run counts, tombstone included");
    let count = || async {
        f.store
            .all_messages(&acme, &adele, PageRequest::first(50))
            .await
            .unwrap()
            .items
            .len()
    };
    assert_eq!(count().await, 7, "the dry run deleted nothing");
    f.store
        .set_sync_enabled(
            &acme,
            &[(adele.clone(), true)],
            audit(&acme, AuditAction::SyncToggled, "users"),
        )
        .await
        .unwrap();
    assert!(
        ops::purge(&f.store, &acme, &adele, true).await.is_err(),
        "refused while sync is on"
    );
    f.store
        .set_sync_enabled(
            &acme,
            &[(adele.clone(), false)],
            audit(&acme, AuditAction::SyncToggled, "users"),
        )
        .await
        .unwrap();
    let done = ops::purge(&f.store, &acme, &adele, true).await.unwrap();
    assert_eq!((done.deleted, done.complete), (7, true));
    assert_eq!(count().await, 0);
    let events = f
        .store
        .list_audit(&acme, PageRequest::first(50))
        .await
        .unwrap()
        .items;
    assert!(
        events.iter().any(|e| e.action == AuditAction::MailboxPurged
            && e.actor == Actor::System("o365-ops".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_redriven_only_when_confirmed() {
    let sqs = o365_local_stack::sqs_client(&o365_e2e::moto_endpoint());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut urls = Vec::new();
    for name in [format!("dlq-{run}"), format!("jobs-{run}")] {
        urls.push(
            sqs.create_queue()
                .queue_name(name)
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap(),
        );
    }
    let (dlq, jobs) = (&urls[0], &urls[1]);
    for i in 0..3 {
        sqs.send_message()
            .queue_url(dlq)
            .message_body(format!("{{\"job\":{i}}}"))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(ops::redrive(&sqs, dlq, jobs, false).await.unwrap(), 3);
    assert_eq!(ops::redrive(&sqs, dlq, jobs, true).await.unwrap(), 3);
    assert_eq!(
        ops::redrive(&sqs, dlq, jobs, false).await.unwrap(),
        0,
        "empty"
    );
    let moved = sqs
        .receive_message()
        .queue_url(jobs)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    let mut bodies: Vec<_> = moved.iter().map(|m| m.body().unwrap().to_owned()).collect();
    bodies.sort();
    assert_eq!(bodies, [r#"{"job":0}"#, r#"{"job":1}"#, r#"{"job":2}"#]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_key_rotates_only_when_confirmed() {
    let client = o365_local_stack::secretsmanager_client(&o365_e2e::moto_endpoint());
    let id = format!("{}/state-key", uuid::Uuid::new_v4().simple());
    let first = r#"{"state_signing_key":"0123456789abcdef0123456789abcdef-first"}"#;
    client
        .create_secret()
        .name(&id)
        .secret_string(first)
        .send()
        .await
        .unwrap();
    let value = || async {
        client
            .get_secret_value()
            .secret_id(&id)
            .send()
            .await
            .unwrap()
            .secret_string
            .unwrap()
    };
    assert!(!ops::rotate_state_key(&client, &id, false).await.unwrap());
    assert_eq!(value().await, first);
    assert!(ops::rotate_state_key(&client, &id, true).await.unwrap());
    let rotated: serde_json::Value = serde_json::from_str(&value().await).unwrap();
    let key = rotated["state_signing_key"].as_str().unwrap();
    assert_eq!(key.len(), 64);
    assert_ne!(value().await, first);
}

/// Every item of both tables that belongs to `org` (by key or by an `org` attribute).
async fn items_of(f: &StoreFixture, org: &str) -> Vec<String> {
    let client = f.store.client();
    let mut found = Vec::new();
    for table in [&f.store.tables().state, &f.store.tables().messages] {
        let items = client
            .scan()
            .table_name(table)
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default();
        for item in items {
            let pk = item["pk"].as_s().unwrap().clone();
            let sk = item["sk"].as_s().unwrap().clone();
            let owner = item.get("org").and_then(|v| v.as_s().ok());
            let mine = pk.contains(&format!("#{org}")) || pk.starts_with(&format!("{org}#"));
            if mine || owner.is_some_and(|o| o == org) {
                found.push(format!("{pk} / {sk}"));
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_erases_everything_of_the_org_and_nothing_else() {
    let f = seeded().await;
    let (acme, globex) = (org("acme"), org("globex"));
    let (adele, gone) = (email("adele@contoso.com"), email("gone@contoso.com"));
    // Adele syncs; a user who left kept an archive; both orgs have mail.
    f.store
        .set_sync_enabled(
            &acme,
            &[(adele.clone(), true)],
            audit(&acme, AuditAction::SyncToggled, "users"),
        )
        .await
        .unwrap();
    let messages: Vec<_> = (0..30).map(|i| message(&format!("m{i}"))).collect();
    for (o, mailbox) in [(&acme, &adele), (&acme, &gone), (&globex, &adele)] {
        f.store
            .write_page(o, mailbox, &messages, &[], WriteStamp::from(now()))
            .await
            .unwrap();
        f.store
            .save_cursor(&MailboxCursor {
                org: o.clone(),
                mailbox: mailbox.clone(),
                folder: MailFolder::Inbox,
                link: SyncLink::Delta("https://graph/delta?$deltatoken=1".into()),
                saved_at: now(),
                resync_started_at: None,
            })
            .await
            .unwrap();
    }
    // A message with someone from outside: the person index (erasure by address) holds them.
    let outside = CapturedMessage {
        cc: vec![o365_domain::message::Recipient {
            name: None,
            address: Some("eve@evil.example".into()),
        }],
        ..message("outside")
    };
    f.store
        .write_page(&acme, &adele, &[outside], &[], WriteStamp::from(now()))
        .await
        .unwrap();
    // The tenant claim acme's sign-in left (its shape as the store writes it).
    f.store
        .client()
        .put_item()
        .table_name(&f.store.tables().state)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(
                "TENANT#11111111-2222-3333-4444-555555555555".into(),
            ),
        )
        .item(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("TENANT".into()),
        )
        .item(
            "tenant",
            aws_sdk_dynamodb::types::AttributeValue::S(
                "11111111-2222-3333-4444-555555555555".into(),
            ),
        )
        .item(
            "org",
            aws_sdk_dynamodb::types::AttributeValue::S("acme".into()),
        )
        .send()
        .await
        .unwrap();
    let globex_before = items_of(&f, "globex").await;

    let dry = ops::offboard(&f.store, &acme, false).await.unwrap();
    assert_eq!((dry.users, dry.done, dry.messages_deleted), (2, false, 0));
    assert_eq!(
        dry.mailboxes,
        vec![adele.clone(), gone.clone(), email("root@contoso.com")],
        "users' mailboxes and leavers' archives"
    );
    let before = items_of(&f, "acme").await;
    assert!(
        before.iter().any(|i| i.starts_with("~person#acme#")),
        "{before:?}"
    );
    assert!(before.len() > 60, "the dry run deleted nothing");

    let done = ops::offboard(&f.store, &acme, true).await.unwrap();
    assert!(done.done);
    assert_eq!(done.messages_deleted, 61);
    assert_eq!(
        items_of(&f, "acme").await,
        Vec::<String>::new(),
        "nothing of acme is left"
    );
    assert_eq!(
        items_of(&f, "globex").await,
        globex_before,
        "globex untouched"
    );
    let orgs: Vec<_> = ops::list_orgs(&f.store)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.org.to_string())
        .collect();
    assert_eq!(orgs, ["globex"]);
    assert!(
        ops::offboard(&f.store, &acme, true).await.is_err(),
        "a gone org is not found"
    );
}
