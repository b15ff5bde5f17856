//! Presence: who watches which stage, their heartbeats (batched into few writes), leaving,
//! the sweep of silent viewers, and the watch history kept for them.

use super::hub::StatsHub;
use super::views::{
    format_duration, HistoryEntry, HistoryView, RejoinView, StageViewStatsView, ViewFigures, ViewerEntry, ViewerListView,
    WatchDurationView,
};
use crate::domain::{ParticipantId, StageArn, UnixMs, UserId};
use crate::server::clock::Clock;
use crate::server::error::AppError;
use crate::server::store::{JoinMode, JoinResult, Store};
use crate::server::time::iso_at;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type ViewerKey = (String, String); // (stage ARN, user id)

/// Why a presence operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The viewer is not present on the stage (or not with that ticket).
    #[error("Viewer session not found")]
    ViewerNotFound,
    #[error("Stage not found")]
    StageNotFound,
    #[error(transparent)]
    Failed(#[from] AppError),
}

impl From<PresenceError> for AppError {
    fn from(e: PresenceError) -> Self {
        match e {
            PresenceError::Failed(inner) => inner,
            PresenceError::ViewerNotFound | PresenceError::StageNotFound => AppError::not_found(e.to_string()),
        }
    }
}

type PresenceResult<T> = Result<T, PresenceError>;

/// Owns this instance's view of who is present and the heartbeats not yet written.
pub struct Presence {
    store: Store,
    clock: Arc<dyn Clock>,
    hub: Arc<StatsHub>,
    /// A viewer silent for longer than this is dropped by the sweep.
    timeout: Duration,
    /// Viewers this instance knows to be present, with their ticket's participant id, so a
    /// heartbeat needs no read.
    /// An entry not beaten on this instance for the heartbeat timeout is dropped by the sweep
    /// (the viewer may have left or been swept through another instance).
    known: Mutex<HashMap<ViewerKey, (String, UnixMs)>>,
    /// Heartbeats waiting for the next batched write: viewer → newest beat.
    pending: Mutex<HashMap<ViewerKey, UnixMs>>,
    /// Heartbeats accepted since start.
    accepted: AtomicU64,
}

impl Presence {
    pub fn new(store: Store, clock: Arc<dyn Clock>, hub: Arc<StatsHub>, heartbeat_timeout: Duration) -> Self {
        Self {
            store,
            clock,
            hub,
            timeout: heartbeat_timeout,
            known: Mutex::default(),
            pending: Mutex::default(),
            accepted: AtomicU64::new(0),
        }
    }

    fn now(&self) -> UnixMs {
        self.clock.now()
    }

