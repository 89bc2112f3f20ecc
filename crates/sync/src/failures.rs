//! Where a stopped run's failure lands: the user, the org's connection, or the queue.

use super::*;

/// A run stopped by its store.
pub(crate) fn store_stop(e: DomainError) -> JobOutcome {
    match e {
        // Another job (its lease ran out and another took it) or another delivery of this job
        // committed first: that run carries on from the positions it saved, and counts what
        // this run did not commit.
        DomainError::Conflict(o365_domain::Entity::Lease) => {
            JobOutcome::Skipped("another run took the mailbox over")
        }
        e => JobOutcome::Failed(e.to_string()),
    }
}

impl SyncEngine {
    pub(crate) async fn stop(
        &self,
        run: &mut Run<'_>,
        connection: &Connection,
        stop: Stop,
    ) -> JobOutcome {
        match stop {
            Stop::Store(e) => store_stop(e),
            Stop::Busy(wait) => JobOutcome::Busy(wait),
            // Handled where the run knows its user (`run_job_inner`); here only for completeness.
            Stop::OutOfTime => JobOutcome::Continued,
            Stop::Microsoft(e) => self.microsoft_stop(run, connection, e).await,
        }
    }

    pub(crate) async fn microsoft_stop(
        &self,
        run: &mut Run<'_>,
        connection: &Connection,
        error: MicrosoftError,
    ) -> JobOutcome {
        let job = run.job;
        let (org, mailbox) = (&job.org, &job.mailbox);
        let s = &self.stores;
        match error {
            MicrosoftError::Throttled { retry_after } => {
                // Keep the mailbox ours (and what it did so far) while the job waits on the queue.
                let _ = self.flush(run).await;
                let t = now();
                let _ = s
                    .state
                    .acquire_lease(
                        org,
                        mailbox,
                        &job.job_id,
                        plus(t, retry_after + self.cfg.run_lease),
                        t,
                    )
                    .await;
                JobOutcome::RetryAfter(retry_after)
            }
            MicrosoftError::Unavailable { message } => {
                run.failure = Some(Failure::new(
                    FailureCode::MicrosoftUnavailable,
                    None,
                    message.clone(),
                    now(),
                ));
                JobOutcome::Failed(message)
            }
            MicrosoftError::SyncStateExpired => {
                JobOutcome::Failed("the delta link kept expiring".into())
            }
            MicrosoftError::Refused {
                code,
                microsoft_code,
                message,
            } => {
                let code = if code == FailureCode::InsufficientPrivileges
                    && microsoft_code == "ErrorAccessDenied"
                {
                    FailureCode::for_generic_access_denied(
                        self.another_mailbox_synced(job, connection).await,
                    )
                } else {
                    code
                };
                let failure = Failure::new(code, Some(&microsoft_code), message, now());
                run.failure = Some(failure.clone());
                match code.scope() {
                    FailureScope::User => {
                        let state = SyncState::Error { cause: failure };
                        if let Err(e) = self.finish(run, state).await {
                            return store_stop(e);
                        }
                        JobOutcome::UserError(code)
                    }
                    FailureScope::Transient => JobOutcome::Failed(failure.message),
                    FailureScope::Org => {
                        if let Err(e) = self.fail_org(org, connection, failure).await {
                            return JobOutcome::Failed(e.to_string());
                        }
                        let _ = s.state.release_lease(org, mailbox, &job.job_id).await;
                        JobOutcome::OrgError(code)
                    }
                }
            }
        }
    }

    /// Whether a mailbox of the org other than the job's synced since consent was granted: the
    /// evidence that a denial is this mailbox's, not the app's. (A store error counts as no
    /// evidence: the org-level reading is the safe one.)
    async fn another_mailbox_synced(&self, job: &SyncJob, connection: &Connection) -> bool {
        let since = connection.granted_at;
        match self
            .stores
            .users
            .list_users(&job.org, Some(SyncStateKind::Ok), PageRequest::first(20))
            .await
        {
            Ok(page) => page.items.iter().any(|u| {
                u.email != job.mailbox
                    && u.sync_enabled
                    && u.last_sync_at
                        .is_some_and(|at| since.is_none_or(|granted| at >= granted))
            }),
            Err(_) => false,
        }
    }

    /// Puts the org's connection in Error (once), with an audit event by the sync system.
    pub(crate) async fn fail_org(
        &self,
        org: &OrgId,
        seen: &Connection,
        failure: Failure,
    ) -> o365_domain::Result<()> {
        let mut before = seen.clone();
        for _ in 0..3 {
            if before.status != ConnectionStatus::Connected {
                return Ok(()); // Someone (maybe another mailbox of this org) already acted.
            }
            let after = Connection {
                version: before.version + 1,
                ..before.failed(failure.clone())
            };
            let audit = AuditEvent::new(
                org,
                now(),
                Actor::System("sync".into()),
                AuditAction::ConnectionFailed,
                "connection",
            )
            .change(Some(&before), Some(&after));
            match self.stores.orgs.save_connection(org, &after, audit).await {
                Ok(()) => {
                    tracing::warn!(org = %org, error_code = code_name(failure.code), microsoft_code = failure.microsoft_code.as_deref(), "org connection set to error by sync");
                    return Ok(());
                }
                Err(DomainError::Conflict(_)) => before = self.stores.orgs.connection(org).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
