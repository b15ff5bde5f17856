//! The channel directory: a card per channel (title, live badge, audience), live channels
//! first, following every `channels_update` from `/ws`.

use crate::api::{Directory, DirectoryEntry};
use crate::app::interop;
use leptos::prelude::*;

/// The directory as the stats hub held it when this page was rendered (server only; the
/// browser reads it from the page).
fn current_directory() -> Option<Directory> {
    #[cfg(feature = "ssr")]
    {
        use_context::<crate::api::CurrentDirectory>().map(|current| (current.0)())
    }
    #[cfg(not(feature = "ssr"))]
    {
        None
    }
}

/// The channel directory for this page: the server's as it rendered (serialized into the page
/// for hydration), then every `channels_update` from `/ws`, each also given to `on_update`.
pub(crate) fn use_directory(on_update: impl Fn(&Directory) + 'static) -> Signal<Directory> {
    let initial = leptos::server::SharedValue::new(current_directory).into_inner();
    let pushed: RwSignal<Option<Directory>> = RwSignal::new(None);
    let on_update = std::rc::Rc::new(on_update);
    Effect::new(move |_| {
        let cb = on_update.clone();
        let id = interop::subscribe_directory(move |d| {
            cb(&d);
            let _ = pushed.try_set(Some(d));
        });
        on_cleanup(move || interop::unsubscribe_stats(id));
    });
    Signal::derive(move || pushed.get().or_else(|| initial.clone()).unwrap_or_default())
}

/// One channel's card.
fn card(c: DirectoryEntry) -> impl IntoView {
    let href = format!("/c/{}", c.name);
    view! {
        <li class="card channel-card" data-testid="channel-card" data-channel=c.name.to_string() data-live=c.is_live.to_string()>
            <a href=href>
                <span class="badge" class:live=c.is_live>{if c.is_live { "● LIVE" } else { "OFFLINE" }}</span>
                <strong class="channel-title">{c.title}</strong>
                <span class="count" data-testid="channel-viewers">{format!("{} watching", c.viewer_count)}</span>
                {c.description.map(|d| view! { <span class="muted channel-description">{d}</span> })}
            </a>
        </li>
    }
}

#[component]
pub fn ChannelDirectory() -> impl IntoView {
    let directory = use_directory(|_| {});
    let live = move || directory.with(|d| d.live_channels);
    view! {
        <section class="directory" data-testid="directory" aria-labelledby="directory-title">
            <h2 id="directory-title">
                "Channels " <span class="muted" data-testid="live-channels">{move || format!("{} live", live())}</span>
            </h2>
            <ul class="channel-cards">
                {move || directory.get().channels.into_iter().map(card).collect_view()}
            </ul>
        </section>
    }
}