    /// Heartbeats accepted by this instance since start.
    pub fn heartbeats_total(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// A viewer just joined `stage` with the ticket `participant` (its presence row is written).
    pub(crate) fn mark_present(&self, stage: &str, user: &str, participant: &str) {
        let now = self.now();
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((stage.to_string(), user.to_string()), (participant.to_string(), now));
    }

    /// A viewer's presence row is gone (left, swept, its stage deleted).
    pub(crate) fn forget(&self, stage: &str, user: &str) {
        let key = (stage.to_string(), user.to_string());
        self.known.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
    }

    /// Records a heartbeat. The write is batched (see [`Presence::flush`]), so a beat costs no
    /// database round-trip when this instance already knows the viewer. With `participant`, the
    /// beat counts only for the viewer of that ticket (another's is "not found").
    pub async fn record_heartbeat(
        &self,
        user: &UserId,
        stage: &StageArn,
        participant: Option<&ParticipantId>,
    ) -> PresenceResult<()> {
        let key = (stage.to_string(), user.to_string());
        let now = self.now();
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&key).map(|(p, seen)| {
            *seen = now;
            p.clone()
        });
        // A ticket this instance has not seen yet (a rejoin through another instance) is read.
        let stale = known.as_ref().zip(participant).is_some_and(|(k, p)| k != p.as_str());
        let current = match known {
            Some(p) if !stale => p,
            _ => {
                let Some(row) = self.store.presence().get(stage.as_str(), user.as_str()).await? else {
                    return Err(PresenceError::ViewerNotFound);
                };
                self.mark_present(stage.as_str(), user.as_str(), &row.participant_id);
                row.participant_id
            }
        };
        if participant.is_some_and(|p| p.as_str() != current) {
            return Err(PresenceError::ViewerNotFound);
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let slot = pending.entry(key).or_insert(now);
        *slot = (*slot).max(now);
        Ok(())
    }

    /// Writes every pending heartbeat in one transaction.
    pub async fn flush(&self) -> PresenceResult<usize> {
        let batch: Vec<(String, String, UnixMs)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().map(|((s, u), t)| (s, u, t)).collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match self.store.presence().record_heartbeats(&batch).await {
            Ok(gone) => {
                for (stage, user) in gone {
                    self.forget(&stage, &user);
                }
                Ok(batch.len())
            }
            Err(e) => {
                // Keep the beats for the next attempt rather than lose presence.
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                for (s, u, t) in batch {
                    let slot = pending.entry((s, u)).or_insert(t);
                    *slot = (*slot).max(t);
                }
                Err(e.into())
            }
        }
    }

    /// The viewer leaves: presence removed, watch session closed now, or the seat it holds
    /// given back. Idempotent. With `participant`, only the viewer of that ticket leaves. A
    /// viewer neither present nor holding a seat costs two reads, never a write. Returns
    /// whether the viewer was present or held a seat.
    pub async fn leave(&self, user: &UserId, stage: &StageArn, participant: Option<&ParticipantId>) -> PresenceResult<bool> {
        let Some(row) = self.store.presence().get(stage.as_str(), user.as_str()).await? else {
            self.forget(stage.as_str(), user.as_str());
            // A viewer whose media never connected gives its seat back.
            return Ok(self
                .store
                .presence()
                .release_seat(stage.as_str(), user.as_str(), participant.map(|p| p.as_str()))
                .await?);
        };
        if participant.is_some_and(|p| p.as_str() != row.participant_id) {
            return Ok(false);
        }
        self.forget(stage.as_str(), user.as_str());
        let was_present = self.store.presence().leave(stage.as_str(), user.as_str(), self.now()).await?;
        if was_present {
            self.hub.mark_dirty();
        }
        Ok(was_present)
    }

    /// The media session of a viewer who holds a seat (a page's join on the embedded backend)
    /// connected: the viewer is counted from now on. Nothing happens for a viewer counted at its
    /// join, or one that has left since. Returns whether the viewer was counted now.
    pub async fn media_connected(&self, stage: &str, user: &str, participant: &str) -> PresenceResult<bool> {
        let Some(JoinResult::Joined { is_new, current_viewers, .. }) =
            self.store.presence().connect(stage, user, participant, self.now()).await?
        else {
            return Ok(false);
        };
        self.mark_present(stage, user, participant);
        self.hub.mark_dirty();
        tracing::info!(%stage, %user, is_new, current_viewers, "viewer counted: its media connected");
        Ok(true)
    }

    /// Re-registers a viewer after a network drop, reusing its watch session while it is open.
    pub async fn rejoin(&self, user: &UserId, stage: &StageArn, participant: &ParticipantId) -> PresenceResult<RejoinView> {
        if self.store.stages().get(stage.as_str()).await?.is_none() {
            return Err(PresenceError::StageNotFound);
        }
        let now = self.now();
        let joined = self
            .store
            .presence()
            .join(stage.as_str(), user.as_str(), participant.as_str(), now, JoinMode::Count { max: None })
            .await?;
        let JoinResult::Joined { is_new, current_viewers, .. } = joined else {
            return Err(AppError::internal(std::io::Error::other("join without a limit reported full")).into());
        };
        self.mark_present(stage.as_str(), user.as_str(), participant.as_str());
        self.hub.mark_dirty();
        Ok(RejoinView {
            user_id: user.to_string(),
            stage_arn: stage.to_string(),
            participant_id: participant.to_string(),
            current_viewers,
            is_new_viewer: is_new,
        })
    }

    /// Drops viewers silent for longer than the heartbeat timeout; their watch sessions close
    /// at their last heartbeat. Returns how many were dropped.
    pub async fn sweep(&self) -> PresenceResult<usize> {
        self.flush().await?;
        let cutoff = self.now() - self.timeout;
        self.known.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, (_, seen)| *seen >= cutoff);
        let removed = self.store.presence().sweep(cutoff, self.now()).await?;
        for p in &removed {
            self.forget(&p.stage_arn, &p.user_id);
        }
        if !removed.is_empty() {
            tracing::info!(dropped = removed.len(), "presence sweep dropped silent viewers");
            self.hub.mark_dirty();
        }
        Ok(removed.len())
    }

