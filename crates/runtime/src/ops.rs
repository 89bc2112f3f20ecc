//! What the `o365-ops` operator commands do, as functions over the adapters (so tests run them
//! against the local stack). Every command that changes something is a dry run unless
//! `confirm` is set: it then says what it would do.

use o365_domain::audit::Actor;
use o365_domain::connection::Connection;
use o365_domain::ids::{Email, OrgId};
use o365_domain::mailbox::MailFolder;
use o365_domain::page::PageRequest;
use o365_domain::ports::{MailboxStateStore, MessageArchive, OrgStore, SyncRunLog, UserStore};
use o365_domain::service::mail::{PurgeReport, purge_mailbox};
use o365_domain::service::offboard::{OffboardReport, offboard_org};
use o365_domain::settings::IntegrationSettings;
use o365_domain::sync_run::SyncRun;
use o365_domain::user::{SyncState, SyncStateKind};
use o365_domain::{DomainError, Result};
use o365_store_dynamodb::DynamoStore;

/// One line of `list-orgs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgLine {
    pub org: OrgId,
    pub connection: Connection,
}

pub async fn list_orgs(store: &DynamoStore) -> Result<Vec<OrgLine>> {
    let mut lines = Vec::new();
    for org in store.org_ids().await? {
        let connection = store.connection(&org).await?;
        lines.push(OrgLine { org, connection });
    }
    Ok(lines)
}

/// `show-org`: what an operator looks at first.
#[derive(Debug, Clone)]
pub struct OrgReport {
    pub settings: IntegrationSettings,
    pub connection: Connection,
    /// Users in error: email, failure code.
    pub users_in_error: Vec<(Email, String)>,
    pub recent_runs: Vec<SyncRun>,
}

pub async fn show_org(store: &DynamoStore, org: &OrgId) -> Result<OrgReport> {
    let settings = store.settings(org).await?;
    let connection = store.connection(org).await?;
    let mut users_in_error = Vec::new();
    let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
    loop {
        let chunk = store
            .list_users(org, Some(SyncStateKind::Error), page.clone())
            .await?;
        for u in chunk.items {
            if let SyncState::Error { cause } = &u.state {
                users_in_error.push((u.email.clone(), cause.code.as_str()));
            }
        }
        match chunk.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    let recent_runs = store
        .list_runs(org, None, PageRequest::first(10))
        .await?
        .items;
    Ok(OrgReport {
        settings,
        connection,
        users_in_error,
        recent_runs,
    })
}

/// `resync-mailbox`: forgets the mailbox's delta links, so its next run reads both folders
/// again from scratch. Returns the folders that had a position. The dry run writes nothing
/// but the repairs reading a damaged mailbox item makes ([`MailboxStateStore::mailbox`]).
pub async fn resync_mailbox(
    store: &DynamoStore,
    org: &OrgId,
    mailbox: &Email,
    confirm: bool,
) -> Result<Vec<MailFolder>> {
    store.user(org, mailbox).await?;
    let positioned: Vec<MailFolder> = store
        .mailbox(org, mailbox)
        .await?
        .cursors
        .iter()
        .map(|c| c.folder)
        .collect();
    if confirm && !positioned.is_empty() {
        store.clear_cursors(org, mailbox).await?;
    }
    Ok(positioned)
}

/// `purge-mailbox`: the dry run counts the archived items; confirmed, it purges them all (the
/// same rule as the API: the user's sync must be off), audited as the operator.
pub async fn purge(
    store: &DynamoStore,
    org: &OrgId,
    mailbox: &Email,
    confirm: bool,
) -> Result<PurgeReport> {
    if !confirm {
        let mut items = 0;
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        loop {
            let chunk = store.all_messages(org, mailbox, page.clone()).await?;
            items += chunk.items.len() as u64;
            match chunk.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        return Ok(PurgeReport {
            deleted: items,
            complete: false,
        });
    }
    let mut total = 0;
    loop {
        let report = purge_mailbox(
            store,
            org,
            mailbox,
            Actor::System("o365-ops".into()),
            time::OffsetDateTime::now_utc(),
        )
        .await?;
        total += report.deleted;
        if report.complete {
            return Ok(PurgeReport {
                deleted: total,
                complete: true,
            });
        }
    }
}

/// `offboard-org`: everything of the org goes (see [`offboard_org`]); the dry run lists what.
pub async fn offboard(store: &DynamoStore, org: &OrgId, confirm: bool) -> Result<OffboardReport> {
    offboard_org(
        store,
        org,
        Actor::System("o365-ops".into()),
        confirm,
        time::OffsetDateTime::now_utc(),
    )
    .await
}

/// `redrive-dlq`: moves jobs from the dead-letter queue back to the job queue (send, then
/// delete: a crash in between leaves a duplicate, which the mailbox lease makes harmless).
/// The dry run reports the dead-letter queue's approximate depth.
pub async fn redrive(
    sqs: &aws_sdk_sqs::Client,
    dead_letters: &str,
    queue: &str,
    confirm: bool,
) -> Result<u64> {
    let unavailable = |e: &dyn std::fmt::Display| DomainError::Unavailable(format!("SQS: {e}"));
    if !confirm {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(dead_letters)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| unavailable(&aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        return Ok(attributes
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0));
    }
    let mut moved = 0;
    loop {
        let received = sqs
            .receive_message()
            .queue_url(dead_letters)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| unavailable(&aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(moved);
        }
        for m in messages {
            sqs.send_message()
                .queue_url(queue)
                .message_body(m.body().unwrap_or_default())
                .send()
                .await
                .map_err(|e| unavailable(&aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            sqs.delete_message()
                .queue_url(dead_letters)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .map_err(|e| unavailable(&aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            moved += 1;
        }
    }
}

/// `rotate-state-key`: a new random consent-state signing key. States issued under the old key
/// stop verifying once the functions read the new one (at most `O365_SECRET_CACHE_SECS`): an
/// admin mid-way through connecting starts again.
pub async fn rotate_state_key(
    secrets: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
    confirm: bool,
) -> Result<bool> {
    if !confirm {
        return Ok(false);
    }
    // 256 random bits, hex.
    let key = o365_domain::consent::random_token();
    secrets
        .put_secret_value()
        .secret_id(secret_id)
        .secret_string(serde_json::json!({ "state_signing_key": key }).to_string())
        .send()
        .await
        .map_err(|e| {
            DomainError::Unavailable(format!(
                "Secrets Manager: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            ))
        })?;
    Ok(true)
}
