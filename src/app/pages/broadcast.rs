//! `/broadcast` and `/c/NAME/broadcast`: sign-in, then the studio of that channel (preview,
//! devices, go live / stop).

use super::{page_channel, use_live_stats, LiveBadge};
use crate::app::interop::{self, studio, studio::Devices, studio::PublishState};
use crate::rpc::{broadcaster_signed_in, publisher_ticket, BroadcasterSignIn, BroadcasterSignOut};
use leptos::prelude::*;
use leptos::task::spawn_local;

const PREVIEW_ID: &str = "preview-video";
const RESOLUTIONS: [(u32, &str); 3] = [(720, "720p (HD)"), (1080, "1080p (Full HD)"), (480, "480p (SD)")];

/// The broadcaster page: sign in with the API key, then the studio.
#[component]
pub fn BroadcastPage() -> impl IntoView {
    let page = page_channel().map(|c| c.to_string());
    let asked = page.clone();
    let signed_in = Resource::new(|| (), move |_| broadcaster_signed_in(asked.clone()));
    let sign_in = ServerAction::<BroadcasterSignIn>::new();
    let sign_out = ServerAction::<BroadcasterSignOut>::new();
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    Effect::new(move |_| {
        if matches!(sign_in.value().get(), Some(Ok(true))) || sign_out.value().get().is_some() {
            signed_in.refetch();
        }
    });
    view! {
        <section class="broadcast" data-hydrated=move || hydrated.get().to_string()>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || match signed_in.get() {
                    Some(Ok(true)) => view! { <Studio sign_out/> }.into_any(),
                    Some(_) => view! { <SignIn sign_in channel=page.clone()/> }.into_any(),
                    None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                }}
            </Suspense>
        </section>
    }
}

#[component]
fn SignIn(sign_in: ServerAction<BroadcasterSignIn>, channel: Option<String>) -> impl IntoView {
    let key = NodeRef::<leptos::html::Input>::new();
    let (hint, label, refused) = match &channel {
        Some(name) => (
            format!("Sign in with channel {name}'s stream key, or the server's API key, to go live."),
            "Stream key or API key",
            "That is neither this channel's stream key nor the API key.",
        ),
        None => ("Sign in with the server's API key to go live.".to_string(), "API key", "That API key is not valid."),
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if let Some(input) = key.get() {
            sign_in.dispatch(BroadcasterSignIn { api_key: input.value(), channel: channel.clone() });
        }
    };
    view! {
        <div class="card narrow" id="sign-in">
            <h1>"Broadcast"</h1>
            <p class="muted">{hint}</p>
            <form on:submit=submit>
                <label for="api-key">{label}</label>
                <input id="api-key" node_ref=key name="api_key" type="password" autocomplete="current-password" required=true data-testid="api-key"/>
                <button class="primary" type="submit" data-testid="sign-in">"Sign in"</button>
            </form>
            <p class="error" role="alert" data-testid="sign-in-error">
                {move || match sign_in.value().get() {
                    Some(Ok(false)) => Some(refused.to_string()),
                    // e.g. too many failed attempts: how long to wait
                    Some(Err(crate::api::RpcError::Api { message, .. })) => Some(message),
                    _ => None,
                }}
            </p>
        </div>
    }
}

