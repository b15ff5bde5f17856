//! `/dashboard`: live totals, the stage table and the viewers-over-time chart.

use super::directory::use_directory;
use super::{use_live_stats, LiveBadge};
use crate::api::SeriesPoint;
use crate::app::interop;
use crate::domain::ChannelId;
use crate::rpc::{dashboard_data, ManageChannel};
use leptos::prelude::*;
use std::collections::BTreeMap;

const CHART_W: i64 = 640;
const CHART_H: i64 = 200;
/// Live points kept in the page (one per update, ~ every 5 s: two hours).
const LIVE_POINTS: usize = 1440;

/// The dashboard: live totals, the stage table and viewers over time.
#[component]
pub fn DashboardPage() -> impl IntoView {
    let data = Resource::new(|| (), |_| dashboard_data());
    let feed: RwSignal<Vec<SeriesPoint>> = RwSignal::new(Vec::new());
    let (stats, hydrated) = use_live_stats(None, move |s| {
        let point = SeriesPoint { at_ms: interop::now_ms(), viewers: s.total_viewers };
        let _ = feed.try_update(|f| {
            f.push(point);
            if f.len() > LIVE_POINTS {
                f.remove(0);
            }
        });
    });
    let stats = Signal::derive(move || stats.get().or_else(|| data.get().and_then(Result::ok).map(|d| d.stats)));
    // Each channel's audience as the directory pushes it: a live point per update.
    let channel_feed: RwSignal<BTreeMap<ChannelId, Vec<SeriesPoint>>> = RwSignal::new(BTreeMap::new());
    let directory = use_directory(move |d| {
        let at_ms = interop::now_ms();
        let _ = channel_feed.try_update(|feed| {
            for c in &d.channels {
                let points = feed.entry(c.name.clone()).or_default();
                points.push(SeriesPoint { at_ms, viewers: c.viewer_count });
                if points.len() > LIVE_POINTS {
                    points.remove(0);
                }
            }
        });
    });
    let channel_series = move |channel: &ChannelId| {
        let mut points = data
            .get()
            .and_then(Result::ok)
            .and_then(|d| d.channel_series.into_iter().find(|s| s.channel == *channel).map(|s| s.points))
            .unwrap_or_default();
        points.extend(channel_feed.with(|f| f.get(channel).cloned().unwrap_or_default()));
        points
    };
    let series = move || {
        let mut points = data.get().and_then(Result::ok).map(|d| d.series).unwrap_or_default();
        points.extend(feed.get());
        points
    };
    let count_of = move |arn: &str| {
        stats.get().and_then(|s| s.stages.iter().find(|c| c.stage_arn == arn).map(|c| c.viewer_count)).unwrap_or(0)
    };

    view! {
        <section class="dashboard" data-hydrated=move || hydrated.get().to_string()>
          <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            <div class="studio-head">
                <h1>"Dashboard"</h1>
                <LiveBadge stats/>
            </div>
            <dl class="totals">
                <div>
                    <dt>"Viewers"</dt>
                    <dd data-testid="dash-viewers">{move || stats.get().map(|s| s.total_viewers).unwrap_or(0)}</dd>
                </div>
                <div>
                    <dt>"Active stages"</dt>
                    <dd data-testid="dash-stages">{move || stats.get().map(|s| s.active_stages).unwrap_or(0)}</dd>
                </div>
                <div>
                    <dt>"Publisher"</dt>
                    <dd data-testid="dash-publisher">
                        {move || if stats.get().is_some_and(|s| s.is_publisher_live) { "Live" } else { "Offline" }}
                    </dd>
                </div>
            </dl>
            <div class="card">
                <h2>"Viewers over time"</h2>
                <Chart points=Signal::derive(series)/>
            </div>
            {move || data.get().and_then(Result::ok).filter(|d| d.can_manage).map(|_| view! { <ChannelAdmin/> })}
            <div class="card">
                <h2>"Channels"</h2>
                <table class="stages" data-testid="channel-table">
                    <thead>
                        <tr>
                            <th scope="col">"Channel"</th>
                            <th scope="col">"Status"</th>
                            <th scope="col" class="num">"Viewers"</th>
                            <th scope="col">"Viewers over time"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {move || directory.get().channels.into_iter().map(|c| {
                            let name = c.name.clone();
                            let points = Signal::derive(move || channel_series(&name));
                            view! {
                                <tr data-testid="channel-row" data-channel=c.name.to_string()>
                                    <td><a href=format!("/c/{}", c.name)>{c.title}</a>" "<span class="muted mono">{c.name.to_string()}</span></td>
                                    <td data-testid="channel-status">{if c.is_live { "Live" } else { "Offline" }}</td>
                                    <td class="num" data-testid="channel-viewers">{c.viewer_count}</td>
                                    <td class="spark"><Chart points/></td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
            <div class="card">
                <h2>"Stages"</h2>
                <table class="stages" data-testid="stage-table">
                    <thead>
                        <tr><th scope="col">"Stage"</th><th scope="col">"Role"</th><th scope="col" class="num">"Viewers"</th></tr>
                    </thead>
                    <tbody>
                            {move || data.get().and_then(Result::ok).map(|d| {
                                d.stages.into_iter().map(|s| {
                                    let arn = s.arn.clone();
                                    let short = s.arn.rsplit('/').next().unwrap_or_default().to_string();
                                    let role = if s.is_master { "master" } else if s.auto_scaled { "auto-scaled" } else { "manual" };
                                    view! {
                                        <tr>
                                            <td title=s.arn.clone()><span class="mono">{short}</span>" "<span class="muted">{s.name}</span></td>
                                            <td>{role}</td>
                                            <td class="num" data-testid="stage-viewers">{move || count_of(&arn)}</td>
                                        </tr>
                                    }
                                }).collect_view()
                            })}
                    </tbody>
                </table>
            </div>
          </Suspense>
        </section>
    }
}

/// Creating channels and rotating their stream keys, for a browser signed in with the API key
/// (at `/broadcast`). A new key is shown once.
#[component]
fn ChannelAdmin() -> impl IntoView {
    let manage = ServerAction::<ManageChannel>::new();
    let name = NodeRef::<leptos::html::Input>::new();
    let title = NodeRef::<leptos::html::Input>::new();
    let rotate_name = NodeRef::<leptos::html::Input>::new();
    let on_create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if let (Some(n), Some(t)) = (name.get(), title.get()) {
            let title = Some(t.value()).filter(|t| !t.trim().is_empty());
            manage.dispatch(ManageChannel { name: n.value(), title, rotate: false });
        }
    };
    let on_rotate = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if let Some(n) = rotate_name.get() {
            manage.dispatch(ManageChannel { name: n.value(), title: None, rotate: true });
        }
    };
    view! {
        <div class="card" data-testid="channel-admin">
            <h2>"Manage channels"</h2>
            <form class="inline-form" on:submit=on_create>
                <label for="new-channel">"New channel"</label>
                <input id="new-channel" node_ref=name required=true placeholder="name (a-z, 0-9, -)" data-testid="new-channel-name"/>
                <input node_ref=title placeholder="title" aria-label="title" data-testid="new-channel-title"/>
                <button class="primary" type="submit" data-testid="create-channel">"Create"</button>
            </form>
            <form class="inline-form" on:submit=on_rotate>
                <label for="rotate-channel">"New stream key for"</label>
                <input id="rotate-channel" node_ref=rotate_name required=true placeholder="channel name" data-testid="rotate-channel-name"/>
                <button class="ghost" type="submit" data-testid="rotate-key">"Rotate"</button>
            </form>
            {move || manage.value().get().map(|r| match r {
                Ok(k) => {
                    let copy = k.stream_key.clone();
                    view! {
                        <p class="muted small">{format!("Stream key of {} (shown only now):", k.channel)}</p>
                        <div class="copy-row">
                            <input readonly=true value=k.stream_key data-testid="issued-stream-key" aria-label="stream key"/>
                            <button class="ghost" on:click=move |_| interop::copy_text(&copy)>"Copy"</button>
                        </div>
                    }.into_any()
                }
                Err(e) => view! { <p class="error" role="alert" data-testid="channel-admin-error">{e.to_string()}</p> }.into_any(),
            })}
        </div>
    }
}

/// A line chart as SVG: rendered on the server, redrawn as points arrive.
#[component]
fn Chart(points: Signal<Vec<SeriesPoint>>) -> impl IntoView {
    let geometry = move || {
        let pts = points.get();
        if pts.is_empty() {
            return (String::new(), 0u32, String::new(), String::new());
        }
        let t0 = pts.first().map(|p| p.at_ms).unwrap_or(0);
        let t1 = pts.last().map(|p| p.at_ms).unwrap_or(0).max(t0 + 1);
        let max = pts.iter().map(|p| p.viewers).max().unwrap_or(0).max(1);
        // Integer coordinates: the chart is 640 user units wide, finer steps would not show.
        let line = pts
            .iter()
            .map(|p| {
                let x = (p.at_ms - t0) * CHART_W / (t1 - t0);
                let y = CHART_H - i64::from(p.viewers) * (CHART_H - 10) / i64::from(max);
                format!("{x},{y}")
            })
            .collect::<Vec<_>>()
            .join(" ");
        (line, max, clock(t0), clock(t1))
    };
    view! {
        <figure class="chart">
            <svg viewBox=format!("0 0 {CHART_W} {CHART_H}") preserveAspectRatio="none" role="img" aria-label="Viewers over time" data-testid="chart">
                <line x1="0" y1=CHART_H x2=CHART_W y2=CHART_H class="axis"/>
                <polyline points=move || geometry().0 class="series" fill="none"/>
            </svg>
            <figcaption class="muted small">
                {move || {
                    let (_, max, from, to) = geometry();
                    if from.is_empty() { "No data yet.".to_string() } else { format!("{from} – {to} · peak {max}") }
                }}
            </figcaption>
        </figure>
    }
}

fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02} UTC", secs / 3600, secs % 3600 / 60)
}
