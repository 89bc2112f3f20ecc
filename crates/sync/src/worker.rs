//! The worker: a batch of queued jobs, one mailbox run each (both folders), its outcome
//! and its history record.

use super::*;

impl SyncEngine {
    // ---- worker ---------------------------------------------------------------------------

    /// Runs a batch of queue records; returns which to report as failed.
    pub async fn handle_batch(
        self: &Arc<Self>,
        records: Vec<QueueRecord>,
        deadline: Instant,
    ) -> BatchReport {
        let mut report = BatchReport::default();
        let limit = Arc::new(tokio::sync::Semaphore::new(
            self.cfg.max_parallel_mailboxes.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for record in records {
            let job: SyncJob = match serde_json::from_str(&record.body) {
                Ok(j) => j,
                Err(e) => {
                    // A message we cannot read will never succeed, but it is evidence of a bug:
                    // reported as failed, the queue's redrive policy moves it to the dead-letter
                    // queue instead of it vanishing.
                    tracing::error!(message_id = record.message_id, error = %e, "unreadable sync job; left for the dead-letter queue");
                    report.failed.push(record.message_id);
                    continue;
                }
            };
            let engine = self.clone();
            let limit = limit.clone();
            // The invocation's span (request id, trace id) follows each mailbox task.
            tasks.spawn(tracing::Instrument::in_current_span(async move {
                let _permit = limit.acquire_owned().await;
                let (outcome, mailbox_report) = engine.run_job(&job, deadline).await;
                (record, job, outcome, mailbox_report)
            }));
        }
        while let Some(done) = tasks.join_next().await {
            let Ok((record, job, outcome, r)) = done else {
                tracing::error!("a mailbox task panicked");
                continue;
            };
            report.mailboxes += 1;
            report.totals.pages += r.pages;
            report.totals.counters.captured += r.counters.captured;
            report.totals.counters.updated += r.counters.updated;
            report.totals.counters.deleted += r.counters.deleted;
            report.totals.counters.skipped += r.counters.skipped;
            match &outcome {
                JobOutcome::RetryAfter(d) | JobOutcome::Busy(d) => {
                    if matches!(outcome, JobOutcome::Busy(_)) {
                        report.busy += 1;
                    } else {
                        report.throttled += 1;
                    }
                    if let Err(e) = self.queue.retry_later(&record.receipt_handle, *d).await {
                        tracing::warn!(message_id = record.message_id, error = %e, "cannot delay the job; default visibility applies");
                    }
                    report.failed.push(record.message_id.clone());
                }
                JobOutcome::Failed(_) => report.failed.push(record.message_id.clone()),
                // The continuation is queued before this record is acknowledged; if it cannot
                // be, the record itself comes back after its visibility timeout.
                JobOutcome::Continued => match self.queue.send(std::slice::from_ref(&job)).await {
                    Ok(unsent) if unsent.is_empty() => report.continued += 1,
                    Ok(_) | Err(_) => {
                        tracing::warn!(
                            message_id = record.message_id,
                            "cannot queue the continuation; the job comes back after its visibility timeout"
                        );
                        report.failed.push(record.message_id.clone());
                    }
                },
                JobOutcome::UserError(c) | JobOutcome::OrgError(c) => {
                    *report.errors_by_code.entry(code_name(*c)).or_default() += 1;
                }
                JobOutcome::Synced | JobOutcome::Skipped(_) => {}
            }
            report.outcomes.push((record.message_id, outcome));
        }
        report
    }

    /// One mailbox, both folders. Never panics; every path logs one line.
    pub async fn run_job(&self, job: &SyncJob, deadline: Instant) -> (JobOutcome, MailboxReport) {
        let started = Instant::now();
        let started_at = now();
        let mut run = Run::new(job, deadline);
        let outcome = self.run_job_inner(&mut run).await;
        self.end_claim(&mut run).await;
        let report = run.report;
        let (kind, code) = match &outcome {
            JobOutcome::Synced => ("synced", None),
            JobOutcome::UserError(c) => ("user_error", Some(code_name(*c))),
            JobOutcome::OrgError(c) => ("org_error", Some(code_name(*c))),
            JobOutcome::Skipped(_) => ("skipped", None),
            JobOutcome::RetryAfter(_) => ("retry_later", None),
            JobOutcome::Busy(_) => ("busy", None),
            JobOutcome::Failed(_) => ("failed", None),
            JobOutcome::Continued => ("continued", None),
        };
        tracing::info!(
            target: "mailbox_run",
            org = %job.org,
            mailbox = job.mailbox.key(),
            job_id = job.job_id,
            outcome = kind,
            error_code = code.as_deref(),
            reason = match &outcome { JobOutcome::Skipped(r) => Some(*r), _ => None },
            retry_after_ms = match &outcome { JobOutcome::RetryAfter(d) | JobOutcome::Busy(d) => Some(d.as_millis() as u64), _ => None },
            captured = report.counters.captured,
            updated = report.counters.updated,
            deleted = report.counters.deleted,
            pages = report.pages,
            duration_ms = started.elapsed().as_millis() as u64,
            "mailbox run"
        );
        self.record_run(job, started_at, &outcome, &report, run.failure)
            .await;
        (outcome, report)
    }

    /// The run's history record (not for idle runs). Best effort: a run that cannot be recorded is logged, and the
    /// job's outcome stands.
    pub(crate) async fn record_run(
        &self,
        job: &SyncJob,
        started_at: OffsetDateTime,
        outcome: &JobOutcome,
        report: &MailboxReport,
        failure: Option<Failure>,
    ) {
        // A scheduled run that found nothing to do costs no write of its own: the user's last
        // sync time shows it. History keeps the runs that changed something, stopped or failed,
        // and every run of a "sync now" request (someone is following it).
        if *outcome == JobOutcome::Synced
            && report.counters == MessageCounters::default()
            && job.request.is_none()
        {
            return;
        }
        let outcome = match outcome {
            // The delivery that holds the mailbox records the run.
            JobOutcome::Skipped(_) | JobOutcome::Busy(_) => return,
            JobOutcome::Synced => RunOutcome::Synced,
            JobOutcome::UserError(_) => RunOutcome::UserError,
            JobOutcome::OrgError(_) => RunOutcome::OrgError,
            JobOutcome::RetryAfter(_) => RunOutcome::Deferred,
            JobOutcome::Failed(_) => RunOutcome::Failed,
            JobOutcome::Continued => RunOutcome::Continued,
        };
        let run = SyncRun {
            org: job.org.clone(),
            mailbox: job.mailbox.clone(),
            started_at,
            finished_at: now(),
            outcome,
            counters: report.counters,
            pages: report.pages,
            error: failure,
            request: job.request.clone(),
        };
        if let Err(e) = self.stores.runs.record_run(&run).await {
            tracing::warn!(org = %job.org, mailbox = job.mailbox.key(), job_id = job.job_id, error = %e, "cannot record the sync run");
        }
    }

    pub(crate) async fn run_job_inner(&self, run: &mut Run<'_>) -> JobOutcome {
        let job = run.job;
        let (org, mailbox) = (&job.org, &job.mailbox);
        let s = &self.stores;
        let connection = match s.orgs.connection(org).await {
            Ok(c) => c,
            // An org offboarded while its jobs were queued: nothing to do, nothing to retry.
            Err(DomainError::NotFound(o365_domain::Entity::Org)) => {
                return JobOutcome::Skipped("org not found");
            }
            Err(e) => return JobOutcome::Failed(e.to_string()),
        };
        let (ConnectionStatus::Connected, Some(tenant), Some(app)) =
            (connection.status, connection.tenant_id, connection.app)
        else {
            let _ = s.state.release_lease(org, mailbox, &job.job_id).await;
            return JobOutcome::Skipped("org not connected");
        };
        let user = match s.users.sync_subject(org, mailbox).await {
            Ok(u) if u.sync_enabled => u,
            Ok(_) | Err(DomainError::NotFound(_)) => {
                let _ = s.state.release_lease(org, mailbox, &job.job_id).await;
                return JobOutcome::Skipped("user removed or sync switched off");
            }
            Err(e) => return JobOutcome::Failed(e.to_string()),
        };
        run.state_before = Some(user.state.clone());
        // The mailbox item, read once: its lease, both folders' positions, its last mark.
        let mut positions = match s.state.mailbox(org, mailbox).await {
            Ok(p) => p,
            Err(e) => return JobOutcome::Failed(e.to_string()),
        };
        run.follow(&positions);
        let t = now();
        // The fan-out leased the mailbox to this job when it queued it: while that lease still
        // covers a whole run, the run takes it as it is (no write). Otherwise the lease is taken
        // or extended; someone else's running lease means another job has it.
        match positions.running_lease(t) {
            Some(lease) if lease.holder != job.job_id => {
                return JobOutcome::Skipped("another job holds the mailbox");
            }
            Some(lease) if lease.until >= plus(t, self.cfg.run_lease) => {}
            _ => match s
                .state
                .acquire_lease(org, mailbox, &job.job_id, plus(t, self.cfg.run_lease), t)
                .await
            {
                Ok(true) => {}
                Ok(false) => return JobOutcome::Skipped("another job holds the mailbox"),
                Err(e) => return JobOutcome::Failed(e.to_string()),
            },
        }
        // What the org keeps out of its archive: read once per run.
        let policy = match s.orgs.capture_policy(org).await {
            Ok(p) => p,
            Err(e) => return JobOutcome::Failed(e.to_string()),
        };
        let mut retried = false;
        let link = match user.directory {
            Some(link) => link,
            None => match self.resolve(job, tenant, app).await {
                Ok(link) => link,
                Err(stop) => return self.stop(run, &connection, stop).await,
            },
        };
        let mut source = MailSourceRef {
            tenant,
            app,
            user_id: link.object_id,
            policy,
            backfill_since: self
                .cfg
                .backfill_days
                .map(|d| t - time::Duration::days(i64::from(d))),
        };
        let mut folders = MailFolder::ALL.iter();
        while let Some(&folder) = folders.next() {
            let stored = positions.cursor(folder).cloned();
            match self.sync_folder(run, &source, folder, stored).await {
                Ok(()) => {}
                // Progress so far is written; the state stays what it was until the run
                // completes, and the lease stays with the job id the continuation carries.
                Err(Stop::OutOfTime) => {
                    if let Err(e) = self.flush(run).await {
                        return self.stop(run, &connection, Stop::Store(e)).await;
                    }
                    return JobOutcome::Continued;
                }
                // Graph does not know the user the stored id or links name (a user deleted and
                // re-created, or links from before mailboxes were addressed by id naming an
                // address that moved): look the email up again, once, drop the folders' links
                // (they name the old user) and start both folders fresh.
                Err(ref e) if resolve::is_user_not_found(e) && !retried => {
                    retried = true;
                    source.user_id = match self.resolve(job, tenant, app).await {
                        Ok(found) => found.object_id,
                        Err(stop) => return self.stop(run, &connection, stop).await,
                    };
                    tracing::info!(org = %job.org, mailbox = job.mailbox.key(), "mailbox looked up again; its folders start over");
                    // Forgotten under the run's claim, in a commit: another delivery of the job
                    // cannot lose the positions it is reading from.
                    if let Err(stop) = self.claim(run).await {
                        return self.stop(run, &connection, stop).await;
                    }
                    run.pending.cursors.clear();
                    run.pending.restart = true;
                    if let Err(e) = self.flush(run).await {
                        return self.stop(run, &connection, Stop::Store(e)).await;
                    }
                    positions.cursors.clear();
                    folders = MailFolder::ALL.iter();
                }
                Err(stop) => return self.stop(run, &connection, stop).await,
            }
        }
        match self.finish(run, SyncState::Ok).await {
            Ok(()) => JobOutcome::Synced,
            Err(e) => failures::store_stop(e),
        }
    }
}
