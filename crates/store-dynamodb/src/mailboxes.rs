//! One item per mailbox (`MBX#{org}#{email}` / `MAILBOX`): the job lease, both folders' delta
//! positions, the run counters and the time of the last run. Every change is one conditional
//! `UpdateItem`, so an unchanged mailbox's cycle costs the fan-out's lease and the worker's
//! finishing write, nothing else. The item has no index keys: its writes are never replicated.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;

use o365_domain::ids::{Email, OrgId};
use o365_domain::mailbox::{
    Checkpoint, Lease, MailFolder, MailboxCursor, MailboxState, RunClaim, WriteMark,
};
use o365_domain::ports::MailboxStateStore;
use o365_domain::user::MessageCounters;
use o365_domain::{DomainError, Entity, Result};

use crate::keys::{self, MAILBOX_SK, mailbox_pk};
use crate::sdk_error::{is_conditional_failure, unavailable};
use crate::{DynamoStore, Item, n, rfc3339, s};

const HOLDER: &str = "lease_holder";
const UNTIL: &str = "lease_until_ms";
const LAST_SYNC: &str = "last_sync_at";
/// The mark of the last write that committed counts (`WriteMark`).
const LAST_MARK: &str = "last_mark";
/// The run claiming the mailbox (`claim_run`) and until when its claim runs.
const CLAIM: &str = "run_claim";
const CLAIM_UNTIL: &str = "claim_until_ms";
/// The last commits of runs that stopped before finishing (a list of encoded marks).
const STOPPED_RUNS: &str = "stopped_runs";
const COUNTERS: [&str; 4] = ["captured", "updated", "deleted", "skipped"];

fn cursor_attribute(folder: MailFolder) -> String {
    format!("cursor_{}", folder.well_known_name())
}

fn millis(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos() / 1_000_000
}

fn from_millis(ms: i128) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(ms.checked_mul(1_000_000)?).ok()
}

/// A deadline attribute as a time; `None` if absent or damaged (not a number, or out of range).
fn deadline(item: &Item, name: &str) -> Option<OffsetDateTime> {
    from_millis(number(item, name)?)
}

fn lease_of(item: &Item) -> Option<Lease> {
    let holder = item.get(HOLDER)?.as_s().ok()?;
    let until = deadline(item, UNTIL)?;
    Some(Lease {
        holder: holder.clone(),
        until,
    })
}

fn number(item: &Item, name: &str) -> Option<i128> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// What the user view takes from the mailbox item: the runs' counts and the last run's time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MailboxSummary {
    pub counters: MessageCounters,
    pub last_sync_at: Option<OffsetDateTime>,
}

impl MailboxSummary {
    pub(crate) const PROJECTION: &'static str =
        "pk, captured, updated, deleted, skipped, last_sync_at";

    fn from_item(item: &Item) -> Self {
        let count = |name| number(item, name).map_or(0, |v| v.max(0) as u64);
        Self {
            counters: MessageCounters {
                captured: count("captured"),
                updated: count("updated"),
                deleted: count("deleted"),
                skipped: count("skipped"),
            },
            last_sync_at: item
                .get(LAST_SYNC)
                .and_then(|v| v.as_s().ok())
                .and_then(|t| {
                    OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
                }),
        }
    }
}

/// The parts of an `UpdateItem` a checkpoint adds: each position set, each count added.
struct Expression {
    set: Vec<String>,
    add: Vec<String>,
    remove: Vec<String>,
    values: Item,
}

impl Expression {
    fn new() -> Self {
        Self {
            set: Vec::new(),
            add: Vec::new(),
            remove: Vec::new(),
            values: Item::new(),
        }
    }

    fn set(&mut self, name: &str, value: AttributeValue) {
        let i = self.values.len();
        self.set.push(format!("{name} = :v{i}"));
        self.values.insert(format!(":v{i}"), value);
    }

