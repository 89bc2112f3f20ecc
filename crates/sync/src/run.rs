//! One mailbox run's context: the job, its deadline, what it has done and what it has not
//! written yet. Passed to every step instead of a long argument list and out-parameters.

use super::*;
use o365_domain::connection::AppRegistration;
use o365_domain::ids::TenantId;
use o365_domain::mailbox::{Checkpoint, MailboxState, RunClaim, WriteMark};

/// How long a run's claim lasts beyond its deadline: the invocation's margin after it, and
/// clock skew between hosts.
const CLAIM_BEYOND_DEADLINE: Duration = Duration::from_secs(60);

pub(crate) struct Run<'a> {
    pub job: &'a SyncJob,
    pub deadline: Instant,
    /// The user's sync state as the run found it: written again only if the run changes it.
    pub state_before: Option<SyncState>,
    pub report: MailboxReport,
    /// Positions and counts not written yet (pages that stored nothing wait for the next write).
    pub pending: Checkpoint,
    /// Why the run failed, for its history record.
    pub failure: Option<Failure>,
    /// This run's id in the marks of its writes (a rerun is a new run).
    id: String,
    /// Writes committed by this run.
    writes: u64,
    /// The mailbox's last committed mark: the mailbox's as the run found it, then this run's.
    pub last_committed: Option<WriteMark>,
    /// Whether the run holds its claim on the mailbox (taken before its first archive write).
    claimed: bool,
    /// The claim the run found on the mailbox (its claim replaces only that one).
    found_claim: Option<String>,
    /// Runs that stopped before finishing, as this run found them (see `WriteMark::counted`).
    pub stopped_runs: Vec<WriteMark>,
    /// Whether the run has archived messages since its last commit (set before the write: a
    /// write that fails may have landed in part).
    pub archived_since_commit: bool,
}

impl<'a> Run<'a> {
    pub fn new(job: &'a SyncJob, deadline: Instant) -> Self {
        Self {
            job,
            deadline,
            state_before: None,
            report: MailboxReport::default(),
            pending: Checkpoint::default(),
            failure: None,
            id: WriteMark::run_id(now()),
            writes: 0,
            last_committed: None,
            claimed: false,
            found_claim: None,
            stopped_runs: Vec::new(),
            archived_since_commit: false,
        }
    }

    /// The run follows the mailbox's last commit as it found it; its id sorts after that
    /// commit's run.
    pub fn follow(&mut self, found: &MailboxState) {
        self.id = WriteMark::run_id_after(found.last_mark.as_ref(), now());
        self.last_committed = found.last_mark.clone();
        self.see_claim(found);
    }

    /// Whether another run's claim is left on the mailbox: the run then claims before any
    /// write, so that its commits never drop the record of a run that stopped.
    fn found_another_claim(&self) -> bool {
        !self.claimed && self.found_claim.as_deref().is_some_and(|c| c != self.id)
    }

    /// The claim on the mailbox as last read, and the stopped runs it tells of.
    fn see_claim(&mut self, found: &MailboxState) {
        self.found_claim = found.claimed_by.clone();
        self.stopped_runs = found.stopped_runs_seen_by(&self.id);
    }

    /// The mark of the write not yet committed: messages a page archives for the first time
    /// carry it, and the write that commits the page's counts records it.
    pub fn pending_mark(&self) -> WriteMark {
        WriteMark {
            run: self.id.clone(),
            write: self.writes + 1,
        }
    }

    /// Names the pending write's mark and the commit it follows.
    fn seal_pending(&mut self) {
        self.pending.mark = Some(self.pending_mark());
        self.pending.follows = self.last_committed.clone();
    }

    fn committed(&mut self) {
        self.last_committed = Some(self.pending_mark());
        self.writes += 1;
        self.pending = Checkpoint::default();
        self.archived_since_commit = false;
    }

    /// Counted in the run's report and in the next write to the mailbox.
    pub fn count(&mut self, counters: MessageCounters) {
        self.report.counters = self.report.counters + counters;
        self.pending.add(counters);
    }
}

/// Where a run reads mail from: the tenant, the app, the directory user and the org's policy.
pub(crate) struct MailSourceRef {
    pub tenant: TenantId,
    pub app: AppRegistration,
    pub user_id: String,
    pub policy: CapturePolicy,
    pub backfill_since: Option<OffsetDateTime>,
}

