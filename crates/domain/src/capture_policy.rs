//! What the org keeps out of its archive: messages that involve an excluded address or domain
//! (a law firm, a personal-mail provider, an HR mailbox), and optionally internal mail — where
//! every participant is in one of the org's own domains. Applied when mail is captured; a
//! change affects new captures only.
//!
//! The rule: a message is kept out if ANY participant (from, to, cc, bcc) is excluded — one
//! privileged correspondent is enough to make a thread private. A domain covers its subdomains.

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, FieldError};
use crate::ids::Email;
use crate::message::CapturedMessage;

/// More than this many entries per list is a mistake, not a policy.
pub const MAX_ENTRIES: usize = 500;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturePolicy {
    /// Lower-case domain names.
    pub excluded_domains: Vec<String>,
    pub excluded_addresses: Vec<Email>,
    /// Keep out mail whose participants are all in `internal_domains`.
    pub skip_internal: bool,
    pub internal_domains: Vec<String>,
    /// Archived mail is deleted this many days after it was received; `None` keeps it. A
    /// change applies to mail captured from then on (earlier items keep their expiry).
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Bumped by every change; 0 = never set (nothing excluded).
    pub version: u64,
}

fn domain(field: &str, i: usize, raw: &str) -> Result<String, FieldError> {
    let d = raw.trim().trim_start_matches('@').to_ascii_lowercase();
    // A domain is what an address after '@' may be: reuse the email rules.
    Email::parse(&format!("x@{d}")).map(|_| d).map_err(|_| {
        FieldError::new(
            format!("{field}[{i}]"),
            "invalid_domain",
            format!(
                "'{}' is not a domain name",
                raw.chars().take(80).collect::<String>()
            ),
        )
    })
}

fn bounded(field: &str, len: usize) -> Result<(), FieldError> {
    if len > MAX_ENTRIES {
        return Err(FieldError::new(
            field,
            "too_many",
            format!("at most {MAX_ENTRIES} entries"),
        ));
    }
    Ok(())
}

/// A requested policy, as an admin sends it (validated by [`CapturePolicy::parse`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturePolicyChange {
    pub excluded_domains: Vec<String>,
    pub excluded_addresses: Vec<String>,
    pub skip_internal: bool,
    pub internal_domains: Vec<String>,
    pub retention_days: Option<u32>,
}

/// Longest retention one can set: ten years.
pub const MAX_RETENTION_DAYS: u32 = 3650;

impl CapturePolicy {
    /// Validates every entry and reports all problems at once; entries are normalised and
    /// de-duplicated.
    pub fn parse(change: &CapturePolicyChange, version: u64) -> Result<Self, DomainError> {
        let CapturePolicyChange {
            excluded_domains,
            excluded_addresses,
            skip_internal,
            internal_domains,
            retention_days,
        } = change;
        let skip_internal = *skip_internal;
        let mut errors = Vec::new();
        let mut domains = |field: &str, list: &[String]| -> Vec<String> {
            if let Err(e) = bounded(field, list.len()) {
                errors.push(e);
            }
            let mut out: Vec<String> = list
                .iter()
                .enumerate()
                .filter_map(|(i, d)| domain(field, i, d).map_err(|e| errors.push(e)).ok())
                .collect();
            out.sort();
            out.dedup();
            out
        };
        let excluded_domains = domains("excluded_domains", excluded_domains);
        let internal_domains = domains("internal_domains", internal_domains);
        if let Err(e) = bounded("excluded_addresses", excluded_addresses.len()) {
            errors.push(e);
        }
        let mut addresses: Vec<Email> = excluded_addresses
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                Email::parse(a)
                    .map_err(|e| errors.push(e.at(format!("excluded_addresses[{i}]"))))
                    .ok()
            })
            .collect();
        addresses.sort_by(|a, b| a.key().cmp(b.key()));
        addresses.dedup();
        if skip_internal && internal_domains.is_empty() {
            errors.push(FieldError::new(
                "internal_domains",
                "required",
                "name the org's own domains to skip internal mail",
            ));
        }
        if retention_days.is_some_and(|d| d == 0 || d > MAX_RETENTION_DAYS) {
            errors.push(FieldError::new(
                "retention_days",
                "out_of_range",
                format!("keep mail 1 to {MAX_RETENTION_DAYS} days, or null to keep it"),
            ));
        }
        if !errors.is_empty() {
            return Err(DomainError::Invalid(errors));
        }
        Ok(Self {
            excluded_domains,
            excluded_addresses: addresses,
            skip_internal,
            internal_domains,
            retention_days: *retention_days,
            version,
        })
    }

    /// How long captured mail is kept, if limited.
    pub fn keep_for(&self) -> Option<time::Duration> {
        self.retention_days
            .map(|d| time::Duration::days(i64::from(d)))
    }

    /// Whether the message is archived now: admitted, and not already past the retention
    /// (a backfill reaches back further than the org keeps mail).
    pub fn keeps(&self, message: &CapturedMessage, now: time::OffsetDateTime) -> bool {
        let expired = self.keep_for().is_some_and(|keep| {
            message
                .received_at
                .or(message.sent_at)
                .is_some_and(|at| at + keep <= now)
        });
        !expired && self.admits(message)
    }

    /// Whether the message may be archived.
    pub fn admits(&self, message: &CapturedMessage) -> bool {
        let participants = message.participant_addresses();
        let excluded = participants.iter().any(|p| {
            in_domains(p, &self.excluded_domains)
                || self.excluded_addresses.iter().any(|a| a.key() == p)
        });
        let internal = self.skip_internal
            && !participants.is_empty()
            && participants
                .iter()
                .all(|p| in_domains(p, &self.internal_domains));
        !(excluded || internal)
    }
}

