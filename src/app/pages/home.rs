use crate::api::server_fns::{get_live_stats, join_stream, JoinStream};
use crate::api::{JoinOutcome, LiveStats};
use crate::app::interop;
use leptos::prelude::*;

/// The home page: live status and totals, updated over `/ws`, and joining the broadcast.
#[component]
pub fn HomePage() -> impl IntoView {
    let initial = Resource::new(|| (), |_| get_live_stats());
    let live: RwSignal<Option<LiveStats>> = RwSignal::new(None);
    let hydrated = RwSignal::new(false);
    let join = ServerAction::<JoinStream>::new();
    let _ = join_stream; // the action calls it through its generated type

    Effect::new(move |_| {
        hydrated.set(true);
        interop::subscribe_stats(move |stats| live.set(Some(stats)));
    });

    let stats = move || live.get().or_else(|| initial.get().and_then(Result::ok));
    let join_state = move || match join.value().get() {
        None => None,
        Some(Ok(JoinOutcome::Joined(t))) => {
            Some(format!("Joined stage {} ({} watching)", t.stage_arn.rsplit('/').next().unwrap_or_default(), t.current_viewers))
        }
        Some(Ok(JoinOutcome::Offline)) => Some("The broadcast is offline right now.".to_string()),
        Some(Ok(JoinOutcome::Full)) => Some("Every stage is full; try again in a moment.".to_string()),
        Some(Err(e)) => Some(format!("Could not join: {e}")),
    };

    view! {
        <section id="home" class="home" data-hydrated=move || hydrated.get().to_string()>
            <h1>"Live"</h1>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || {
                    let s = stats();
                    let is_live = s.as_ref().is_some_and(|s| s.is_publisher_live);
                    view! {
                        <p class="badge" class:live=is_live data-testid="live-badge">
                            {if is_live { "● LIVE" } else { "OFFLINE" }}
                        </p>
                        <dl class="totals">
                            <div>
                                <dt>"Viewers"</dt>
                                <dd data-testid="total-viewers">{s.as_ref().map(|s| s.total_viewers).unwrap_or(0)}</dd>
                            </div>
                            <div>
                                <dt>"Stages"</dt>
                                <dd data-testid="active-stages">{s.as_ref().map(|s| s.active_stages).unwrap_or(0)}</dd>
                            </div>
                        </dl>
                    }
                }}
            </Suspense>
            <button
                class="primary"
                data-testid="join"
                disabled=move || join.pending().get()
                on:click=move |_| {
                    join.dispatch(JoinStream { user_id: interop::viewer_id() });
                }
            >
                "Watch"
            </button>
            <p class="notice" data-testid="join-state" role="status">{join_state}</p>
        </section>
    }
}
