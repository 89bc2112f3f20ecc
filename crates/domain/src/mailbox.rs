//! Per-mailbox sync bookkeeping, kept on one item per mailbox: the delta position of each
//! folder, the lease of a queued or running job, and what the runs counted and when.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{Email, OrgId};

/// The folders we capture, by their Graph well-known names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailFolder {
    Inbox,
    SentItems,
}

impl MailFolder {
    pub const ALL: [Self; 2] = [Self::Inbox, Self::SentItems];

    /// The well-known folder name Graph uses in `/mailFolders/{name}`.
    pub fn well_known_name(self) -> &'static str {
        match self {
            Self::Inbox => "inbox",
            Self::SentItems => "sentitems",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.well_known_name() == s)
    }
}

/// Where a folder's delta chain stands. Both links are opaque URLs, followed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "url", rename_all = "snake_case")]
pub enum SyncLink {
    /// Mid-round: the next page of the current round.
    Next(String),
    /// Round complete: the link that returns changes since.
    Delta(String),
}

impl SyncLink {
    pub fn url(&self) -> &str {
        match self {
            SyncLink::Next(u) | SyncLink::Delta(u) => u,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxCursor {
    pub org: OrgId,
    pub mailbox: Email,
    pub folder: MailFolder,
    pub link: SyncLink,
    #[serde(with = "time::serde::rfc3339")]
    pub saved_at: OffsetDateTime,
    /// Set while the folder is being read again from scratch after its delta link expired
    /// (410): when that resync round began. Kept on every page of the round, so a crash
    /// mid-round still knows, at the round's end, that archived messages written before this
    /// instant and not returned again are gone. Absent on older items (read as `None`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub resync_started_at: Option<OffsetDateTime>,
}

/// Who holds a mailbox (a queued or running job) and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub until: OffsetDateTime,
}

/// Which write of which run: stamped on the messages a write counts as new, and on the mailbox
/// when the write commits its counts. A rerun after a crash can then tell a message the crashed
/// attempt archived but never counted (it is new) from one already counted (an update).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WriteMark {
    /// Sorts by the run's start (see [`WriteMark::run_id`]).
    pub run: String,
    pub write: u64,
}

impl WriteMark {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.run, self.write)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (run, write) = text.rsplit_once(':')?;
        Some(Self {
            run: run.to_owned(),
            write: write.parse().ok()?,
        })
    }

    /// A run id that sorts by when the run started (milliseconds, then a random part), so a
    /// mark tells whether its run came before or after the mailbox's last committing run.
    pub fn run_id(started: time::OffsetDateTime) -> String {
        let millis = (started.unix_timestamp_nanos() / 1_000_000).max(0);
        Self::run_id_at(millis)
    }

    fn run_id_at(millis: i128) -> String {
        format!("{millis:013}-{}", uuid::Uuid::new_v4().simple())
    }

    /// The id of a run that follows `last` (the mailbox's last commit as the run found it):
    /// after it in order whatever the clocks say, so a run's marks always sort after those of
    /// the runs it follows.
    pub fn run_id_after(last: Option<&WriteMark>, now: time::OffsetDateTime) -> String {
        let millis = (now.unix_timestamp_nanos() / 1_000_000).max(0);
        let after = last
            .and_then(|m| m.run.split_once('-'))
            .and_then(|(ms, _)| ms.parse::<i128>().ok())
            .map_or(0, |ms| ms + 1);
        Self::run_id_at(millis.max(after))
    }

    /// Whether a message marked with this has been counted, given the mailbox's last committed
    /// mark. The last committing run's own writes are counted up to its last commit. A run
    /// after it committed nothing (else it would be the last): its marks are uncounted. A run
    /// before it is counted: the run after a crash replays the crashed page and re-marks what it
    /// counts, so an older uncounted mark survives only on a message Microsoft left out of the
    /// replayed page. (A run's id sorts after the last commit it follows, whatever the hosts'
    /// clocks; and only one run writes a mailbox at a time: see `RunClaim`.)
    ///
    /// `stopped` holds the last commit of each run that stopped before its finishing write
    /// (`MailboxState::stopped_runs`): what such a run archived after it was never counted,
    /// even once the runs after it have committed. Microsoft may leave a message out of a
    /// replayed page; it then comes back, later, still uncounted.
    pub fn counted(&self, last_committed: Option<&WriteMark>, stopped: &[WriteMark]) -> bool {
        if stopped
            .iter()
            .any(|s| s.run == self.run && self.write > s.write)
        {
            return false;
        }
        match last_committed {
            None => false,
            Some(last) if self.run == last.run => self.write <= last.write,
            Some(last) => self.run < last.run,
        }
    }
}

