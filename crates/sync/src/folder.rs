//! One folder's delta chain: page, archive write, then checkpoint; a 410 starts the folder
//! over and reconciles what the new round no longer returns.

use super::*;

impl SyncEngine {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn sync_folder(
        &self,
        job: &SyncJob,
        tenant: o365_domain::ids::TenantId,
        app: o365_domain::connection::AppRegistration,
        user_id: &str,
        folder: MailFolder,
        policy: &CapturePolicy,
        backfill_since: Option<OffsetDateTime>,
        deadline: Instant,
        report: &mut MailboxReport,
    ) -> Result<(), Stop> {
        let (org, mailbox) = (&job.org, &job.mailbox);
        let s = &self.stores;
        let mut restarts = 0;
        let stored = s.state.cursor(org, mailbox, folder).await?;
        // After a 410 the folder is read again from scratch; whatever the archive holds in this
        // folder that the new round does not return was removed while the link was dead. The
        // round's start is persisted with every cursor of the round, so the reconciliation at
        // its end survives crashes and redeliveries: it compares each item's stored write time
        // with this instant instead of a set of ids held in memory.
        let mut resync_started_at = stored.as_ref().and_then(|c| c.resync_started_at);
        let mut link = stored.map(|c| c.link);
        // A first backfill (no cursor at all) archives nothing that exists: skip the look-ups.
        let mut fresh_round = link.is_none();
        loop {
            // Checked before every page: what is stored so far has its position saved, and the
            // rest goes back to the queue while the invocation still has time to say so.
            if Instant::now() >= deadline {
                return Err(Stop::OutOfTime);
            }
            let request = DeltaRequest {
                tenant: &tenant,
                app,
                mailbox,
                user_id,
                folder,
                from: link.as_ref(),
                page_size: self.cfg.page_size,
                backfill_since: if link.is_none() { backfill_since } else { None },
                // Both of our apps hold Mail.Read or Mail.ReadWrite: bodies are allowed.
                include_body: self.cfg.include_bodies,
                deadline,
            };
            let mut page = match self.mail.delta_page(request).await {
                Ok(p) => p,
                Err(MicrosoftError::SyncStateExpired) if restarts < 2 => {
                    restarts += 1;
                    tracing::info!(org = %org, mailbox = mailbox.key(), folder = folder.well_known_name(), "delta link expired; resyncing the folder");
                    // The stored cursor is left alone: until the new round's first page is
                    // stored it still names the dead link, so a crash before then meets the
                    // same 410 and starts the round again. (A 410 in the middle of a resync
                    // round restarts it with a new start: what the abandoned part wrote is
                    // then older than the new round and reconciled like the rest.)
                    link = None;
                    resync_started_at = Some(now());
                    fresh_round = false;
                    continue;
                }
                Err(e) => return Err(Stop::Microsoft(e)),
            };
            report.pages += 1;
            // Kept out by the org's capture policy (excluded, or already past its retention):
            // never archived, only counted.
            let fetched = page.messages.len();
            let t = now();
            page.messages.retain(|m| policy.keeps(m, t));
            report.counters.skipped += (fetched - page.messages.len()) as u64;
            // Counted once per message id: a page may repeat one (the last copy is what is
            // written). "captured" is a message the archive never held; anything it holds, live
            // in this folder or another or as a tombstone (a move's removal processed first), is
            // "updated". Outside a first backfill that is one keys-only batch read per page (no
            // bodies), and only for counting: writes are idempotent either way. A first backfill
            // counts every message as captured; the only message it can count twice is one
            // moved between the two folders' first rounds.
            let mut ids: Vec<String> = page.messages.iter().map(|m| m.id.clone()).collect();
            ids.sort();
            ids.dedup();
            if fresh_round {
                report.counters.captured += ids.len() as u64;
            } else if !ids.is_empty() {
                let held = s.archive.held(org, mailbox, &ids).await?;
                report.counters.updated += held.len() as u64;
                report.counters.captured += (ids.len() - held.len()) as u64;
            }
            let mut deleted: Vec<&str> = page
                .removals
                .iter()
                .filter(|r| r.reason == RemovalReason::Deleted)
                .map(|r| r.id.as_str())
                .collect();
            deleted.sort_unstable();
            deleted.dedup();
            report.counters.deleted += deleted.len() as u64;
            // Within a resync round every write is stamped no earlier than the round's start,
            // whatever this host's clock says, so the round's own items never look stale.
            let at = match resync_started_at {
                Some(started) => now().max(started),
                None => now(),
            };
            if !page.messages.is_empty() || !page.removals.is_empty() {
                s.archive
                    .write_page(
                        org,
                        mailbox,
                        &page.messages,
                        &page.removals,
                        WriteStamp::under(policy, at),
                    )
                    .await?;
            }
            let done = matches!(page.next, SyncLink::Delta(_));
            if done && let Some(started) = resync_started_at {
                // Reconcile BEFORE the round's end is saved: a crash here leaves the previous
                // page's link (and the marker) stored, the rerun replays the last page and
                // reconciles again (idempotent).
                self.reconcile(job, folder, started, deadline, report)
                    .await?;
            }
            // Only after the page is safely stored (and a resync reconciled) does the chain
            // move on.
            s.state
                .save_cursor(&MailboxCursor {
                    org: org.clone(),
                    mailbox: mailbox.clone(),
                    folder,
                    link: page.next.clone(),
                    saved_at: now(),
                    resync_started_at: if done { None } else { resync_started_at },
                })
                .await?;
            if done {
                return Ok(());
            }
            link = Some(page.next);
        }
    }

