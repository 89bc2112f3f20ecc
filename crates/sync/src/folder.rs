//! One folder's delta chain: page, archive write, then checkpoint; a 410 starts the folder
//! over and reconciles what the new round no longer returns.

use super::*;

impl SyncEngine {
    /// Follows one folder's delta chain from `stored` to its end (or the deadline). A page that
    /// stored something is followed by one write of its position and counts; a page that stored
    /// nothing leaves them pending for the next write.
    pub(crate) async fn sync_folder(
        &self,
        run: &mut Run<'_>,
        source: &MailSourceRef,
        folder: MailFolder,
        stored: Option<MailboxCursor>,
    ) -> Result<(), Stop> {
        let job = run.job;
        let (org, mailbox) = (&job.org, &job.mailbox);
        let s = &self.stores;
        let mut restarts = 0;
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
            if Instant::now() >= run.deadline {
                return Err(Stop::OutOfTime);
            }
            let request = DeltaRequest {
                tenant: &source.tenant,
                app: source.app,
                mailbox,
                user_id: &source.user_id,
                folder,
                from: link.as_ref(),
                page_size: self.cfg.page_size,
                backfill_since: if link.is_none() {
                    source.backfill_since
                } else {
                    None
                },
                // Both of our apps hold Mail.Read or Mail.ReadWrite: bodies are allowed.
                include_body: self.cfg.include_bodies,
                deadline: run.deadline,
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
                    run.pending.cursors.retain(|c| c.folder != folder);
                    continue;
                }
                Err(e) => return Err(Stop::Microsoft(e)),
            };
            run.report.pages += 1;
            let mut counted = MessageCounters::default();
            // Kept out by the org's capture policy (excluded, or already past its retention):
            // never archived, only counted.
            let fetched = page.messages.len();
            let t = now();
            page.messages.retain(|m| source.policy.keeps(m, t));
            counted.skipped = (fetched - page.messages.len()) as u64;
            // Counted once per message id: a page may repeat one (the last copy is what is
            // written). "captured" is a message never counted before: one the archive does not
            // hold, or holds under the mark of a write that never committed (a crashed attempt
            // archived it, then died before counting it); it takes this write's mark. Anything
            // else it holds, live in this folder or another or as a tombstone (a move's removal
            // processed first), is "updated", and keeps its mark. Outside a first backfill that is one batch read
            // per page (no bodies), only for counting: writes are idempotent either way. A first
            // backfill counts every message as captured; the only message it can count twice is
            // one moved between the two folders' first rounds.
            let mut ids: Vec<String> = page.messages.iter().map(|m| m.id.clone()).collect();
            ids.sort();
            ids.dedup();
            let mut kept_marks = std::collections::HashMap::new();
            if fresh_round {
                counted.captured = ids.len() as u64;
            } else if !ids.is_empty() {
                let held = s.archive.held(org, mailbox, &ids).await?;
                for id in &ids {
                    match held.get(id) {
                        None => counted.captured += 1,
                        Some(mark) => {
                            let counted_before = mark.as_ref().is_none_or(|m| {
                                m.counted(run.last_committed.as_ref(), &run.stopped_runs)
                            });
                            if counted_before {
                                counted.updated += 1;
                                if let Some(mark) = mark {
                                    kept_marks.insert(id.clone(), mark.clone());
                                }
                            } else {
                                counted.captured += 1;
                            }
                        }
                    }
                }
            }
            let mut deleted: Vec<&str> = page
                .removals
                .iter()
                .filter(|r| r.reason == RemovalReason::Deleted)
                .map(|r| r.id.as_str())
                .collect();
            deleted.sort_unstable();
            deleted.dedup();
            counted.deleted = deleted.len() as u64;
            // Within a resync round every write is stamped no earlier than the round's start,
            // whatever this host's clock says, so the round's own items never look stale.
            let at = match resync_started_at {
                Some(started) => now().max(started),
                None => now(),
            };
            let mut stored_something = !page.messages.is_empty() || !page.removals.is_empty();
            if stored_something {
                self.claim(run).await?;
                let stamp = WriteStamp {
                    mark: Some(run.pending_mark()),
                    kept_marks,
                    ..WriteStamp::under(&source.policy, at)
                };
                run.archived_since_commit = true;
                s.archive
                    .write_page(org, mailbox, &page.messages, &page.removals, stamp)
                    .await?;
            }
            let done = matches!(page.next, SyncLink::Delta(_));
            if done && let Some(started) = resync_started_at {
                // Reconcile BEFORE the round's end is saved: a crash here leaves the previous
                // page's link (and the marker) stored, the rerun replays the last page and
                // reconciles again (idempotent).
                // Reconciling writes tombstones: the run claims the mailbox first.
                self.claim(run).await?;
                let removed = self.reconcile(run, folder, started).await?;
                counted.deleted += removed;
                stored_something |= removed > 0;
            }
            run.count(counted);
            run.pending.advance(MailboxCursor {
                org: org.clone(),
                mailbox: mailbox.clone(),
                folder,
                link: page.next.clone(),
                saved_at: now(),
                resync_started_at: if done { None } else { resync_started_at },
            });
            // Only after the page is safely stored (and a resync reconciled) does the chain
            // move on, its position and counts in one write.
            if stored_something {
                self.flush(run).await?;
            }
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
    /// Returns how many it tombstoned.
    pub(crate) async fn reconcile(
        &self,
        run: &Run<'_>,
        folder: MailFolder,
        started: OffsetDateTime,
    ) -> Result<u64, Stop> {
        let (org, mailbox) = (&run.job.org, &run.job.mailbox);
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
            if Instant::now() >= run.deadline {
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
        Ok(gone.len() as u64)
    }
}
