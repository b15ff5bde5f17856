//! The pages and what they share: the live-stats context and the live badge.

mod broadcast;
mod dashboard;
pub(crate) mod directory;
mod viewer;

pub use broadcast::BroadcastPage;
pub use dashboard::DashboardPage;
pub use directory::ChannelDirectory;
pub use viewer::ViewerPage;

use crate::api::LiveStats;
use crate::app::interop;
use crate::domain::ChannelId;
use leptos::prelude::*;

/// `/`: the default channel's player, then the directory of every channel.
#[component]
pub fn HomePage() -> impl IntoView {
    view! {
        <ViewerPage/>
        <ChannelDirectory/>
    }
}

/// The channel a page under `/c/NAME` is about (`None`: the default one, or a name that is not
/// a channel's).
pub(crate) fn page_channel() -> Option<ChannelId> {
    let params = leptos_router::hooks::use_params_map();
    params.read_untracked().get("name").and_then(|n| ChannelId::parse(n).ok())
}

/// Live totals of `channel` for this page: the server's current figures (serialized into the
/// page for hydration), then every `stats_update` from `/ws`.
pub(crate) fn use_live_stats(
    channel: Option<ChannelId>,
    on_update: impl Fn(&LiveStats) + 'static,
) -> (Signal<Option<LiveStats>>, RwSignal<bool>) {
    let first = channel.clone();
    let initial = leptos::server::SharedValue::new(move || current_stats(first.as_ref())).into_inner();
    let pushed: RwSignal<Option<LiveStats>> = RwSignal::new(None);
    let hydrated = RwSignal::new(false);
    let on_update = std::rc::Rc::new(on_update);
    Effect::new(move |_| {
        hydrated.set(true);
        let cb = on_update.clone();
        let id = interop::subscribe_stats(channel.clone(), move |s| {
            cb(&s);
            let _ = pushed.try_set(Some(s));
        });
        on_cleanup(move || interop::unsubscribe_stats(id));
    });
    let stats = Signal::derive(move || pushed.get().or_else(|| initial.clone()));
    (stats, hydrated)
}

/// The figures the stats hub held of `channel` as this request arrived (server only; the
/// browser reads them from the page).
fn current_stats(channel: Option<&ChannelId>) -> Option<LiveStats> {
    #[cfg(feature = "ssr")]
    {
        let channel = channel.cloned().unwrap_or_default();
        use_context::<crate::api::CurrentStats>().and_then(|current| (current.0)(&channel))
    }
    #[cfg(not(feature = "ssr"))]
    {
        let _ = channel;
        None
    }
}

/// The LIVE / OFFLINE badge.
#[component]
pub(crate) fn LiveBadge(stats: Signal<Option<LiveStats>>) -> impl IntoView {
    let live = move || stats.get().is_some_and(|s| s.is_publisher_live);
    view! {
        <span class="badge" class:live=live data-testid="live-badge" role="status">
            {move || if live() { "● LIVE" } else { "OFFLINE" }}
        </span>
    }
}
