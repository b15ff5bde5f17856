//! Several instances on one PostgreSQL database.
//!
//! - **Leadership.** Jobs that must run once per cluster (auto-scaling, viewer-count snapshots)
//!   run only on the leader: the instance holding a session-level advisory lock on its own
//!   connection. If the leader dies, even by SIGKILL, PostgreSQL drops its session and the lock
//!   with it, and another instance takes over within one retry period.
//! - **Change notifications.** When an instance's stats change it sends `NOTIFY`; every
//!   instance `LISTEN`s and recomputes, so `/ws` subscribers everywhere see the change within
//!   the hub's 100 ms debounce plus a round-trip.
//!
//! On SQLite there is one instance: it is always the leader and needs no notifications.

use super::hub::StatsHub;
use super::publishers::PublisherRegistry;
use crate::domain::ChannelId;
use crate::server::clock::Clock;
use crate::server::store::{DbKind, Store};
use sqlx::postgres::{PgConnection, PgListener};
use sqlx::Connection;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const CHANNEL: &str = "livestage_stats";
/// Advisory lock key of the leader ("lvst").
const LEADER_LOCK: i64 = 0x6c76_7374;
const RETRY: Duration = Duration::from_secs(2);
/// How often the live publisher is reported and read; a report lives for [`SHARE_TTL_MS`].
const SHARE_EVERY: Duration = Duration::from_millis(500);
const SHARE_TTL_MS: i64 = 5_000;

/// This instance's place among the instances on one database: whether it leads, the change
/// notifications it sends and hears, and the live publishers it reports and reads.
pub struct Cluster {
    leader: AtomicBool,
    store: Store,
    clock: Arc<dyn Clock>,
    hub: Arc<StatsHub>,
    publishers: Arc<PublisherRegistry>,
    /// Leadership and listening each hold a connection of their own, outside the pool.
    database_url: String,
}

impl Cluster {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        hub: Arc<StatsHub>,
        publishers: Arc<PublisherRegistry>,
        database_url: String,
    ) -> Self {
        Self { leader: AtomicBool::new(false), store, clock, hub, publishers, database_url }
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    fn set_leader(&self, leader: bool) {
        if self.leader.swap(leader, Ordering::Relaxed) != leader {
            tracing::info!(leader, "cluster leadership changed");
        }
    }

    /// Tells the other instances that stats changed (PostgreSQL only).
    pub async fn notify(&self) {
        if self.store.kind() == DbKind::Postgres {
            if let Err(e) = self.store.notify(CHANNEL).await {
                tracing::warn!(error = %e, "cluster notification failed");
            }
        }
    }

    /// Starts leadership, change listening and publisher sharing; returns their tasks. Alone
    /// on SQLite, this instance leads and starts none.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        if self.store.kind() != DbKind::Postgres {
            self.set_leader(true);
            return Vec::new();
        }
        vec![
            tokio::spawn(lead(self.clone(), shutdown.clone())),
            tokio::spawn(listen(self.clone(), shutdown.clone())),
            tokio::spawn(share_publisher(self.clone(), shutdown)),
        ]
    }
}

/// Reports this instance's live publishers (every channel's) to the others and reads theirs.
async fn share_publisher(cluster: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    let Some(mut local) = cluster.publishers.watch_local() else {
        return tracing::error!("no local publisher source to report");
    };
    // What this instance reported: each channel's participant id.
    let mut reported: BTreeMap<ChannelId, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(SHARE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = local.changed() => if r.is_err() { return },
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let now = cluster.clock.now_ms();
        let mine = local.borrow_and_update().clone();
        let store = &cluster.store;
        let result = async {
            for (channel, p) in &mine {
                store.publishers().share(channel, p, now + SHARE_TTL_MS).await?;
            }
            for (channel, pid) in &reported {
                if !mine.contains_key(channel) {
                    store.publishers().unshare(channel, pid).await?;
                }
            }
            store.publishers().shared_all(now).await
        }
        .await;
        match result {
            Ok(mut shared) => {
                reported = mine.into_iter().map(|(c, p)| (c, p.participant_id)).collect();
                shared.retain(|channel, p| reported.get(channel) != Some(&p.participant_id));
                // A change wakes the stats hub (`PublisherRegistry::changes`).
                cluster.publishers.set_remote(shared);
            }
            Err(e) => tracing::warn!(error = %e, "publisher report failed; will retry"),
        }
    }
    for (channel, pid) in reported {
        let _ = cluster.store.publishers().unshare(&channel, &pid).await;
    }
}

async fn lead(cluster: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let held = async {
            let mut conn = PgConnection::connect(&cluster.database_url).await?;
            loop {
                let got: bool =
                    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK).fetch_one(&mut conn).await?;
                cluster.set_leader(got);
                if got {
                    // Hold the lock while the session lives; check it every period.
                    loop {
                        tokio::time::sleep(RETRY).await;
                        // A ping that hangs (a network black hole) loses the lead: the lock may
                        // be another instance's by now.
                        match tokio::time::timeout(RETRY.max(Duration::from_secs(2)), conn.ping()).await {
                            Ok(result) => result?,
                            Err(_) => return Err(sqlx::Error::PoolTimedOut),
                        }
                    }
                }
                tokio::time::sleep(RETRY).await;
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            r = held => {
                cluster.set_leader(false);
                if let Err(e) = r {
                    tracing::warn!(error = %e, "leader connection lost; retrying");
                }
            }
            _ = shutdown.wait_for(|s| *s) => {
                cluster.set_leader(false);
                return;
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn listen(cluster: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let run = async {
            let mut listener = PgListener::connect(&cluster.database_url).await?;
            listener.listen(CHANNEL).await?;
            // Anything missed while not listening: recompute once.
            cluster.hub.mark_remote_change();
            loop {
                listener.recv().await?;
                cluster.hub.mark_remote_change();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            r = run => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "cluster listener lost; retrying");
                }
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
        tokio::time::sleep(RETRY).await;
    }
}
