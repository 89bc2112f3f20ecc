//! Fan-out: one job per sync-enabled mailbox of every connected org, the mailbox lease taken
//! as the job is queued.

use super::*;

impl SyncEngine {
    // ---- fan-out --------------------------------------------------------------------------

    /// Every connected org: one job per sync-enabled mailbox.
    pub async fn enqueue_all(&self) -> o365_domain::Result<FanOutReport> {
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
                match self.enqueue_org(org).await {
                    Ok(r) => {
                        report.orgs += 1;
                        report.orgs_in_alarm += u64::from(r.alarm);
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
            enqueued = report.enqueued,
            skipped_leased = report.skipped_leased,
            send_failures = report.send_failures,
            orgs_in_alarm = report.orgs_in_alarm,
            "fan-out done"
        );
        Ok(report)
    }

    /// "Sync now" for one org (also the scheduled path): jobs for its sync-enabled mailboxes,
    /// skipping those whose previous job still holds the lease.
    pub async fn enqueue_org(&self, org: &OrgId) -> o365_domain::Result<OrgFanOut> {
        let mut report = OrgFanOut::default();
        let connection = self.stores.orgs.connection(org).await?;
        if connection.status != ConnectionStatus::Connected {
            tracing::info!(org = %org, status = connection.status.as_str(), "org not connected; nothing enqueued");
            return Ok(report);
        }
        let mut jobs = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .stores
                .users
                .sync_enabled_users(
                    org,
                    PageRequest {
                        limit: PageRequest::MAX_LIMIT,
                        after: after.take(),
                    },
                )
                .await?;
            for mailbox in page.items {
                report.users += 1;
                let job = SyncJob {
                    org: org.clone(),
                    mailbox,
                    job_id: uuid::Uuid::new_v4().to_string(),
                };
                let t = now();
                let taken = self
                    .stores
                    .state
                    .acquire_lease(
                        org,
                        &job.mailbox,
                        &job.job_id,
                        plus(t, self.cfg.enqueue_lease),
                        t,
                    )
                    .await?;
                if taken {
                    jobs.push(job);
                } else {
                    report.skipped_leased += 1;
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        if !jobs.is_empty() {
            let failed = self.queue.send(&jobs).await.unwrap_or_else(|e| {
                tracing::error!(org = %org, error = %e, "cannot enqueue jobs");
                (0..jobs.len()).collect()
            });
            for i in &failed {
                let j = &jobs[*i];
                let _ = self
                    .stores
                    .state
                    .release_lease(org, &j.mailbox, &j.job_id)
                    .await;
            }
            report.send_failures = failed.len() as u64;
            report.enqueued = (jobs.len() - failed.len()) as u64;
        }
        report.users_in_error = self.count_users(org, SyncStateKind::Error).await?;
        report.alarm = o365_domain::user::org_in_alarm(report.users_in_error, report.users);
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

    pub(crate) async fn count_users(
        &self,
        org: &OrgId,
        kind: SyncStateKind,
    ) -> o365_domain::Result<u64> {
        let mut n = 0;
        let mut after = None;
        loop {
            let page = self
                .stores
                .users
                .list_users(
                    org,
                    Some(kind),
                    PageRequest {
                        limit: PageRequest::MAX_LIMIT,
                        after: after.take(),
                    },
                )
                .await?;
            n += page.items.iter().filter(|u| u.sync_enabled).count() as u64;
            match page.next {
                Some(x) => after = Some(x),
                None => return Ok(n),
            }
        }
    }
}