/// How many stopped runs a mailbox remembers (see [`MailboxState::stopped_runs`]): crashes are
/// rare, and a message a stopped run archived comes back within a few rounds or when it next
/// changes; the oldest are forgotten, so the mailbox item stays small.
pub const STOPPED_RUNS_KEPT: usize = 8;

/// A run's claim on a mailbox (see `MailboxStateStore::claim_run`): the job holding the lease,
/// the run, the mailbox's last commit the run follows, the claim the run found on the mailbox
/// (the claim is taken only while that one is still there) and the mailbox's stopped runs as
/// the claim leaves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunClaim {
    pub holder: String,
    pub run: String,
    pub follows: Option<WriteMark>,
    pub found_claim: Option<String>,
    pub stopped_runs: Vec<WriteMark>,
}

/// The mailbox's item as a run starts: its lease (running or not), its folders' positions and
/// the mark of its last committed write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxState {
    pub lease: Option<Lease>,
    pub cursors: Vec<MailboxCursor>,
    pub last_mark: Option<WriteMark>,
    /// Until when a run's claim holds the mailbox (see `RunClaim`), if one does.
    pub claim_until: Option<OffsetDateTime>,
    /// The run whose claim the item holds: a running one, or one that stopped before its
    /// finishing write (whose claim is left, ended, as a record that it stopped).
    pub claimed_by: Option<String>,
    /// The last commit of each run that stopped before finishing (write 0: it committed
    /// nothing), oldest first; see [`WriteMark::counted`].
    pub stopped_runs: Vec<WriteMark>,
}

impl MailboxState {
    pub fn cursor(&self, folder: MailFolder) -> Option<&MailboxCursor> {
        self.cursors.iter().find(|c| c.folder == folder)
    }

    /// The lease, if it still runs at `now`.
    pub fn running_lease(&self, now: OffsetDateTime) -> Option<&Lease> {
        self.lease.as_ref().filter(|l| l.until >= now)
    }

    /// The stopped runs as run `run` finds them: the item's, and the run whose claim is left on
    /// the item when that is another run (it stopped, or is still running and will refuse this
    /// one's claim), at its last commit. The newest [`STOPPED_RUNS_KEPT`].
    pub fn stopped_runs_seen_by(&self, run: &str) -> Vec<WriteMark> {
        let mut stopped = self.stopped_runs.clone();
        if let Some(other) = self.claimed_by.as_deref().filter(|c| *c != run)
            && !stopped.iter().any(|s| s.run == other)
        {
            let write = match &self.last_mark {
                Some(last) if last.run == other => last.write,
                _ => 0,
            };
            stopped.push(WriteMark {
                run: other.to_owned(),
                write,
            });
        }
        let extra = stopped.len().saturating_sub(STOPPED_RUNS_KEPT);
        stopped.drain(..extra);
        stopped
    }
}

/// What a run has not written yet: the folders' new positions and the counts of the pages they
/// cover. Committed in one write, so a count and its position land together or not at all and a
/// replayed page is never counted twice. A page that stored nothing waits here for the next
/// write (losing it costs only a replay of an empty page), which is what lets an unchanged
/// mailbox cost one write at the end of its run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub cursors: Vec<MailboxCursor>,
    pub added: crate::user::MessageCounters,
    /// The write's mark, committed with its counts (see [`WriteMark`]).
    pub mark: Option<WriteMark>,
    /// The mailbox's last committed mark as the run knows it: the write commits only while it
    /// still is the last. Two deliveries of one job running at once hold the same lease; this
    /// is what lets only one of them commit (each commit would count the same messages).
    pub follows: Option<WriteMark>,
    /// The folders start over: positions this write does not set are forgotten (the user was
    /// looked up again and the old links name another directory object).
    pub restart: bool,
}