/// Whether a lower-case address is in one of `domains` or their subdomains.
pub(crate) fn in_domains(address: &str, domains: &[String]) -> bool {
    address.rsplit_once('@').is_some_and(|(_, d)| {
        domains
            .iter()
            .any(|x| d == x || d.ends_with(&format!(".{x}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::MailFolder;
    use crate::message::Recipient;

    fn mail(from: &str, to: &[&str]) -> CapturedMessage {
        let r = |a: &str| Recipient {
            name: None,
            address: Some(a.into()),
        };
        CapturedMessage {
            from: Some(r(from)),
            to: to.iter().map(|a| r(a)).collect(),
            ..CapturedMessage::new("1", MailFolder::Inbox)
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn one_excluded_participant_keeps_the_message_out() {
        let p = CapturePolicy::parse(
            &CapturePolicyChange {
                excluded_domains: s(&["LawFirm.com"]),
                excluded_addresses: s(&["hr@contoso.com"]),
                ..Default::default()
            },
            1,
        )
        .unwrap();
        assert!(!p.admits(&mail("partner@lawfirm.com", &["adele@contoso.com"])));
        assert!(
            !p.admits(&mail("adele@contoso.com", &["x@mail.lawfirm.com"])),
            "subdomains"
        );
        assert!(!p.admits(&mail("adele@contoso.com", &["HR@Contoso.com"])));
        assert!(p.admits(&mail("adele@contoso.com", &["buyer@fabrikam.com"])));
        assert!(
            p.admits(&mail("adele@contoso.com", &["x@notlawfirm.com"])),
            "not a suffix match"
        );
    }

    #[test]
    fn internal_mail_is_skipped_only_when_every_participant_is_internal() {
        let p = CapturePolicy::parse(
            &CapturePolicyChange {
                skip_internal: true,
                internal_domains: s(&["contoso.com"]),
                ..Default::default()
            },
            1,
        )
        .unwrap();
        assert!(!p.admits(&mail("adele@contoso.com", &["alex@eu.contoso.com"])));
        assert!(p.admits(&mail("adele@contoso.com", &["buyer@fabrikam.com"])));
    }

    #[test]
    fn mail_older_than_the_retention_is_not_kept() {
        let p = CapturePolicy::parse(
            &CapturePolicyChange {
                retention_days: Some(30),
                ..Default::default()
            },
            1,
        )
        .unwrap();
        let now = time::OffsetDateTime::now_utc();
        let mut old = mail("a@fabrikam.com", &["b@contoso.com"]);
        old.received_at = Some(now - time::Duration::days(31));
        let mut recent = old.clone();
        recent.received_at = Some(now - time::Duration::days(29));
        assert!(!p.keeps(&old, now));
        assert!(p.keeps(&recent, now));
    }

    #[test]
    fn bad_entries_are_all_reported() {
        let bad = CapturePolicyChange {
            excluded_domains: s(&["not a domain", "ok.com"]),
            excluded_addresses: s(&["nope"]),
            skip_internal: true,
            internal_domains: vec![],
            retention_days: Some(0),
        };
        let Err(DomainError::Invalid(errors)) = CapturePolicy::parse(&bad, 1) else {
            panic!("accepted")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "excluded_domains[0]",
                "excluded_addresses[0]",
                "internal_domains",
                "retention_days"
            ]
        );
    }
}