    fn progress(mut self, progress: &Checkpoint) -> Result<Self> {
        for cursor in &progress.cursors {
            let value = serde_dynamo::to_attribute_value(cursor).map_err(unavailable)?;
            self.set(&cursor_attribute(cursor.folder), value);
        }
        if let Some(mark) = &progress.mark {
            self.set(LAST_MARK, s(mark.encode()));
        }
        if progress.restart {
            self.remove.extend(
                MailFolder::ALL
                    .into_iter()
                    .filter(|f| !progress.cursors.iter().any(|c| c.folder == *f))
                    .map(cursor_attribute),
            );
        }
        let c = progress.added;
        for (name, value) in COUNTERS
            .iter()
            .zip([c.captured, c.updated, c.deleted, c.skipped])
        {
            if value > 0 {
                let i = self.values.len();
                self.add.push(format!("{name} :v{i}"));
                self.values.insert(format!(":v{i}"), n(value));
            }
        }
        Ok(self)
    }

    /// A run writes while its job holds the lease, the mailbox's last commit is the one the run
    /// follows, and no other run's claim is running (two deliveries of one job hold the same
    /// lease; the claim and the chain of commits keep them apart).
    fn run_condition(
        mut self,
        holder: &str,
        run: &str,
        follows: Option<&WriteMark>,
        now: OffsetDateTime,
    ) -> (Self, String) {
        self.values.insert(":holder".into(), s(holder));
        self.values.insert(":run".into(), s(run));
        self.values.insert(":now".into(), n(millis(now)));
        let follows = match follows {
            Some(mark) => {
                self.values.insert(":follows".into(), s(mark.encode()));
                "last_mark = :follows"
            }
            None => "attribute_not_exists(last_mark)",
        };
        let condition = format!(
            "lease_holder = :holder AND {follows} AND (attribute_not_exists({CLAIM_UNTIL}) OR {CLAIM_UNTIL} < :now OR {CLAIM} = :run)"
        );
        (self, condition)
    }

    /// A commit's condition: the run is the one its mark names.
    fn commit_condition(self, holder: &str, progress: &Checkpoint) -> (Self, String) {
        let run = progress.mark.as_ref().map_or("", |m| m.run.as_str());
        self.run_condition(
            holder,
            run,
            progress.follows.as_ref(),
            OffsetDateTime::now_utc(),
        )
    }

    fn apply(self, update: UpdateItemFluentBuilder) -> UpdateItemFluentBuilder {
        let mut clauses = Vec::new();
        if !self.set.is_empty() {
            clauses.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.add.is_empty() {
            clauses.push(format!("ADD {}", self.add.join(", ")));
        }
        if !self.remove.is_empty() {
            clauses.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        update
            .update_expression(clauses.join(" "))
            .set_expression_attribute_values((!self.values.is_empty()).then_some(self.values))
    }
}

impl DynamoStore {
    fn mailbox_update(&self, org: &OrgId, mailbox: &Email) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.tables.state)
            .set_key(Some(keys::key(mailbox_pk(org, mailbox), MAILBOX_SK)))
    }

