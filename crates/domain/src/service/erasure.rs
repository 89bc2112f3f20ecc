//! Erasing one person (a data subject's request): every archived message of the org that an
//! address sent, received or was copied on is deleted, in every mailbox, and the address joins
//! the capture policy's exclusions so the sync does not bring it back. The archive finds the
//! messages through its person index, which names each message's participants outside the
//! org's own domains (`internal_domains`); the org's own people's mail goes by purging their
//! mailboxes.

use time::OffsetDateTime;

use super::Services;
use super::access::{Action, Principal, authorize};
use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::capture_policy::{CapturePolicy, MAX_ENTRIES};
use crate::error::{DomainError, Entity, FieldError, Result};
use crate::ids::Email;

/// How long one call works before answering; a person in very many messages takes more calls.
const ERASE_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);
const ERASE_CHUNK: usize = 200;

/// What one erasure call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureReport {
    pub address: Email,
    /// Archived messages deleted by this call.
    pub deleted: u64,
    /// The mailboxes they were in (each once).
    pub mailboxes: Vec<Email>,
    /// Nothing of the person is left; otherwise call again to go on.
    pub complete: bool,
    /// This call added the address to the capture policy's exclusions.
    pub excluded_now: bool,
}

impl Services {
    /// Erases `address` from the org's archive (admins). Idempotent: a repeat finds nothing
    /// left and says so. A sync run already under way (at most one worker invocation) may still
    /// archive a message it fetched before the exclusion: repeat the erasure after it to confirm.
    pub async fn erase_person(
        &self,
        p: &Principal,
        address: &str,
        now: OffsetDateTime,
    ) -> Result<ErasureReport> {
        authorize(p, Action::ChangeSettings)?;
        // Canonical (lower-case) form: it is what the index and the exclusion list hold.
        let address = Email::parse(address)
            .and_then(|a| Email::parse(a.key()))
            .map_err(|e| {
                DomainError::Invalid(vec![FieldError::new("address", e.code, e.message)])
            })?;
        // The org's own people are not erased this way (it would empty every thread they are
        // on and keep them out of capture for good): their mail goes by purging their mailbox.
        let policy = self.store.capture_policy(&p.org).await?;
        let own = match self.store.user(&p.org, &address).await {
            Ok(_) => true,
            Err(DomainError::NotFound(Entity::User)) => false,
            Err(e) => return Err(e),
        };
        if own || crate::capture_policy::in_domains(address.key(), &policy.internal_domains) {
            return Err(DomainError::invalid(
                "address",
                "own_person",
                "this address is one of the org's own people (a user, or in the capture policy's internal domains): switch their sync off and purge their mailbox instead",
            ));
        }
        // Kept out first, so runs from now on capture nothing of theirs.
        let excluded_now = !policy.excluded_addresses.contains(&address);
        if excluded_now {
            if policy.excluded_addresses.len() >= MAX_ENTRIES {
                return Err(DomainError::Precondition(
                    "the capture policy's excluded addresses are full; remove some, then erase again",
                ));
            }
            let mut excluded_addresses = policy.excluded_addresses.clone();
            excluded_addresses.push(address.clone());
            let next = CapturePolicy {
                excluded_addresses,
                version: policy.version + 1,
                ..policy.clone()
            };
            let audit = event(p, now, AuditAction::CapturePolicyChanged, "capture_policy")
                .change(Some(&policy), Some(&next));
            self.store
                .save_capture_policy(&p.org, &next, audit)
                .await
                .map_err(|e| match e {
                    // Someone changed the policy meanwhile: the caller repeats.
                    DomainError::Conflict(_) => DomainError::Conflict(Entity::Settings),
                    other => other,
                })?;
        }
        // The request is in the audit log before anything is deleted.
        self.store
            .append(event(
                p,
                now,
                AuditAction::PersonErased,
                format!("person:{}", address.key()),
            ))
            .await?;
        let started = std::time::Instant::now();
        let mut report = ErasureReport {
            address: address.clone(),
            deleted: 0,
            mailboxes: Vec::new(),
            complete: false,
            excluded_now,
        };
        loop {
            let erased = self
                .store
                .erase_person(&p.org, &address, ERASE_CHUNK)
                .await?;
            if erased.is_empty() {
                report.complete = true;
                break;
            }
            report.deleted += erased.len() as u64;
            for (mailbox, _) in erased {
                if !report.mailboxes.contains(&mailbox) {
                    report.mailboxes.push(mailbox);
                }
            }
            if started.elapsed() >= ERASE_BUDGET {
                break;
            }
        }
        report.mailboxes.sort_by(|a, b| a.key().cmp(b.key()));
        Ok(report)
    }
}

fn event(
    p: &Principal,
    at: OffsetDateTime,
    action: AuditAction,
    object: impl Into<String>,
) -> AuditEvent {
    AuditEvent::new(&p.org, at, Actor::User(p.email.clone()), action, object)
}