#[component]
fn Studio(sign_out: ServerAction<BroadcasterSignOut>) -> impl IntoView {
    let state = RwSignal::new(PublishState::Idle);
    let devices = RwSignal::new(Devices::default());
    let camera = RwSignal::new(String::new());
    let microphone = RwSignal::new(String::new());
    let height = RwSignal::new(720u32);
    let hydrated = RwSignal::new(false);
    let channel = page_channel();
    let name = channel.as_ref().map(|c| c.to_string());
    let asked = name.clone();
    let ticket = Resource::new(|| (), move |_| publisher_ticket(asked.clone()));
    let reveal = RwSignal::new(false);
    let (stats, _) = use_live_stats(channel.clone(), |_| {});

    Effect::new(move |_| {
        hydrated.set(true);
        studio::start(PREVIEW_ID, state, devices, 720);
    });
    on_cleanup(studio::shutdown);

    let choose = move || {
        let pick = |v: String| (!v.is_empty()).then_some(v);
        studio::choose(pick(camera.get_untracked()), pick(microphone.get_untracked()), height.get_untracked());
    };
    let go_live = move |_| {
        state.set(PublishState::Connecting);
        let name = name.clone();
        spawn_local(async move {
            // A fresh token for every broadcast.
            match publisher_ticket(name).await {
                Ok(t) => studio::go_live(t.whip_endpoint, t.token, t.sdk_url),
                Err(e) => state.set(PublishState::Failed(format!("Could not get a publisher token: {e}"))),
            }
        });
    };
    let is_live = move || matches!(state.get(), PublishState::Live | PublishState::Connecting);
    let status_text = move || match state.get() {
        PublishState::Idle => "Camera off".to_string(),
        PublishState::Previewing => "Preview — not live".to_string(),
        PublishState::Connecting => "Connecting…".to_string(),
        PublishState::Live => "You are live".to_string(),
        PublishState::Failed(m) => m,
    };

    view! {
        <div class="studio" data-ready=move || hydrated.get().to_string()>
            <div class="studio-head">
                <h1>"Studio"</h1>
                {channel.as_ref().map(|c| view! { <span class="muted" data-testid="studio-channel">{c.to_string()}</span> })}
                <LiveBadge stats/>
                <span class="count" data-testid="viewer-count">
                    {move || format!("{} watching", stats.get().map(|s| s.total_viewers).unwrap_or(0))}
                </span>
                <span class="spacer"></span>
                <button class="ghost" type="button" on:click=move |_| { sign_out.dispatch(BroadcasterSignOut {}); }>"Sign out"</button>
            </div>
            <div class="studio-grid">
                <div class="player preview" data-state=move || state.get().key()>
                    <video id=PREVIEW_ID data-testid="preview" autoplay=true muted=true playsinline=true></video>
                </div>
                <div class="card controls-panel">
                    <p class="publish-state" data-testid="publish-state" data-state=move || state.get().key() role="status">
                        {status_text}
                    </p>
                    <label for="camera">"Camera"</label>
                    <select id="camera" data-testid="camera" on:change=move |ev| { camera.set(event_target_value(&ev)); choose(); }>
                        <For each=move || devices.get().cameras key=|d| d.0.clone() let:d>
                            <option value=d.0.clone()>{d.1.clone()}</option>
                        </For>
                    </select>
                    <label for="microphone">"Microphone"</label>
                    <select id="microphone" data-testid="microphone" on:change=move |ev| { microphone.set(event_target_value(&ev)); choose(); }>
                        <For each=move || devices.get().microphones key=|d| d.0.clone() let:d>
                            <option value=d.0.clone()>{d.1.clone()}</option>
                        </For>
                    </select>
                    <label for="resolution">"Resolution"</label>
                    <select
                        id="resolution"
                        data-testid="resolution"
                        on:change=move |ev| {
                            height.set(event_target_value(&ev).parse().unwrap_or(720));
                            choose();
                        }
                    >
                        {RESOLUTIONS.iter().map(|(h, label)| view! { <option value=h.to_string() selected=*h == 720>{*label}</option> }).collect_view()}
                    </select>
                    <div class="actions">
                        <button class="primary live-button" data-testid="go-live" disabled=is_live on:click=go_live>
                            "Go live"
                        </button>
                        <button class="danger" data-testid="stop" disabled=move || !is_live() on:click=move |_| studio::stop_broadcast()>
                            "Stop"
                        </button>
                    </div>
                </div>
            </div>
            <div class="card obs">
                <h2>"Stream from OBS"</h2>
                <p class="muted">"Settings → Stream → Service: WHIP. Use H.264 with no B-frames and Opus audio, 1 s keyframes."</p>
                <Suspense fallback=|| ()>
                    {move || ticket.get().map(|t| match t {
                        Ok(t) => {
                            let (url, token) = (t.whip_endpoint.clone(), t.token.clone());
                            let (url_c, token_c) = (url.clone(), token.clone());
                            view! {
                                <label for="obs-server">"Server"</label>
                                <div class="copy-row">
                                    <input id="obs-server" readonly=true value=url data-testid="obs-server"/>
                                    <button class="ghost" on:click=move |_| interop::copy_text(&url_c)>"Copy"</button>
                                </div>
                                <label for="obs-token">"Bearer token"</label>
                                <div class="copy-row">
                                    <input
                                        id="obs-token"
                                        readonly=true
                                        type=move || if reveal.get() { "text" } else { "password" }
                                        value=token
                                        data-testid="obs-token"
                                    />
                                    <button class="ghost" on:click=move |_| reveal.update(|r| *r = !*r)>
                                        {move || if reveal.get() { "Hide" } else { "Show" }}
                                    </button>
                                    <button class="ghost" on:click=move |_| interop::copy_text(&token_c)>"Copy"</button>
                                </div>
                                <p class="muted small">{format!("The token is valid until {}.", t.expires_at)}</p>
                                {t.stream_key_endpoint.clone().map(|endpoint| {
                                    let copy = endpoint.clone();
                                    view! {
                                        <p class="muted small">
                                            "Or one setting that never expires: this Server with the channel's stream key as the Bearer token."
                                        </p>
                                        <div class="copy-row">
                                            <input readonly=true value=endpoint data-testid="obs-stream-key-server" aria-label="Server for the stream key"/>
                                            <button class="ghost" on:click=move |_| interop::copy_text(&copy)>"Copy"</button>
                                        </div>
                                    }
                                })}
                            }
                            .into_any()
                        }
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    })}
                </Suspense>
            </div>
        </div>
    }
}
