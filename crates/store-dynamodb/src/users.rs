//! Users: roles, the Primary rule, the last-admin rule, bulk sync switches, sync outcomes.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use o365_domain::audit::AuditEvent;
use o365_domain::ids::{DisplayName, Email, OrgId};
use o365_domain::page::{Page, PageRequest};
use o365_domain::ports::{MAX_BULK_CHANGES, UserStore};
use o365_domain::user::{
    ConnectionMode, DirectoryLink, MessageCounters, NewUser, Role, SyncCounts, SyncState,
    SyncStateKind, SyncSubject, User,
};
use o365_domain::{DomainError, Entity, FieldError, Result, RuleViolation};

use crate::keys::{self, ORG_SK, USER_SK_PREFIX, org_pk, user_sk, user_state_gsi_pk};
use crate::mailboxes::MailboxSummary;
use crate::sdk_error::{TransactionFailure, unavailable};
use crate::tables::{GSI1_PK, PK};
use crate::{DynamoStore, Item, from_item, n, s, to_item};

#[derive(Debug, Serialize, Deserialize)]
struct UserRecord {
    pk: String,
    sk: String,
    gsi1pk: String,
    gsi1sk: String,
    email: Email,
    display_name: DisplayName,
    role: Role,
    sync_enabled: bool,
    connection_mode: ConnectionMode,
    state: SyncState,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    last_sync_at: Option<OffsetDateTime>,
    #[serde(default)]
    captured: u64,
    #[serde(default)]
    updated: u64,
    #[serde(default)]
    deleted: u64,
    #[serde(default)]
    skipped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    directory: Option<DirectoryLink>,
    version: u64,
}

impl UserRecord {
    /// The user as people see it: the user item, with the counts and the last run's time from
    /// the mailbox item (older user items carried counts themselves; they add up).
    fn into_user(self, primary: Option<&str>, mailbox: Option<&MailboxSummary>) -> User {
        let mailbox = mailbox.copied().unwrap_or_default();
        User {
            is_primary: primary == Some(self.email.key()),
            email: self.email,
            display_name: self.display_name,
            role: self.role,
            sync_enabled: self.sync_enabled,
            connection_mode: self.connection_mode,
            state: self.state,
            last_sync_at: mailbox.last_sync_at.max(self.last_sync_at),
            counters: MessageCounters {
                captured: self.captured,
                updated: self.updated,
                deleted: self.deleted,
                skipped: self.skipped,
            } + mailbox.counters,
            directory: self.directory,
            version: self.version,
        }
    }
}

fn state_values(org: &OrgId, state: &SyncState) -> Result<Item> {
    let kind = state.kind().as_str();
    Ok(Item::from([
        (
            ":state".into(),
            serde_dynamo::to_attribute_value(state).map_err(unavailable)?,
        ),
        (":gsi".into(), s(user_state_gsi_pk(org, kind))),
    ]))
}

