//! `/` and `/c/NAME`: the player of a channel (the default one at `/`), its status and the live
//! audience.

use super::{page_channel, use_live_stats, LiveBadge};
use crate::app::interop::{self, player, player::PlayerStatus};
use leptos::prelude::*;

const VIDEO_ID: &str = "player-video";
const PLAYER_ID: &str = "player";

/// The viewer page: plays the broadcast with sub-second latency, live status and audience.
#[component]
pub fn ViewerPage() -> impl IntoView {
    let status = RwSignal::new(PlayerStatus::Starting);
    let muted = RwSignal::new(true);
    let channel = page_channel();
    let (stats, hydrated) = use_live_stats(channel.clone(), |s| player::set_live(s.is_publisher_live));

    let joined = channel.clone();
    Effect::new(move |_| player::start(VIDEO_ID, joined.clone(), status));
    on_cleanup(player::stop);

    let viewers = move || stats.get().map(|s| s.total_viewers).unwrap_or(0);
    view! {
        <section
            id="viewer"
            class="viewer"
            data-channel=channel.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "default".into())
            data-hydrated=move || hydrated.get().to_string()
        >
            <div id=PLAYER_ID class="player" data-state=move || status.get().key()>
                <video id=VIDEO_ID data-testid="video" autoplay=true muted=true playsinline=true></video>
                <div class="overlay" data-testid="player-state" role="status" aria-live="polite">
                    {move || status.get().message()}
                </div>
                <div class="controls">
                    <LiveBadge stats/>
                    <span class="count" data-testid="viewer-count" aria-label="viewers watching now">
                        {move || format!("{} watching", viewers())}
                    </span>
                    <span class="spacer"></span>
                    <button
                        class="ghost"
                        data-testid="unmute"
                        aria-pressed=move || (!muted.get()).to_string()
                        on:click=move |_| muted.set(player::toggle_mute(VIDEO_ID))
                    >
                        {move || if muted.get() { "Unmute" } else { "Mute" }}
                    </button>
                    <button class="ghost" data-testid="fullscreen" on:click=move |_| interop::toggle_fullscreen(PLAYER_ID)>
                        "Fullscreen"
                    </button>
                </div>
            </div>
            <dl class="totals">
                <div>
                    <dt>"Viewers"</dt>
                    <dd data-testid="total-viewers">{viewers}</dd>
                </div>
                <div>
                    <dt>"Stages"</dt>
                    <dd data-testid="active-stages">{move || stats.get().map(|s| s.active_stages).unwrap_or(0)}</dd>
                </div>
            </dl>
        </section>
    }
}