    /// Sends an update; `Ok(false)` when its condition did not hold.
    pub(crate) async fn send_conditional(update: UpdateItemFluentBuilder) -> Result<bool> {
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Sends a run's commit. Refused, it may still have landed: the SDK retries a request
    /// whose answer was lost, and the retry then fails the condition its first attempt met. A
    /// mailbox whose last commit is this one's own mark took it.
    async fn committed_or_conflict(
        &self,
        org: &OrgId,
        mailbox: &Email,
        progress: &Checkpoint,
        update: UpdateItemFluentBuilder,
    ) -> Result<()> {
        if Self::send_conditional(update).await? {
            return Ok(());
        }
        let own = progress.mark.as_ref().map(WriteMark::encode);
        let last = self
            .get_state_projected(keys::key(mailbox_pk(org, mailbox), MAILBOX_SK), LAST_MARK)
            .await?
            .and_then(|item| item.get(LAST_MARK)?.as_s().ok().cloned());
        match (own, last) {
            (Some(own), Some(last)) if own == last => Ok(()),
            _ => Err(DomainError::Conflict(Entity::Lease)),
        }
    }

    /// Damaged data (an attribute that does not decode) would otherwise refuse every claim or
    /// commit that follows it: the attribute is set to `fresh`, or removed, if it still holds
    /// what was read. Logged as an error; the mailbox syncs on.
    async fn repair(
        &self,
        org: &OrgId,
        mailbox: &Email,
        attribute: &str,
        stored: &AttributeValue,
        fresh: Option<AttributeValue>,
    ) -> Result<()> {
        tracing::error!(
            mailbox = mailbox.key(),
            attribute,
            "a mailbox attribute does not decode; repaired"
        );
        let update = self
            .mailbox_update(org, mailbox)
            .condition_expression(format!("{attribute} = :stored"))
            .expression_attribute_values(":stored", stored.clone());
        let update = match fresh {
            Some(value) => update
                .update_expression(format!("SET {attribute} = :fresh"))
                .expression_attribute_values(":fresh", value),
            None => update.update_expression(format!("REMOVE {attribute}")),
        };
        if Self::send_conditional(update).await? {
            Ok(())
        } else {
            Err(DomainError::Unavailable(
                "the mailbox changed while it was read; its run is tried again".into(),
            ))
        }
    }

    /// An unreadable last mark becomes one that says everything written before now was
    /// counted: a message archived but not yet counted by a crashed run just before then is
    /// counted as updated instead of new.
    async fn replace_unreadable_mark(
        &self,
        org: &OrgId,
        mailbox: &Email,
        stored: &AttributeValue,
    ) -> Result<WriteMark> {
        let fresh = WriteMark {
            run: WriteMark::run_id(OffsetDateTime::now_utc()),
            write: 0,
        };
        self.repair(org, mailbox, LAST_MARK, stored, Some(s(fresh.encode())))
            .await?;
        Ok(fresh)
    }

    /// An unreadable claim names no run a claim could be taken over: it goes (a readable
    /// deadline stays, so a live run keeps the mailbox until then). What that run archived
    /// uncounted is counted as updated, as for an unreadable mark.
    async fn readable_claim(
        &self,
        org: &OrgId,
        mailbox: &Email,
        stored: Option<&AttributeValue>,
    ) -> Result<Option<String>> {
        match stored {
            None => Ok(None),
            Some(AttributeValue::S(run)) => Ok(Some(run.clone())),
            Some(damaged) => {
                self.repair(org, mailbox, CLAIM, damaged, None).await?;
                Ok(None)
            }
        }
    }

    /// A deadline that does not read as a time (damaged data) would never pass: it is set to
    /// 0, as if it had passed. Whether `item` held one (then repaired).
    async fn repair_deadline(
        &self,
        org: &OrgId,
        mailbox: &Email,
        item: &Item,
        name: &str,
    ) -> Result<bool> {
        match item.get(name) {
            Some(stored) if deadline(item, name).is_none() => {
                self.repair(org, mailbox, name, stored, Some(n(0))).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Takes the lease for `holder` until `until` when `condition` (over `:now`, `:holder`)
    /// holds. Refused, it looks for a damaged deadline (paths such as purge never read the
    /// mailbox item first): one repaired, it tries once more.
    async fn take_lease(
        &self,
        org: &OrgId,
        mailbox: &Email,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
        condition: &str,
    ) -> Result<bool> {
        let update = self
            .mailbox_update(org, mailbox)
            .update_expression("SET lease_holder = :holder, lease_until_ms = :until")
            .condition_expression(condition)
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":until", n(millis(until)))
            .expression_attribute_values(":now", n(millis(now)));
        if Self::send_conditional(update.clone()).await? {
            return Ok(true);
        }
        let key = keys::key(mailbox_pk(org, mailbox), MAILBOX_SK);
        let Some(item) = self.get_state_projected(key, UNTIL).await? else {
            return Ok(false);
        };
        if self.repair_deadline(org, mailbox, &item, UNTIL).await? {
            return Self::send_conditional(update).await;
        }
        Ok(false)
    }

    /// The mailbox items of `emails` (those that have one), for the user view.
    pub(crate) async fn mailbox_summaries(
        &self,
        org: &OrgId,
        emails: impl Iterator<Item = &Email>,
    ) -> Result<HashMap<String, MailboxSummary>> {
        let wanted: HashMap<String, String> = emails
            .map(|e| (mailbox_pk(org, e), e.key().to_owned()))
            .collect();
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let keys = wanted
            .keys()
            .map(|pk| keys::key(pk.clone(), MAILBOX_SK))
            .collect();
        let items = self
            .batch_get(&self.tables.state, keys, Some(MailboxSummary::PROJECTION))
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                let pk = item.get("pk")?.as_s().ok()?;
                Some((wanted.get(pk)?.clone(), MailboxSummary::from_item(item)))
            })
            .collect())
    }
}

