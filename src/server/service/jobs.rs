//! Background jobs: batched heartbeat writes, presence sweep, auto-scaling, snapshots and the
//! stats hub. Each stops when `shutdown` turns true (after one last heartbeat flush).

use super::Service;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{interval, MissedTickBehavior};

fn every<F, Fut>(period: Duration, mut shutdown: watch::Receiver<bool>, name: &'static str, mut job: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => job().await,
                _ = shutdown.changed() => break,
            }
        }
        tracing::debug!(job = name, "stopped");
    })
}

pub fn spawn_background_jobs(service: Arc<Service>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let p = &service.settings.presence;
    let mut jobs = service.cluster().spawn(shutdown.clone());

    let s = service.clone();
    let mut stop = shutdown.clone();
    let flush_every = Duration::from_millis(p.heartbeat_flush_ms);
    jobs.push(tokio::spawn(async move {
        let mut tick = interval(flush_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if let Err(e) = s.presence().flush().await {
                tracing::warn!(error = %e, "heartbeat flush failed; will retry");
            }
        }
        if let Err(e) = s.presence().flush().await {
            tracing::error!(error = %e, "final heartbeat flush failed");
        }
    }));

    let s = service.clone();
    jobs.push(every(Duration::from_secs(p.sweep_interval_secs.max(1)), shutdown.clone(), "sweep", move || {
        let s = s.clone();
        async move {
            if let Err(e) = s.presence().sweep().await {
                tracing::warn!(error = %e, "presence sweep failed");
            }
        }
    }));

    let s = service.clone();
    jobs.push(every(Duration::from_secs(p.snapshot_interval_secs.max(1)), shutdown.clone(), "snapshot", move || {
        let s = s.clone();
        async move {
            if !s.is_leader() {
                return;
            }
            if let Err(e) = s.stats().take_snapshot().await {
                tracing::warn!(error = %e, "viewer snapshot failed");
            }
        }
    }));

    // Backends that are asked about the publisher (IVS): the leader polls, and keeps the
    // publisher replicated into auto-created stages.
    if let Some(period) = service.backend.capabilities().poll_interval {
        let s = service.clone();
        jobs.push(every(period, shutdown.clone(), "backend poll", move || {
            let s = s.clone();
            async move { s.backend_sync().poll().await }
        }));
    }

    // Auto-scaling: on its interval, or early when a join finds a stage crowded.
    if !service.settings.stage.autoscale {
        return spawn_hub(service, shutdown, jobs);
    }
    let s = service.clone();
    let mut stop = shutdown.clone();
    let period = Duration::from_secs(service.settings.stage.autoscale_interval_secs.max(1));
    jobs.push(tokio::spawn(async move {
        let mut tick = interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = s.autoscaler().kicked() => {}
                _ = stop.changed() => break,
            }
            if !s.is_leader() {
                continue;
            }
            for (channel, decision) in s.autoscaler().step_all().await {
                match decision {
                    Ok(d) if d != crate::domain::autoscale::ScaleDecision::Hold => {
                        tracing::info!(%channel, decision = ?d, "auto-scaled")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%channel, error = %e, "auto-scaling step failed"),
                }
            }
        }
    }));

    spawn_hub(service, shutdown, jobs)
}

/// Stats hub: recompute within 100 ms of a change, and at least every `stats_refresh_secs` (5 s).
fn spawn_hub(service: Arc<Service>, shutdown: watch::Receiver<bool>, mut jobs: Vec<JoinHandle<()>>) -> Vec<JoinHandle<()>> {
    let s = service.clone();
    let mut stop = shutdown;
    let mut publishers = service.publishers().changes();
    let refresh_every = Duration::from_secs(service.settings.presence.stats_refresh_secs.max(1));
    jobs.push(tokio::spawn(async move {
        let mut tick = interval(refresh_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = s.hub.dirtied() => {}
                _ = publishers.changed() => {}
                _ = stop.changed() => break,
            }
            let local = s.hub.take_local_change();
            match s.stats().refresh().await {
                Ok(changed) if changed && local => s.cluster().notify().await,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "stats refresh failed"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }));

    jobs
}