impl DynamoStore {
    pub(crate) fn user_put(&self, org: &OrgId, user: &NewUser) -> Result<TransactWriteItem> {
        let state = SyncState::Disabled;
        let record = UserRecord {
            pk: org_pk(org),
            sk: user_sk(&user.email),
            gsi1pk: user_state_gsi_pk(org, state.kind().as_str()),
            gsi1sk: user.email.key().to_owned(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            role: user.role,
            // A new user syncs nothing until an admin switches them on.
            sync_enabled: false,
            connection_mode: ConnectionMode::Delegated,
            state,
            last_sync_at: None,
            captured: 0,
            updated: 0,
            deleted: 0,
            skipped: 0,
            directory: None,
            version: 1,
        };
        self.put_item(to_item(&record)?, Some("attribute_not_exists(pk)"), None)
    }

    async fn user_record(&self, org: &OrgId, email: &Email) -> Result<UserRecord> {
        let item = self
            .get(&self.tables.state, keys::key(org_pk(org), user_sk(email)))
            .await?;
        from_item(item.ok_or(DomainError::NotFound(Entity::User))?)
    }

    /// Explains why a transaction touching the org item was refused.
    async fn org_rule_failure(&self, org: &OrgId, email: &Email) -> DomainError {
        match self.org_record(org).await {
            Ok(r) if r.primary_email.as_deref() == Some(email.key()) => {
                DomainError::Rule(RuleViolation::PrimaryLocked)
            }
            Ok(r) if r.admin_count <= 1 => DomainError::Rule(RuleViolation::LastAdmin),
            Ok(_) => DomainError::Conflict(Entity::User),
            Err(e) => e,
        }
    }

    /// The org update that goes with an admin leaving the admin role (demotion or removal).
    fn admin_leaves(&self, org: &OrgId, email: &Email) -> Result<TransactWriteItem> {
        self.update_item(
            keys::key(org_pk(org), ORG_SK),
            "SET admin_count = admin_count - :one",
            "admin_count > :one AND (attribute_not_exists(primary_email) OR primary_email <> :email)",
            Item::from([(":one".into(), n(1)), (":email".into(), s(email.key()))]),
        )
    }

    fn admin_joins(&self, org: &OrgId) -> Result<TransactWriteItem> {
        self.update_item(
            keys::key(org_pk(org), ORG_SK),
            "SET admin_count = admin_count + :one",
            "attribute_exists(pk)",
            Item::from([(":one".into(), n(1))]),
        )
    }

    async fn users_by_key(&self, org: &OrgId, emails: &[Email]) -> Result<Vec<Option<UserRecord>>> {
        let keys = emails
            .iter()
            .map(|e| keys::key(org_pk(org), user_sk(e)))
            .collect();
        let mut found: std::collections::HashMap<String, UserRecord> = Default::default();
        for item in self.batch_get(&self.tables.state, keys, None).await? {
            let r: UserRecord = from_item(item)?;
            found.insert(r.email.key().to_owned(), r);
        }
        Ok(emails.iter().map(|e| found.remove(e.key())).collect())
    }

    /// How many items a query matches, counted by DynamoDB page by page (none is read out).
    /// The org's users whose sync is on (the walk's and the count's one definition).
    pub(crate) fn sync_enabled_query(
        &self,
        org: &OrgId,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.tables.state)
            .key_condition_expression("pk = :p AND begins_with(sk, :u)")
            .filter_expression("sync_enabled = :on")
            .expression_attribute_values(":p", s(org_pk(org)))
            .expression_attribute_values(":u", s(USER_SK_PREFIX))
            .expression_attribute_values(":on", AttributeValue::Bool(true))
    }

    /// User records joined with their mailbox items (one batch read).
    async fn users_with_mailboxes(
        &self,
        org: &OrgId,
        records: Vec<UserRecord>,
        primary: Option<&str>,
    ) -> Result<Vec<User>> {
        let mailboxes = self
            .mailbox_summaries(org, records.iter().map(|r| &r.email))
            .await?;
        Ok(records
            .into_iter()
            .map(|r| {
                let mailbox = mailboxes.get(r.email.key());
                r.into_user(primary, mailbox)
            })
            .collect())
    }
}

#[async_trait]
impl UserStore for DynamoStore {
    async fn add_user(&self, org: &OrgId, user: &NewUser, audit: AuditEvent) -> Result<User> {
        let org_change = match user.role {
            Role::Admin => self.admin_joins(org)?,
            Role::Member => {
                self.condition_check(keys::key(org_pk(org), ORG_SK), "attribute_exists(pk)", None)?
            }
        };
        match self
            .transact(vec![
                org_change,
                self.user_put(org, user)?,
                self.audit_put(&audit)?,
            ])
            .await
        {
            Ok(()) => self.user(org, &user.email).await,
            Err(TransactionFailure::Cancelled(r)) if r.first().is_some_and(Option::is_some) => {
                Err(DomainError::NotFound(Entity::Org))
            }
            Err(TransactionFailure::Cancelled(_)) => Err(DomainError::AlreadyExists(Entity::User)),
            Err(TransactionFailure::Other(e)) => Err(e),
        }
    }