    pub async fn list_viewers(&self, stage: &StageArn) -> PresenceResult<ViewerListView> {
        let viewers = self.store.presence().list(stage.as_str()).await?;
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let entries: Vec<ViewerEntry> = viewers
            .iter()
            .map(|v| {
                let beat = pending
                    .get(&(v.stage_arn.clone(), v.user_id.clone()))
                    .copied()
                    .unwrap_or(UnixMs::EPOCH)
                    .max(v.last_heartbeat);
                ViewerEntry {
                    user_id: v.user_id.clone(),
                    participant_id: v.participant_id.clone(),
                    joined_at: iso_at(v.joined_at),
                    last_heartbeat: iso_at(beat),
                }
            })
            .collect();
        Ok(ViewerListView {
            stage_arn: stage.to_string(),
            total_viewers: entries.len(),
            active_viewers: entries.len(),
            viewers: entries,
        })
    }

    /// Seconds watched in the viewer's current session on a stage (or its last one).
    pub async fn watch_duration(&self, user: &UserId, stage: &StageArn) -> PresenceResult<WatchDurationView> {
        let secs = match self.store.sessions().latest(user.as_str(), stage.as_str()).await? {
            Some(s) => s.watch_duration_seconds.unwrap_or_else(|| self.now().since(s.joined_at).as_secs() as i64),
            None => 0,
        };
        Ok(WatchDurationView {
            user_id: user.to_string(),
            stage_arn: stage.to_string(),
            watch_duration_seconds: secs,
            watch_duration_formatted: format_duration(secs),
        })
    }

    pub async fn history(&self, user: &UserId, limit: u32) -> PresenceResult<HistoryView> {
        let rows = self.store.sessions().history(user.as_str(), limit).await?;
        let history: Vec<HistoryEntry> = rows
            .into_iter()
            .map(|r| HistoryEntry {
                id: r.id,
                user_id: r.user_id,
                stage_arn: r.stage_arn,
                participant_id: r.participant_id,
                joined_at: iso_at(r.joined_at),
                left_at: r.left_at.map(iso_at),
                watch_duration_seconds: r.watch_duration_seconds,
            })
            .collect();
        Ok(HistoryView { user_id: user.to_string(), total_records: history.len(), history })
    }

    pub async fn stage_view_stats(&self, stage: &StageArn, days: u32) -> PresenceResult<StageViewStatsView> {
        let since = self.now() - Duration::from_secs(u64::from(days) * 86_400);
        let s = self.store.sessions().stage_stats(stage.as_str(), since).await?;
        Ok(StageViewStatsView {
            stage_arn: stage.to_string(),
            days,
            stats: ViewFigures {
                total_views: s.total_views,
                unique_viewers: s.unique_viewers,
                avg_watch_duration: s.avg_watch_duration,
                max_watch_duration: s.max_watch_duration,
                total_watch_time: s.total_watch_time,
            },
        })
    }
}
