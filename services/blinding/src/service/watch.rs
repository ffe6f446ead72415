//! Unblinding notifications: from a cursor on, only the sites a caller may
//! see, never an arm. The gRPC layer turns [`BlindingService::watch`] into
//! a stream; the store is the source of truth, so a watcher that resumes
//! after its last cursor misses nothing and sees nothing twice.

use std::sync::Arc;

use equipoise_common::auth::Caller;
use tokio::sync::Notify;

use super::access::{SiteScope, viewer_scope};
use super::{BlindingService, NOTIFICATION_BATCH, Result, require_trial_id};
use crate::store::Notification;

/// What one watcher may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchScope {
    pub trial_id: String,
    sites: SiteScope,
}

/// One read of the outbox: what the watcher may see, and the cursor to
/// read after next (past notifications it may not see, too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationBatch {
    pub visible: Vec<Notification>,
    pub next_cursor: u64,
    /// The store had more than one batch.
    pub more: bool,
}

impl BlindingService {
    /// Checks the caller may watch the trial's notifications: sponsor roles
    /// for every site, site roles for their own; unblinded preparers and
    /// the DSMB are refused.
    pub fn watch_scope(&self, caller: &Caller, trial_id: &str) -> Result<WatchScope> {
        let sites = viewer_scope(caller, "WatchUnblindings")?;
        require_trial_id(caller, trial_id)?;
        Ok(WatchScope {
            trial_id: trial_id.to_owned(),
            sites,
        })
    }

    /// The notifications after `after_cursor` the scope covers, one batch.
    pub async fn notifications_after(
        &self,
        scope: &WatchScope,
        after_cursor: u64,
    ) -> Result<NotificationBatch> {
        let read = self
            .store
            .notifications(&scope.trial_id, after_cursor, NOTIFICATION_BATCH)
            .await?;
        let more = read.len() >= NOTIFICATION_BATCH as usize;
        let next_cursor = read.last().map_or(after_cursor, |n| n.cursor);
        let visible = read
            .into_iter()
            .filter(|n| scope.sites.covers(&n.site_id))
            .collect();
        Ok(NotificationBatch {
            visible,
            next_cursor,
            more,
        })
    }

    /// Every notification after the cursor the caller may see, as one list.
    pub async fn watch_unblindings(
        &self,
        caller: &Caller,
        trial_id: &str,
        after_cursor: u64,
    ) -> Result<Vec<Notification>> {
        let scope = self.watch_scope(caller, trial_id)?;
        let mut cursor = after_cursor;
        let mut all = Vec::new();
        loop {
            let batch = self.notifications_after(&scope, cursor).await?;
            all.extend(batch.visible);
            cursor = batch.next_cursor;
            if !batch.more {
                return Ok(all);
            }
        }
    }

    /// Woken whenever this process writes a notification.
    pub fn notified(&self) -> Arc<Notify> {
        Arc::clone(&self.notified)
    }
}