    async fn sync_subject(&self, org: &OrgId, email: &Email) -> Result<SyncSubject> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.state)
            .set_key(Some(keys::key(org_pk(org), user_sk(email))))
            .consistent_read(true)
            .projection_expression("sync_enabled, #state, directory")
            .expression_attribute_names("#state", "state")
            .send()
            .await
            .map_err(unavailable)?;
        from_item(out.item.ok_or(DomainError::NotFound(Entity::User))?)
    }

    async fn user(&self, org: &OrgId, email: &Email) -> Result<User> {
        let record = self.user_record(org, email).await?;
        let primary = self.org_record(org).await?.primary_email;
        let mut users = self
            .users_with_mailboxes(org, vec![record], primary.as_deref())
            .await?;
        users.pop().ok_or(DomainError::NotFound(Entity::User))
    }

    async fn list_users(
        &self,
        org: &OrgId,
        state: Option<SyncStateKind>,
        page: PageRequest,
    ) -> Result<Page<User>> {
        let primary = self.org_record(org).await?.primary_email;
        let raw = match state {
            Some(kind) => {
                let partition = user_state_gsi_pk(org, kind.as_str());
                let query = self.state_index_query(&partition);
                self.query_page(query, GSI1_PK, &partition, &page).await?
            }
            None => {
                let partition = org_pk(org);
                let query = self
                    .client
                    .query()
                    .table_name(&self.tables.state)
                    .key_condition_expression("pk = :p AND begins_with(sk, :u)")
                    .expression_attribute_values(":p", s(&partition))
                    .expression_attribute_values(":u", s(USER_SK_PREFIX));
                self.query_page(query, PK, &partition, &page).await?
            }
        };
        let records = Self::decode_page::<UserRecord>(raw)?;
        Ok(Page {
            items: self
                .users_with_mailboxes(org, records.items, primary.as_deref())
                .await?,
            next: records.next,
        })
    }

    async fn change_role(
        &self,
        org: &OrgId,
        email: &Email,
        role: Role,
        expected_version: u64,
        audit: AuditEvent,
    ) -> Result<User> {
        let current = self.user_record(org, email).await?;
        if current.version != expected_version {
            return Err(DomainError::Conflict(Entity::User));
        }
        if current.role == role {
            return self.user(org, email).await;
        }
        let user_update = self.update_item(
            keys::key(org_pk(org), user_sk(email)),
            "SET #role = :role, version = :next",
            "version = :v",
            Item::from([
                (":role".into(), s(role.as_str())),
                (":next".into(), n(expected_version + 1)),
                (":v".into(), n(expected_version)),
            ]),
        )?;
        let user_update = with_role_name(user_update);
        let org_change = match role {
            Role::Member => self.admin_leaves(org, email)?,
            Role::Admin => self.admin_joins(org)?,
        };
        match self
            .transact(vec![user_update, org_change, self.audit_put(&audit)?])
            .await
        {
            Ok(()) => self.user(org, email).await,
            Err(TransactionFailure::Cancelled(r)) if r.first().is_some_and(Option::is_some) => {
                Err(DomainError::Conflict(Entity::User))
            }
            Err(TransactionFailure::Cancelled(_)) => Err(self.org_rule_failure(org, email).await),
            Err(TransactionFailure::Other(e)) => Err(e),
        }
    }

    async fn remove_user(
        &self,
        org: &OrgId,
        email: &Email,
        expected_version: u64,
        audit: AuditEvent,
    ) -> Result<()> {
        let current = self.user_record(org, email).await?;
        if current.version != expected_version {
            return Err(DomainError::Conflict(Entity::User));
        }
        let delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.tables.state)
            .set_key(Some(keys::key(org_pk(org), user_sk(email))))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(expected_version))
            .build()
            .map_err(unavailable)?;
        let org_change = match current.role {
            Role::Admin => self.admin_leaves(org, email)?,
            Role::Member => self.condition_check(
                keys::key(org_pk(org), ORG_SK),
                "attribute_not_exists(primary_email) OR primary_email <> :email",
                Some(Item::from([(":email".into(), s(email.key()))])),
            )?,
        };
        let items = vec![
            TransactWriteItem::builder().delete(delete).build(),
            org_change,
            self.audit_put(&audit)?,
        ];
        match self.transact(items).await {
            Ok(()) => {
                if current.sync_enabled {
                    self.recount_after_switch(org).await;
                }
                Ok(())
            }
            Err(TransactionFailure::Cancelled(r)) if r.first().is_some_and(Option::is_some) => {
                Err(DomainError::Conflict(Entity::User))
            }
            Err(TransactionFailure::Cancelled(_)) => Err(self.org_rule_failure(org, email).await),
            Err(TransactionFailure::Other(e)) => Err(e),
        }
    }

    async fn set_primary(&self, org: &OrgId, email: &Email, audit: AuditEvent) -> Result<()> {
        let items = vec![
            self.update_item(
                keys::key(org_pk(org), ORG_SK),
                "SET primary_email = :email",
                "attribute_exists(pk)",
                Item::from([(":email".into(), s(email.key()))]),
            )?,
            with_role_name(self.condition_check(
                keys::key(org_pk(org), user_sk(email)),
                "#role = :admin",
                Some(Item::from([(":admin".into(), s(Role::Admin.as_str()))])),
            )?),
            self.audit_put(&audit)?,
        ];
        match self.transact(items).await {
            Ok(()) => Ok(()),
            Err(TransactionFailure::Cancelled(r)) => {
                let conflict = r.iter().flatten().any(|code| code == "TransactionConflict");
                if r.first().is_some_and(Option::is_some) && !conflict {
                    return Err(DomainError::NotFound(Entity::Org));
                }
                if conflict {
                    return Err(DomainError::Conflict(Entity::Org));
                }
                // The check on the user failed: missing, or not an admin.
                self.user_record(org, email).await?;
                Err(DomainError::Rule(RuleViolation::PrimaryMustBeAdmin))
            }
            Err(TransactionFailure::Other(e)) => Err(e),
        }
    }

    async fn primary(&self, org: &OrgId) -> Result<Option<Email>> {
        let primary = self.org_record(org).await?.primary_email;
        match primary {
            Some(key) => Ok(Some(
                self.user_record(org, &Email::parse(&key).map_err(DomainError::from)?)
                    .await?
                    .email,
            )),
            None => Ok(None),
        }
    }

    async fn set_sync_enabled(
        &self,
        org: &OrgId,
        changes: &[(Email, bool)],
        audit: AuditEvent,
    ) -> Result<Vec<User>> {
        if changes.is_empty() {
            return Err(DomainError::invalid(
                "changes",
                "required",
                "name at least one user to change",
            ));
        }
        if changes.len() > MAX_BULK_CHANGES {
            return Err(DomainError::invalid(
                "changes",
                "too_many",
                format!("at most {MAX_BULK_CHANGES} users change in one request"),
            ));
        }
        let mut errors = Vec::new();
        for (i, (email, _)) in changes.iter().enumerate() {
            if changes[..i].iter().any(|(e, _)| e == email) {
                errors.push(FieldError::new(
                    format!("changes[{i}].email"),
                    "duplicate",
                    format!("{email} appears more than once"),
                ));
            }
        }
        let emails: Vec<Email> = changes.iter().map(|(e, _)| e.clone()).collect();
        let unique: Vec<Email> = emails
            .iter()
            .enumerate()
            .filter(|(i, e)| !emails[..*i].contains(e))
            .map(|(_, e)| e.clone())
            .collect();
        let found = self.users_by_key(org, &unique).await?;
        for (i, email) in emails.iter().enumerate() {
            let known = unique
                .iter()
                .zip(&found)
                .any(|(u, r)| u == email && r.is_some());
            if !known && !emails[..i].contains(email) {
                errors.push(FieldError::new(
                    format!("changes[{i}].email"),
                    "unknown_user",
                    format!("no user {email} in this organisation"),
                ));
            }
        }
        if !errors.is_empty() {
            errors.sort_by(|a, b| a.field.cmp(&b.field));
            return Err(DomainError::Invalid(errors));
        }
        let current = found;
        let switched = changes
            .iter()
            .zip(current.iter().flatten())
            .any(|((_, on), record)| *on != record.sync_enabled);
        let mut items = Vec::with_capacity(changes.len() + 1);
        for ((email, enabled), record) in changes.iter().zip(current.iter().flatten()) {
            let state = match (enabled, &record.state) {
                (false, _) => SyncState::Disabled,
                (true, SyncState::Disabled) if record.last_sync_at.is_some() => SyncState::Ok,
                (true, SyncState::Disabled) => SyncState::NeverSynced,
                (true, other) => other.clone(),
            };
            let mut values = state_values(org, &state)?;
            values.insert(":on".into(), AttributeValue::Bool(*enabled));
            values.insert(":v".into(), n(record.version));
            values.insert(":next".into(), n(record.version + 1));
            items.push(self.update_item(
                keys::key(org_pk(org), user_sk(email)),
                "SET sync_enabled = :on, #state = :state, gsi1pk = :gsi, version = :next",
                "version = :v",
                values,
            )?);
        }
        let items = items.into_iter().map(with_state_name).collect::<Vec<_>>();
        let mut items = items;
        items.push(self.audit_put(&audit)?);
        match self.transact(items).await {
            Ok(()) => {}
            Err(TransactionFailure::Cancelled(reasons)) => {
                let rows = reasons
                    .iter()
                    .take(changes.len())
                    .enumerate()
                    .filter(|(_, r)| r.is_some())
                    .map(|(i, _)| {
                        FieldError::new(
                            format!("changes[{i}].email"),
                            "changed_concurrently",
                            "this user changed meanwhile; reload and try again",
                        )
                    })
                    .collect::<Vec<_>>();
                return Err(if rows.is_empty() {
                    DomainError::Conflict(Entity::User)
                } else {
                    DomainError::Invalid(rows)
                });
            }
            Err(TransactionFailure::Other(e)) => return Err(e),
        }
        if switched {
            self.recount_after_switch(org).await;
        }
        let primary = self.org_record(org).await?.primary_email;
        let updated = self.users_by_key(org, &emails).await?;
        self.users_with_mailboxes(
            org,
            updated.into_iter().flatten().collect(),
            primary.as_deref(),
        )
        .await
    }

    async fn recount_sync(&self, org: &OrgId) -> Result<SyncCounts> {
        let kept = self.kept_syncing(org).await?;
        Ok(SyncCounts {
            syncing: self.recount_syncing(org, kept).await?,
            in_error: self.count_in_error(org).await?,
        })
    }

    async fn sync_enabled_users(&self, org: &OrgId, page: PageRequest) -> Result<Page<Email>> {
        let partition = org_pk(org);
        let query = self
            .sync_enabled_query(org)
            .projection_expression("pk, sk, email");
        let raw = self.query_page(query, PK, &partition, &page).await?;
        let items = raw
            .items
            .iter()
            .filter_map(|i| {
                i.get("email")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|e| Email::parse(e).ok())
            })
            .collect();
        Ok(Page {
            items,
            next: raw.next,
        })
    }

    async fn set_directory_link(
        &self,
        org: &OrgId,
        email: &Email,
        link: Option<&DirectoryLink>,
    ) -> Result<()> {
        let update = self
            .client
            .update_item()
            .table_name(&self.tables.state)
            .set_key(Some(keys::key(org_pk(org), user_sk(email))))
            .condition_expression("attribute_exists(pk)");
        let update = match link {
            Some(link) => update
                .update_expression("SET directory = :d")
                .expression_attribute_values(
                    ":d",
                    serde_dynamo::to_attribute_value(link).map_err(unavailable)?,
                ),
            None => update.update_expression("REMOVE directory"),
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) if crate::sdk_error::is_conditional_failure(&e) => {
                Err(DomainError::NotFound(Entity::User))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn set_sync_state(&self, org: &OrgId, email: &Email, state: &SyncState) -> Result<()> {
        // Sync outcomes leave `version` alone: it guards what admins edit, and a background run
        // must not turn an admin's save into a conflict.
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.state)
            .set_key(Some(keys::key(org_pk(org), user_sk(email))))
            .update_expression("SET #state = :state, gsi1pk = :gsi")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#state", "state")
            .set_expression_attribute_values(Some(state_values(org, state)?))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if crate::sdk_error::is_conditional_failure(&e) => {
                Err(DomainError::NotFound(Entity::User))
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// `role` and `state` are DynamoDB reserved words: expressions name them through placeholders.
fn with_role_name(item: TransactWriteItem) -> TransactWriteItem {
    with_name(item, "#role", "role")
}

fn with_state_name(item: TransactWriteItem) -> TransactWriteItem {
    with_name(item, "#state", "state")
}

fn with_name(mut item: TransactWriteItem, placeholder: &str, name: &str) -> TransactWriteItem {
    let names = Some(std::collections::HashMap::from([(
        placeholder.to_owned(),
        name.to_owned(),
    )]));
    if let Some(u) = item.update.as_mut() {
        u.expression_attribute_names = names;
    } else if let Some(c) = item.condition_check.as_mut() {
        c.expression_attribute_names = names;
    }
    item
}
