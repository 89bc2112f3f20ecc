//! Fan-out: one job per sync-enabled mailbox of every connected org, sent in chunks of ten as
//! the walk goes, each sent job's mailbox then leased to it. A walk watches its deadline between
//! pages of users and queues its rest as a [`FanOutJob`].

use super::*;

/// Jobs per send (SQS `SendMessageBatch` takes 10).
const SEND_CHUNK: usize = 10;

impl SyncEngine {
    /// Every connected org: one job per sync-enabled mailbox (no time limit: the embedded run,
    /// tests and benchmarks).
    pub async fn enqueue_all(&self) -> o365_domain::Result<FanOutReport> {
        self.enqueue_all_by(Instant::now() + Duration::from_secs(24 * 3600))
            .await
    }

    /// Every connected org, walked until `deadline`; an org cut short, and each
    /// org not reached, goes on as a [`FanOutJob`] on the fan-out queue.
    pub async fn enqueue_all_by(&self, deadline: Instant) -> o365_domain::Result<FanOutReport> {
        let mut report = FanOutReport::default();
        let mut after = None;
        loop {
            let page = self
                .stores
                .orgs
                .orgs_with_connection(
                    ConnectionStatus::Connected,
                    PageRequest {
                        limit: 100,
                        after: after.take(),
                    },
                )
                .await?;
            for org in &page.items {
                report.orgs += 1;
                if out_of_time(deadline) {
                    // Not reached: the fan-out function walks it.
                    match self
                        .queue
                        .send_fan_out(&FanOutJob::whole(org.clone(), None))
                        .await
                    {
                        Ok(()) => report.orgs_queued += 1,
                        Err(e) => {
                            tracing::error!(org = %org, error = %e, "cannot queue the org's fan-out")
                        }
                    }
                    continue;
                }
                match self
                    .fan_out(&FanOutJob::whole(org.clone(), None), deadline)
                    .await
                {
                    Ok(r) => {
                        report.orgs_in_alarm += u64::from(r.alarm);
                        report.orgs_queued += u64::from(r.continued);
                        report.enqueued += r.enqueued;
                        report.skipped_leased += r.skipped_leased;
                        report.send_failures += r.send_failures;
                    }
                    // One org's trouble does not stop the others.
                    Err(e) => tracing::error!(org = %org, error = %e, "fan-out failed for org"),
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        tracing::info!(
            orgs = report.orgs,
            orgs_queued = report.orgs_queued,
            enqueued = report.enqueued,
            skipped_leased = report.skipped_leased,
            send_failures = report.send_failures,
            orgs_in_alarm = report.orgs_in_alarm,
            "fan-out done"
        );
        Ok(report)
    }

    /// "Sync now" for one org: the walk is queued for the fan-out function, so the caller has
    /// its answer at once whatever the org's size. The jobs and their run records carry the
    /// request's id.
    pub async fn request_sync(&self, org: &OrgId, request: &str) -> o365_domain::Result<()> {
        request_sync(self.queue.as_ref(), org, request).await
    }

    /// The whole org at once, whatever it takes (tests, the embedded run).
    pub async fn enqueue_org(&self, org: &OrgId) -> o365_domain::Result<OrgFanOut> {
        self.fan_out(
            &FanOutJob::whole(org.clone(), None),
            Instant::now() + Duration::from_secs(24 * 3600),
        )
        .await
    }

    /// One org's walk from where `job` says, until `deadline`: jobs for its
    /// sync-enabled mailboxes, skipping those whose previous job still holds the lease. Out of
    /// time, the rest goes back on the fan-out queue with the position in the org's users.
    pub async fn fan_out(
        &self,
        job: &FanOutJob,
        deadline: Instant,
    ) -> o365_domain::Result<OrgFanOut> {
        let org = &job.org;
        let mut report = OrgFanOut::default();
        let connection = self.stores.orgs.connection(org).await?;
        if connection.status != ConnectionStatus::Connected {
            tracing::info!(org = %org, status = connection.status.as_str(), "org not connected; nothing enqueued");
            return Ok(report);
        }
        // Jobs go out in chunks as the walk goes (a large org is never held in memory, and a
        // fan-out stopped halfway has queued what it walked).
        let mut chunk = Vec::with_capacity(SEND_CHUNK);
        let mut after = job.after.clone();
        loop {
            let page = self
                .stores
                .users
                .sync_enabled_users(
                    org,
                    PageRequest {
                        limit: PageRequest::MAX_LIMIT,
                        after: after.clone(),
                    },
                )
                .await?;
            for mailbox in page.items {
                report.users += 1;
                // A mailbox whose previous job is still queued or running is left to it.
                if self
                    .stores
                    .state
                    .lease_holder(org, &mailbox, now())
                    .await?
                    .is_some()
                {
                    report.skipped_leased += 1;
                    continue;
                }
                chunk.push(SyncJob {
                    org: org.clone(),
                    mailbox,
                    job_id: uuid::Uuid::new_v4().to_string(),
                    request: job.request.clone(),
                });
                if chunk.len() == SEND_CHUNK {
                    self.send_and_lease(org, &mut chunk, &mut report).await;
                }
            }
            self.send_and_lease(org, &mut chunk, &mut report).await;
            match page.next {
                None => break,
                // Between pages everything walked is queued and leased: the rest can go on
                // elsewhere from the page's position.
                Some(next) if out_of_time(deadline) => {
                    let rest = FanOutJob {
                        after: Some(next),
                        ..job.clone()
                    };
                    self.queue.send_fan_out(&rest).await?;
                    report.continued = true;
                    tracing::info!(org = %org, enqueued = report.enqueued, "fan-out out of time; the rest is queued");
                    return Ok(report);
                }
                Some(next) => after = Some(next),
            }
        }
        // The alarm is read once the walk is whole (a continued walk reads it at its end),
        // counted from the users: this is also what keeps the org's count (the API's) exact.
        let counts = self.stores.users.recount_sync(org).await?;
        report.users_in_error = counts.in_error;
        report.alarm = counts.alarm();
        if report.alarm {
            tracing::warn!(
                org = %org,
                users = report.users,
                users_in_error = report.users_in_error,
                alarm = "org_users_in_error",
                "20% or more of the org's users are in error"
            );
        }
        tracing::info!(org = %org, enqueued = report.enqueued, skipped_leased = report.skipped_leased, "org enqueued");
        Ok(report)
    }

    /// Runs a batch of queued fan-out jobs (the fan-out function's SQS records); returns the
    /// message ids to report as failed (unreadable ones included, so they reach the DLQ).
    pub async fn handle_fan_out_batch(
        &self,
        records: Vec<QueueRecord>,
        deadline: Instant,
    ) -> (FanOutReport, Vec<String>) {
        let mut report = FanOutReport::default();
        let mut failed = Vec::new();
        for record in records {
            let job: FanOutJob = match serde_json::from_str(&record.body) {
                Ok(j) => j,
                Err(e) => {
                    tracing::error!(message_id = record.message_id, error = %e, "unreadable fan-out job; left for the dead-letter queue");
                    failed.push(record.message_id);
                    continue;
                }
            };
            match self.fan_out(&job, deadline).await {
                Ok(r) => {
                    report.orgs += 1;
                    report.orgs_in_alarm += u64::from(r.alarm);
                    report.orgs_queued += u64::from(r.continued);
                    report.enqueued += r.enqueued;
                    report.skipped_leased += r.skipped_leased;
                    report.send_failures += r.send_failures;
                }
                // An offboarded org's walk has nothing left to do.
                Err(DomainError::NotFound(o365_domain::Entity::Org)) => {}
                Err(e) => {
                    tracing::error!(org = %job.org, error = %e, "fan-out job failed; it comes back");
                    failed.push(record.message_id);
                }
            }
        }
        (report, failed)
    }

    /// Sends the jobs, then leases each sent job's mailbox to it (so the next fan-out skips it
    /// while it waits in the queue). In that order, a fan-out stopped in between leaves jobs
    /// without leases — their workers take their own — and never a lease without a job. A lease
    /// lost to a job that got there first makes this job a duplicate its worker skips.
    async fn send_and_lease(&self, org: &OrgId, jobs: &mut Vec<SyncJob>, report: &mut OrgFanOut) {
        if jobs.is_empty() {
            return;
        }
        let failed = self.queue.send(jobs).await.unwrap_or_else(|e| {
            tracing::error!(org = %org, error = %e, "cannot enqueue jobs");
            (0..jobs.len()).collect()
        });
        for (i, job) in jobs.iter().enumerate() {
            if failed.contains(&i) {
                report.send_failures += 1;
                continue;
            }
            report.enqueued += 1;
            let t = now();
            // Not taken when the job's worker already ran (it was faster than this write) or
            // another job holds the mailbox (this one is then a duplicate its worker skips).
            if let Err(e) = self
                .stores
                .state
                .lease_queued_job(
                    org,
                    &job.mailbox,
                    &job.job_id,
                    plus(t, self.cfg.enqueue_lease),
                    t,
                )
                .await
            {
                tracing::warn!(org = %org, mailbox = job.mailbox.key(), error = %e, "job queued without its lease; its worker takes it");
            }
        }
        jobs.clear();
    }
}

/// "Sync now" without an engine (the API needs only the fan-out queue): the org's walk queued
/// for the request.
pub async fn request_sync(
    queue: &dyn JobQueue,
    org: &OrgId,
    request: &str,
) -> o365_domain::Result<()> {
    queue
        .send_fan_out(&FanOutJob::whole(org.clone(), Some(request.to_owned())))
        .await
}

/// The caller's deadline already keeps back the time to queue the rest and answer.
fn out_of_time(deadline: Instant) -> bool {
    Instant::now() >= deadline
}