impl SyncEngine {
    /// Writes what the run has not written yet (one write; nothing when there is nothing).
    pub(crate) async fn flush(&self, run: &mut Run<'_>) -> o365_domain::Result<()> {
        if run.pending.is_empty() {
            return Ok(());
        }
        self.claim_before_commit(run).await?;
        let job = run.job;
        run.seal_pending();
        self.stores
            .state
            .checkpoint(&job.org, &job.mailbox, &job.job_id, &run.pending)
            .await?;
        run.committed();
        Ok(())
    }

    /// Claims the mailbox before the run's first archive write: a run that stores nothing
    /// never claims. Refused while another run's claim holds the mailbox (`Busy`: the job
    /// comes back when that claim ends), or when another run, or another delivery of this job,
    /// has moved the mailbox on (`Conflict`: that run carries on).
    pub(crate) async fn claim(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        if run.claimed {
            return Ok(());
        }
        let job = run.job;
        let s = &self.stores.state;
        // A second try when the claim the run found has changed meanwhile (another delivery
        // claimed and stopped without committing): the mailbox is still the run's to take.
        for _ in 0..2 {
            let claim = RunClaim {
                holder: job.job_id.clone(),
                run: run.id.clone(),
                follows: run.last_committed.clone(),
                found_claim: run.found_claim.clone(),
                stopped_runs: run.stopped_runs.clone(),
            };
            let t = now();
            // The claim outlasts every write the run can still make after its deadline (the
            // invocation keeps a margin beyond it) and the hosts' clock skew; a crashed run's
            // claim still ends long before the queue delivers its job again.
            let until = plus(
                t,
                run.deadline.saturating_duration_since(Instant::now()) + CLAIM_BEYOND_DEADLINE,
            );
            if s.claim_run(&job.org, &job.mailbox, &claim, until, t)
                .await?
            {
                run.claimed = true;
                return Ok(());
            }
            let found = s.mailbox(&job.org, &job.mailbox).await?;
            let t = now();
            if found.last_mark != run.last_committed {
                break;
            }
            // Its own claim landed (a retried request whose first answer was lost).
            if found.claimed_by.as_deref() == Some(run.id.as_str()) {
                run.claimed = true;
                return Ok(());
            }
            if let Some(until) = found.claim_until.filter(|until| *until > t) {
                return Err(Stop::Busy((until - t).unsigned_abs()));
            }
            run.see_claim(&found);
        }
        Err(Stop::Store(o365_domain::DomainError::Conflict(
            o365_domain::Entity::Lease,
        )))
    }

    /// A run that found another run's claim left on the mailbox claims before its first
    /// commit, even one that archived nothing: the claim records the run that stopped. Refused,
    /// the commit would be refused too.
    async fn claim_before_commit(&self, run: &mut Run<'_>) -> o365_domain::Result<()> {
        if !run.found_another_claim() {
            return Ok(());
        }
        match self.claim(run).await {
            Ok(()) => Ok(()),
            Err(Stop::Store(e)) => Err(e),
            Err(_) => Err(o365_domain::DomainError::Conflict(
                o365_domain::Entity::Lease,
            )),
        }
    }

    /// Ends the claim of a run that stopped before its finishing write (best effort: a claim
    /// left behind ends at its invocation's deadline).
    pub(crate) async fn end_claim(&self, run: &mut Run<'_>) {
        if !run.claimed {
            return;
        }
        let job = run.job;
        if let Err(e) = self
            .stores
            .state
            .end_claim(&job.org, &job.mailbox, &run.id, run.archived_since_commit)
            .await
        {
            tracing::warn!(org = %job.org, mailbox = job.mailbox.key(), error = %e, "cannot end the run's claim; it ends at the invocation's deadline");
        }
        run.claimed = false;
    }

    /// The run's last writes: the mailbox item (positions, counts, time, lease released) and,
    /// only if it changed, the user's sync state. An unchanged mailbox's run ends in one write.
    pub(crate) async fn finish(
        &self,
        run: &mut Run<'_>,
        state: SyncState,
    ) -> o365_domain::Result<()> {
        self.claim_before_commit(run).await?;
        let job = run.job;
        run.seal_pending();
        self.stores
            .state
            .finish_run(&job.org, &job.mailbox, &job.job_id, &run.pending, now())
            .await?;
        run.committed();
        run.claimed = false;
        if run.state_before.as_ref() != Some(&state) {
            self.stores
                .users
                .set_sync_state(&job.org, &job.mailbox, &state)
                .await?;
            run.state_before = Some(state);
        }
        Ok(())
    }
}