impl Checkpoint {
    /// A folder's newer position replaces its older one.
    pub fn advance(&mut self, cursor: MailboxCursor) {
        self.cursors.retain(|c| c.folder != cursor.folder);
        self.cursors.push(cursor);
    }

    pub fn add(&mut self, counters: crate::user::MessageCounters) {
        self.added = self.added + counters;
    }

    pub fn is_empty(&self) -> bool {
        self.cursors.is_empty()
            && self.added == crate::user::MessageCounters::default()
            && !self.restart
    }
}

#[cfg(test)]
mod tests {
    use super::{MailboxState, STOPPED_RUNS_KEPT, WriteMark};
    use time::OffsetDateTime;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn mark(run: &str, write: u64) -> WriteMark {
        WriteMark {
            run: run.into(),
            write,
        }
    }

    #[test]
    fn a_mark_is_counted_once_its_write_committed() {
        let last = mark("0002", 3);
        // The last committing run: up to its last commit.
        assert!(mark("0002", 3).counted(Some(&last), &[]));
        assert!(!mark("0002", 4).counted(Some(&last), &[]));
        // A later run committed nothing; an earlier one is settled.
        assert!(!mark("0003", 1).counted(Some(&last), &[]));
        assert!(mark("0001", 9).counted(Some(&last), &[]));
        // ... unless it stopped: what it wrote after its last commit never counts.
        let stopped = [mark("0001", 5)];
        assert!(mark("0001", 5).counted(Some(&last), &stopped));
        assert!(!mark("0001", 6).counted(Some(&last), &stopped));
        // Nothing ever committed.
        assert!(!mark("0001", 1).counted(None, &[]));
        assert_eq!(WriteMark::decode(&last.encode()), Some(last));
        let far = mark(&WriteMark::run_id(now() + time::Duration::hours(1)), 1);
        assert!(
            WriteMark::run_id_after(Some(&far), now()) > far.run,
            "after the run it follows"
        );
        let id = WriteMark::run_id(time::OffsetDateTime::now_utc());
        assert!(
            id < WriteMark::run_id(time::OffsetDateTime::now_utc() + time::Duration::seconds(1))
        );
    }

    #[test]
    fn a_claim_left_by_another_run_records_where_that_run_stopped() {
        let state = |claimed_by: &str, last: WriteMark, stopped: Vec<WriteMark>| MailboxState {
            claimed_by: Some(claimed_by.into()),
            last_mark: Some(last),
            stopped_runs: stopped,
            ..Default::default()
        };
        // It committed up to write 4, or nothing at all.
        assert_eq!(
            state("0002", mark("0002", 4), vec![]).stopped_runs_seen_by("0003"),
            vec![mark("0002", 4)]
        );
        assert_eq!(
            state("0002", mark("0001", 9), vec![]).stopped_runs_seen_by("0003"),
            vec![mark("0002", 0)]
        );
        // Its own claim is no record; one already kept is kept once.
        assert!(
            state("0003", mark("0001", 9), vec![])
                .stopped_runs_seen_by("0003")
                .is_empty()
        );
        assert_eq!(
            state("0002", mark("0002", 4), vec![mark("0002", 4)]).stopped_runs_seen_by("0003"),
            vec![mark("0002", 4)]
        );
        // The oldest are forgotten.
        let many: Vec<WriteMark> = (0..STOPPED_RUNS_KEPT as u64)
            .map(|i| mark(&format!("000{i}"), 1))
            .collect();
        let seen = state("0100", mark("0100", 2), many.clone()).stopped_runs_seen_by("0200");
        assert_eq!(seen.len(), STOPPED_RUNS_KEPT);
        assert_eq!(seen[0], many[1]);
        assert_eq!(seen.last(), Some(&mark("0100", 2)));
    }
}