    /// Tombstones live messages of `folder` that a complete resync round, begun at `started`,
    /// did not return: every item the round returned was (re)written at or after `started`, so
    /// a live item of this folder stored earlier is one the round no longer saw. Messages older
    /// than the backfill window the round asked for are kept (the round could not return them).
    /// Removals are conditional on the folder, so a message moved meanwhile is left alone.
    pub(crate) async fn reconcile(
        &self,
        job: &SyncJob,
        folder: MailFolder,
        started: OffsetDateTime,
        deadline: Instant,
        report: &mut MailboxReport,
    ) -> Result<(), Stop> {
        let (org, mailbox) = (&job.org, &job.mailbox);
        // Read from the listing index (no bodies); what it shows as stale is confirmed against
        // the table, so the cost follows the changes, not the mailbox's size.
        // The round's first request was made at or after `started`, with a window ending no
        // later than this (a later window start only keeps more).
        let since = self
            .cfg
            .backfill_days
            .map(|d| started - time::Duration::days(i64::from(d)));
        let mut gone = Vec::new();
        let mut after = None;
        loop {
            // Out of time, the round's last link is not saved yet: the continuation replays the
            // last page and reconciles again (idempotent).
            if Instant::now() >= deadline {
                return Err(Stop::OutOfTime);
            }
            let page = self
                .stores
                .archive
                .live_stamps(
                    org,
                    mailbox,
                    PageRequest {
                        limit: PageRequest::MAX_LIMIT,
                        after: after.take(),
                    },
                )
                .await?;
            let stale = |stamp: &o365_domain::message::ArchivedStamp| {
                stamp.folder == folder
                    && stamp.stored_at.is_none_or(|t| t < started)
                    && since.is_none_or(|s| stamp.received_at.is_none_or(|r| r >= s))
            };
            for stamp in page.items.iter().filter(|s| stale(s)) {
                // The index may not show this round's write yet: the table decides.
                let confirmed = self
                    .stores
                    .archive
                    .live_stamp(org, mailbox, &stamp.id)
                    .await?;
                if confirmed.as_ref().is_some_and(stale) {
                    gone.push(o365_domain::message::MessageRemoval {
                        id: stamp.id.clone(),
                        folder,
                        reason: RemovalReason::Changed,
                    });
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        if !gone.is_empty() {
            tracing::info!(org = %org, mailbox = mailbox.key(), folder = folder.well_known_name(), removed = gone.len(), "resync reconciled");
            report.counters.deleted += gone.len() as u64;
            self.stores
                .archive
                .write_page(
                    org,
                    mailbox,
                    &[],
                    &gone,
                    WriteStamp::from(now().max(started)),
                )
                .await?;
        }
        Ok(())
    }
}