#[async_trait]
impl MailboxStateStore for DynamoStore {
    async fn mailbox(&self, org: &OrgId, mailbox: &Email) -> Result<MailboxState> {
        let Some(item) = self
            .get(
                &self.tables.state,
                keys::key(mailbox_pk(org, mailbox), MAILBOX_SK),
            )
            .await?
        else {
            return Ok(MailboxState::default());
        };
        for name in [UNTIL, CLAIM_UNTIL] {
            self.repair_deadline(org, mailbox, &item, name).await?;
        }
        let lease = lease_of(&item);
        let mut cursors = Vec::new();
        for folder in MailFolder::ALL {
            if let Some(value) = item.get(&cursor_attribute(folder)) {
                cursors
                    .push(serde_dynamo::from_attribute_value(value.clone()).map_err(unavailable)?);
            }
        }
        let last_mark = match item.get(LAST_MARK) {
            None => None,
            Some(stored) => match stored.as_s().ok().and_then(|m| WriteMark::decode(m)) {
                Some(mark) => Some(mark),
                None => Some(self.replace_unreadable_mark(org, mailbox, stored).await?),
            },
        };
        Ok(MailboxState {
            lease,
            cursors,
            last_mark,
            claim_until: deadline(&item, CLAIM_UNTIL),
            claimed_by: self.readable_claim(org, mailbox, item.get(CLAIM)).await?,
            stopped_runs: item
                .get(STOPPED_RUNS)
                .and_then(|v| v.as_l().ok())
                .map(|marks| {
                    marks
                        .iter()
                        .filter_map(|m| WriteMark::decode(m.as_s().ok()?))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    async fn checkpoint(
        &self,
        org: &OrgId,
        mailbox: &Email,
        holder: &str,
        progress: &Checkpoint,
    ) -> Result<()> {
        if progress.is_empty() {
            return Ok(());
        }
        let (expression, condition) = Expression::new()
            .progress(progress)?
            .commit_condition(holder, progress);
        let update = expression
            .apply(self.mailbox_update(org, mailbox))
            .condition_expression(condition);
        self.committed_or_conflict(org, mailbox, progress, update)
            .await
    }

    async fn finish_run(
        &self,
        org: &OrgId,
        mailbox: &Email,
        holder: &str,
        progress: &Checkpoint,
        at: OffsetDateTime,
    ) -> Result<()> {
        let mut released = Expression::new().progress(progress)?;
        released.set(LAST_SYNC, s(rfc3339(at)));
        released.set(UNTIL, n(0));
        released.remove.extend([CLAIM.into(), CLAIM_UNTIL.into()]);
        let (released, condition) = released.commit_condition(holder, progress);
        let update = released
            .apply(self.mailbox_update(org, mailbox))
            .condition_expression(condition);
        self.committed_or_conflict(org, mailbox, progress, update)
            .await
    }

    async fn claim_run(
        &self,
        org: &OrgId,
        mailbox: &Email,
        claim: &RunClaim,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let mut expression = Expression::new();
        expression.set(CLAIM, s(&claim.run));
        expression.set(CLAIM_UNTIL, n(millis(until)));
        if !claim.stopped_runs.is_empty() {
            let marks = claim.stopped_runs.iter().map(|m| s(m.encode())).collect();
            expression.set(STOPPED_RUNS, AttributeValue::L(marks));
        }
        // Only over the claim the run found (one left by a run that stopped is recorded
        // above), or its own (the SDK retrying a claim whose answer was lost).
        let found = match &claim.found_claim {
            Some(run) => {
                expression.values.insert(":found".into(), s(run));
                format!("({CLAIM} = :found OR {CLAIM} = :run)")
            }
            None => format!("(attribute_not_exists({CLAIM}) OR {CLAIM} = :run)"),
        };
        let (expression, condition) =
            expression.run_condition(&claim.holder, &claim.run, claim.follows.as_ref(), now);
        let condition = format!("{condition} AND {found}");
        Self::send_conditional(
            expression
                .apply(self.mailbox_update(org, mailbox))
                .condition_expression(condition),
        )
        .await
    }

    async fn end_claim(
        &self,
        org: &OrgId,
        mailbox: &Email,
        run: &str,
        archived_since_commit: bool,
    ) -> Result<()> {
        // A run that left uncounted messages stays named: the next run records that it stopped.
        let remove = if archived_since_commit {
            format!("REMOVE {CLAIM_UNTIL}")
        } else {
            format!("REMOVE {CLAIM}, {CLAIM_UNTIL}")
        };
        let update = self
            .mailbox_update(org, mailbox)
            .update_expression(remove)
            .condition_expression(format!("{CLAIM} = :run"))
            .expression_attribute_values(":run", s(run));
        Self::send_conditional(update).await?;
        Ok(())
    }

    async fn save_cursor(&self, cursor: &MailboxCursor) -> Result<()> {
        let progress = Checkpoint {
            cursors: vec![cursor.clone()],
            ..Default::default()
        };
        let expression = Expression::new().progress(&progress)?;
        Self::send_conditional(expression.apply(self.mailbox_update(&cursor.org, &cursor.mailbox)))
            .await?;
        Ok(())
    }

    async fn clear_cursors(&self, org: &OrgId, mailbox: &Email) -> Result<()> {
        let mut expression = Expression::new();
        expression.remove = MailFolder::ALL.into_iter().map(cursor_attribute).collect();
        // Only an existing item: clearing never creates one.
        let update = expression
            .apply(self.mailbox_update(org, mailbox))
            .condition_expression("attribute_exists(pk)");
        Self::send_conditional(update).await?;
        Ok(())
    }

    async fn acquire_lease(
        &self,
        org: &OrgId,
        mailbox: &Email,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.take_lease(
            org,
            mailbox,
            holder,
            until,
            now,
            "attribute_not_exists(lease_until_ms) OR lease_until_ms < :now OR lease_holder = :holder",
        )
        .await
    }

    async fn lease_holder(
        &self,
        org: &OrgId,
        mailbox: &Email,
        now: OffsetDateTime,
    ) -> Result<Option<Lease>> {
        // The fan-out asks this of every mailbox each cycle: the lease alone, not the positions.
        let item = self
            .get_state_projected(
                keys::key(mailbox_pk(org, mailbox), MAILBOX_SK),
                "lease_holder, lease_until_ms",
            )
            .await?;
        Ok(item
            .as_ref()
            .and_then(lease_of)
            .filter(|lease| lease.until >= now))
    }

    async fn release_lease(&self, org: &OrgId, mailbox: &Email, holder: &str) -> Result<()> {
        // Someone else holding it now (ours had expired) is fine: theirs is not ours to release.
        let update = self
            .mailbox_update(org, mailbox)
            .update_expression("SET lease_until_ms = :ended")
            .condition_expression("lease_holder = :holder")
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":ended", n(0));
        Self::send_conditional(update).await?;
        Ok(())
    }

    async fn lease_queued_job(
        &self,
        org: &OrgId,
        mailbox: &Email,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.take_lease(
            org,
            mailbox,
            holder,
            until,
            now,
            "attribute_not_exists(lease_until_ms) OR (lease_until_ms < :now AND lease_holder <> :holder)",
        )
        .await
    }
}
