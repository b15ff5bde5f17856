//! Attacks an anonymous visitor can make on the public surface, each against the real server
//! with the default per-client limits, and what stops it.

use crate::helpers::*;
use futures_util::StreamExt;
use leptos::server_fn::ServerFn;
use livestage::rpc::{BroadcasterSignIn, BroadcasterSignOut, JoinStream, LeaveStream, PublisherTicket, SendHeartbeat};
use livestage::server::config::Settings;
use livestage::testing::peer::{open_session, Peer, PeerEvent, PeerRole, VideoCodec};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The shipped per-client limits (the test defaults lift them).
fn default_limits(s: &mut Settings) {
    s.limits = Settings::defaults().limits;
}

/// A page's server-function call, as the page's fetch makes it: JSON, from the site itself.
async fn call(client: &reqwest::Client, app: &TestApp, path: &str, args: Value) -> reqwest::Response {
    client
        .post(format!("{}{path}", app.base))
        .header("content-type", "application/json")
        .header("origin", &app.base)
        .json(&args)
        .send()
        .await
        .expect("server function call")
}

async fn envelope(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} answer is not JSON: {text:?}")))
}

/// A browser as far as cookies go: it keeps the one the server sets and sends it back.
#[derive(Default)]
struct Browser {
    /// `name=value` of the cookie.
    cookie: Option<String>,
    /// The whole `Set-Cookie` header it came with.
    set_cookie: String,
}

impl Browser {
    async fn call(&mut self, app: &TestApp, path: &str, args: Value) -> (u16, Value) {
        let mut req = app.client.post(format!("{}{path}", app.base)).header("origin", &app.base).json(&args);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.expect("server function call");
        if let Some(set) = resp.headers().get("set-cookie").and_then(|v| v.to_str().ok()) {
            self.set_cookie = set.to_string();
            self.cookie = set.split(';').next().map(str::to_string);
        }
        envelope(resp).await
    }
}

#[track_caller]
fn assert_refused(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
}

async fn total_viewers(app: &TestApp) -> u64 {
    app.get("/api/stats").await.assert_ok()["totalViewers"].as_u64().expect("totalViewers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_anonymous_joins_with_fresh_identities_add_at_most_the_per_client_cap() {
    let app = spawn_app_with(|s| {
        default_limits(s);
        s.limits.joins_per_minute = 2_000; // the identity cap is what this test shows
        s.stage.max_viewers_per_stage = 5_000;
        s.stage.scale_up_threshold = 5_000;
    })
    .await;
    app.go_live().await;
    let cap = Settings::defaults().limits.viewers_per_client as u64;
    let before = total_viewers(&app).await;

    // No cookie kept: every call is a new browser, and it names a user id of its own (ignored).
    let outcomes: Vec<(u16, Value)> = futures_util::stream::iter(0..1_000)
        .map(|n| {
            let app = &app;
            async move {
                let client = reqwest::Client::new();
                envelope(call(&client, app, JoinStream::PATH, json!({ "channel": null, "user_id": format!("fake-{n}") })).await)
                    .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let joined = outcomes.iter().filter(|(s, _)| *s == 200).count() as u64;
    let refused: Vec<&(u16, Value)> = outcomes.iter().filter(|(s, _)| *s != 200).collect();
    assert_eq!(joined, cap, "joined as fresh viewers");
    for (status, body) in &refused {
        assert_refused(*status, body, 429, "TOO_MANY_REQUESTS");
    }
    app.service.stats().refresh().await.unwrap();
    let added = total_viewers(&app).await - before;
    assert!(added <= cap, "1000 anonymous joins added {added} viewers (cap {cap})");
    // None of them played: on the embedded backend a ticket alone counts nobody.
    assert_eq!(added, 0, "tickets without media added {added} viewers");

    // Another address is not held back by this one.
    let other = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 2])).build().unwrap();
    let (status, body) = envelope(call(&other, &app, JoinStream::PATH, json!({ "channel": null })).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_keeps_one_viewer_identity_its_beats_need_its_ticket_and_only_its_cookie_ends_it() {
    let app = spawn_app_with(default_limits).await;
    app.go_live().await;
    let mut browser = Browser::default();
    let (status, first) = browser.call(&app, JoinStream::PATH, json!({ "channel": null })).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "joined", "{first}");
    let user = first["userId"].as_str().expect("a viewer id").to_string();
    assert!(user.starts_with("viewer-"), "{user}");
    let cookie = browser.cookie.clone().expect("the server set the viewer cookie");
    assert!(browser.set_cookie.contains("HttpOnly"), "{}", browser.set_cookie);
    // Counted once its media connects (a page viewer on the embedded backend).
    let token = first["token"].as_str().unwrap();
    let _watching = watch(&app, &first).await;
    let (_, again) = browser.call(&app, JoinStream::PATH, json!({ "channel": null })).await;
    assert_eq!(again["userId"], user.as_str(), "the cookie names the same viewer");
    assert_eq!(again["isNewViewer"], false);
    let (stage, participant) = (again["stageArn"].as_str().unwrap(), again["participantId"].as_str().unwrap());
    assert_ne!(token, again["token"].as_str().unwrap());

    let args = |participant: &str| json!({ "stage_arn": stage, "participant_id": participant });
    assert_eq!(browser.call(&app, SendHeartbeat::PATH, args(participant)).await.0, 200);
    // Another browser (no cookie) cannot beat for it, nor can an old ticket.
    let (status, body) = Browser::default().call(&app, SendHeartbeat::PATH, args(participant)).await;
    assert_refused(status, &body, 404, "NOT_FOUND");
    let old = first["participantId"].as_str().unwrap();
    let (status, body) = browser.call(&app, SendHeartbeat::PATH, args(old)).await;
    assert_refused(status, &body, 404, "NOT_FOUND");

    // REST: a participantId that is not the ticket's neither beats nor ends the viewer.
    let r =
        app.post("/api/viewer/heartbeat", json!({ "userId": user, "stageArn": stage, "participantId": "notTheTicket" })).await;
    r.assert_error(404, "NOT_FOUND");
    app.post("/api/viewer/leave", json!({ "userId": user, "stageArn": stage, "participantId": "notTheTicket" }))
        .await
        .assert_ok();
    app.post("/api/viewer/heartbeat", json!({ "userId": user, "stageArn": stage, "participantId": participant }))
        .await
        .assert_ok();

    // The page's leave is a form post (sendBeacon); the cookie names who leaves, so another
    // browser cannot end this viewer.
    let stranger = app
        .client
        .post(format!("{}{}", app.base, LeaveStream::PATH))
        .header("origin", &app.base)
        .form(&[("stage_arn", stage)])
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 404);
    app.post("/api/viewer/heartbeat", json!({ "userId": user, "stageArn": stage })).await.assert_ok();
    let resp = app
        .client
        .post(format!("{}{}", app.base, LeaveStream::PATH))
        .header("origin", &app.base)
        .header("cookie", &cookie)
        .form(&[("stage_arn", stage)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let r = app.post("/api/viewer/heartbeat", json!({ "userId": user, "stageArn": stage })).await;
    r.assert_error(404, "NOT_FOUND");
}

/// A WHEP offer of a real (never connecting) peer with `token`, and the answer's envelope.
async fn play_offer(app: &TestApp, whep: &str, token: &str) -> (u16, Value) {
    let (_, offer) = Peer::offer(PeerRole::Play).await.unwrap();
    let r = app.client.post(whep).bearer_auth(token).header("content-type", "application/sdp").body(offer).send().await;
    envelope(r.expect("offer sent")).await
}

/// The page's join, answered 200 (joined, offline or full).
async fn page_join(app: &TestApp, browser: &mut Browser) -> Value {
    let (status, t) = browser.call(app, JoinStream::PATH, json!({ "channel": null })).await;
    assert_eq!(status, 200, "{t}");
    t
}

/// Plays the ticket's WHEP endpoint with a real peer and waits until the server counts its
/// viewer (the page's join holds a seat until then).
async fn watch(app: &TestApp, ticket: &Value) -> livestage::testing::peer::PeerHandle {
    let (whep, token) = (ticket["whepEndpoint"].as_str().expect("a WHEP endpoint"), ticket["token"].as_str().unwrap());
    let session = open_session(&app.client, whep, token, PeerRole::Play, VideoCodec::Vp8, Duration::from_secs(5)).await;
    let (stage, user) = (ticket["stageArn"].as_str().unwrap(), ticket["userId"].as_str().unwrap());
    let counted = eventually(Duration::from_secs(5), || async {
        app.get(&format!("/api/viewer/list/{}", enc(stage))).await.assert_ok()["viewers"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["userId"] == user))
    })
    .await;
    assert!(counted, "{user} is counted once its media connected");
    session.peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_viewer_is_counted_once_its_media_connects_and_a_ticket_alone_only_holds_a_seat_briefly() {
    let app = spawn_app_with(|s| {
        default_limits(s);
        s.stage.max_viewers_per_stage = 3;
        s.stage.scale_up_threshold = 3;
        s.stage.max_stages = 1;
        s.stage.join_wait_ms = 100;
    })
    .await;
    app.go_live().await;
    let counted = || async {
        app.service.stats().refresh().await.unwrap();
        total_viewers(&app).await
    };
    assert_eq!(counted().await, 0);

    // A ticket alone adds nobody to the audience, and its viewer has nothing to beat yet.
    let mut a = Browser::default();
    let (status, ticket) = a.call(&app, JoinStream::PATH, json!({ "channel": null })).await;
    assert_eq!(status, 200, "{ticket}");
    assert_eq!(ticket["status"], "joined", "{ticket}");
    assert_eq!(ticket["isNewViewer"], true, "{ticket}");
    assert_eq!(counted().await, 0, "a ticket whose media has not connected is not counted");
    let beat = json!({ "stage_arn": ticket["stageArn"], "participant_id": ticket["participantId"] });
    let (status, body) = a.call(&app, SendHeartbeat::PATH, beat.clone()).await;
    assert_refused(status, &body, 404, "NOT_FOUND");

    // Its media connects: counted, and its beats are taken.
    let _watching = watch(&app, &ticket).await;
    assert_eq!(counted().await, 1);
    assert_eq!(a.call(&app, SendHeartbeat::PATH, beat).await.0, 200);

    // Two more tickets hold the stage's last two seats (3 per stage, one stage): a fourth
    // visitor finds it full, though only one viewer is counted.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut b = Browser::default();
        let t = page_join(&app, &mut b).await;
        assert_eq!(t["status"], "joined", "{t}");
        holders.push((b, t));
    }
    assert_eq!(page_join(&app, &mut Browser::default()).await["status"], "full");
    assert_eq!(counted().await, 1);

    // A holder that leaves gives its seat back at once.
    let (leaver, t) = &holders[0];
    let resp = app
        .client
        .post(format!("{}{}", app.base, LeaveStream::PATH))
        .header("origin", &app.base)
        .header("cookie", leaver.cookie.as_deref().unwrap())
        .form(&[("stage_arn", t["stageArn"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(page_join(&app, &mut Browser::default()).await["status"], "joined", "the seat left is free");
    assert_eq!(page_join(&app, &mut Browser::default()).await["status"], "full");

    // Seats whose media never connects are given back after a few connect timeouts, and their
    // tickets no longer play.
    app.advance_secs(Settings::defaults().limits.media_connect_timeout_ms as i64 * 3 / 1000 + 1);
    app.service.presence().sweep().await.unwrap();
    assert_eq!(page_join(&app, &mut Browser::default()).await["status"], "joined", "a seat is free again");
    let held = &holders[1].1;
    let (status, body) = play_offer(&app, held["whepEndpoint"].as_str().unwrap(), held["token"].as_str().unwrap()).await;
    assert_refused(status, &body, 403, "FORBIDDEN");
    assert_eq!(counted().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_per_minute_are_capped_per_client() {
    let app = spawn_app_with(default_limits).await;
    app.go_live().await;
    let per_minute = Settings::defaults().limits.joins_per_minute;
    let mut browser = Browser::default();
    for n in 0..per_minute {
        let (status, body) = browser.call(&app, JoinStream::PATH, json!({ "channel": null })).await;
        assert_eq!(status, 200, "join {n}: {body}");
    }
    let (status, body) = browser.call(&app, JoinStream::PATH, json!({ "channel": null })).await;
    assert_refused(status, &body, 429, "TOO_MANY_REQUESTS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_functions_get_the_apis_limits_and_envelope() {
    let app = spawn_app_with(|s| {
        default_limits(s);
        s.limits.page_requests = 6;
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}{}", app.base, SendHeartbeat::PATH);

    // An oversized body: the 64 KiB limit, in the envelope.
    let big = json!({ "stage_arn": "x".repeat(100 * 1024), "participant_id": "p" });
    let (status, body) = envelope(call(&client, &app, SendHeartbeat::PATH, big).await).await;
    assert_refused(status, &body, 413, "PAYLOAD_TOO_LARGE");
    // A function's own refusal has its code's status, not 500.
    let args = json!({ "stage_arn": "arn:aws:ivs:us-east-1:123456789012:stage/abcdEFGH1234", "participant_id": "p" });
    let (status, body) = envelope(call(&client, &app, SendHeartbeat::PATH, args.clone()).await).await;
    assert_refused(status, &body, 404, "NOT_FOUND");
    let (status, body) = envelope(call(&client, &app, SendHeartbeat::PATH, json!({ "stage_arn": "x" })).await).await;
    assert_refused(status, &body, 400, "VALIDATION_ERROR");
    // From another site, or as a body a cross-site form can send without asking: refused.
    let r = client.post(&url).header("content-type", "application/json").header("origin", "https://evil.example").json(&args);
    let (status, body) = envelope(r.send().await.unwrap()).await;
    assert_refused(status, &body, 403, "FORBIDDEN");
    let r = client.post(&url).header("content-type", "text/plain").header("origin", &app.base).body(args.to_string());
    let (status, body) = envelope(r.send().await.unwrap()).await;
    assert_refused(status, &body, 415, "UNSUPPORTED_MEDIA_TYPE");
    // The sixth call in the window, then the limit.
    let (status, _) = envelope(call(&client, &app, SendHeartbeat::PATH, args.clone()).await).await;
    assert_eq!(status, 404);
    let (status, body) = envelope(call(&client, &app, SendHeartbeat::PATH, args).await).await;
    assert_refused(status, &body, 429, "TOO_MANY_REQUESTS");

    // Counted in the request metrics under the function's route.
    let metrics = client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    let route = format!("route=\"{}\",status=\"429\"", SendHeartbeat::PATH);
    assert!(metrics.lines().any(|l| l.starts_with("livestage_http_requests_total") && l.contains(&route)), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn studio_sign_in_waits_longer_after_each_failure() {
    let app = spawn_app_with(default_limits).await;
    let client = reqwest::Client::new();
    let free = Settings::defaults().limits.sign_in_failures;
    let try_key = |key: &'static str| {
        let client = client.clone();
        let app = &app;
        async move { envelope(call(&client, app, BroadcasterSignIn::PATH, json!({ "api_key": key, "channel": null })).await).await }
    };
    for n in 0..free {
        let (status, body) = try_key("guess").await;
        assert_eq!((status, &body), (200, &json!(false)), "attempt {n}");
    }
    // Now even the right key waits: guessing cannot go on at speed.
    let (status, body) = try_key(API_KEY).await;
    assert_refused(status, &body, 429, "TOO_MANY_REQUESTS");
    // Another address signs in.
    let other = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 3])).build().unwrap();
    let (status, body) =
        envelope(call(&other, &app, BroadcasterSignIn::PATH, json!({ "api_key": API_KEY, "channel": null })).await).await;
    assert_eq!((status, body), (200, json!(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_with_made_up_methods_leave_the_metrics_the_same_size() {
    let app = spawn_app_with(default_limits).await;
    let client = reqwest::Client::new();
    let made_up = |n: u64| {
        let token: String = (0..(8 + n % 56)).map(|i| (b'A' + ((n * 31 + i * 7) % 26) as u8) as char).collect();
        reqwest::Method::from_bytes(format!("{token}{n}").as_bytes()).unwrap()
    };
    let send = |range: std::ops::Range<u64>| {
        let client = client.clone();
        let base = app.base.clone();
        async move {
            futures_util::stream::iter(range)
                .map(|n| {
                    let (client, base) = (client.clone(), base.clone());
                    let path = ["/api/stats", "/whip", "/api/viewer/heartbeat", "/nowhere"][(n % 4) as usize];
                    async move { client.request(made_up(n), format!("{base}{path}")).send().await.map(|r| r.status()) }
                })
                .buffer_unordered(32)
                .collect::<Vec<_>>()
                .await
        }
    };
    let metrics = || async { client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap() };
    let series = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("livestage_http_"))
            .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
            .collect::<Vec<_>>()
    };
    // Every route and status the attack reaches, once.
    assert!(send(0..40).await.iter().all(|r| r.as_ref().is_ok_and(StatusCode::is_client_error)));
    let before = metrics().await;
    let answers = send(40..10_040).await;
    assert!(answers.iter().all(|r| r.as_ref().is_ok_and(StatusCode::is_client_error)), "every made-up method refused");
    let after = metrics().await;
    assert_eq!(series(&before), series(&after), "no new series");
    // Only the counters' digits grow.
    assert!(after.len() <= before.len() + 200, "/metrics grew from {} to {} bytes", before.len(), after.len());
    assert!(after.contains("method=\"OTHER\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_half_open_connections_leave_a_request_answered_within_a_second_and_are_closed() {
    let app = spawn_app_with(|s| {
        default_limits(s);
        s.limits.header_read_timeout_ms = 2_000;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut idle = Vec::new();
    for _ in 0..500 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        stream.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        idle.push(stream);
    }
    let started = Instant::now();
    let r = app.client.get(format!("{}/health", app.base)).send().await.expect("a normal request");
    assert_eq!(r.status(), 200);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "answered in {took:?} with 500 half-open connections held");

    // Past the header-read timeout the server has closed every one of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for (n, stream) in idle.iter_mut().enumerate() {
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await;
        assert!(read.is_ok(), "connection {n} still open 10 s after it stopped sending");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holds_a_bounded_number_of_websockets() {
    let app = spawn_app_with(default_limits).await;
    let cap = Settings::defaults().limits.websockets_per_client;
    let url = format!("{}/ws", app.base.replace("http://", "ws://"));
    let mut open = Vec::new();
    for n in 0..cap {
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap_or_else(|e| panic!("socket {n}: {e}"));
        open.push(ws);
    }
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!("a socket past the cap: {:?}", other.map(|_| ())),
    }
    drop(open.pop());
    // The freed place is taken again (the server notices the close asynchronously).
    let reopened = eventually(Duration::from_secs(5), || async { tokio_tungstenite::connect_async(&url).await.is_ok() }).await;
    assert!(reopened, "a place freed by a closed socket");
}

/// A publisher token of `user` on the default channel: (WHIP endpoint, token).
async fn publisher_token(app: &TestApp, user: &str) -> (String, String) {
    let p = app.post("/api/token/publisher", json!({ "userId": user })).await;
    let d = p.assert_ok();
    (d["whipEndpoint"].as_str().unwrap().to_string(), d["token"].as_str().unwrap().to_string())
}

/// Sends audio frames as `peer` for `frames` × 20 ms.
fn keep_sending(peer: livestage::testing::peer::PeerHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for n in 0u64..3000 {
            peer.send_audio(livestage::testing::media::OPUS_SILENCE.to_vec(), n * 960);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn live_participant(app: &TestApp) -> Option<String> {
    let d = app.get("/api/stats/publisher").await;
    d.data()["publisher"]["participantId"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_publisher_token_cannot_take_over_a_live_broadcast() {
    let app = spawn_app_with(default_limits).await;
    // An old token (an earlier studio render, a leaked OBS setting) and the one that goes live.
    let (_, old) = publisher_token(&app, "broadcaster").await;
    let (whip, live) = publisher_token(&app, "broadcaster").await;
    let session = open_session(&app.client, &whip, &live, PeerRole::Publish, VideoCodec::Vp8, Duration::from_secs(5)).await;
    let _sending = keep_sending(session.peer);
    let live_id = eventually(Duration::from_secs(5), || async { live_participant(&app).await.is_some() }).await;
    assert!(live_id, "the publisher went live");
    let before = live_participant(&app).await;

    let (_, offer) = Peer::offer(PeerRole::Publish).await.unwrap();
    let r = app.client.post(&whip).bearer_auth(&old).header("content-type", "application/sdp").body(offer).send().await.unwrap();
    let (status, body) = envelope(r).await;
    assert_refused(status, &body, 409, "CONFLICT");
    assert!(
        holds_for(Duration::from_secs(1), || async { live_participant(&app).await == before }).await,
        "still the same publisher"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_never_connecting_offers_leave_the_publisher_and_a_real_viewer_in() {
    let app = spawn_app_with(|s| {
        default_limits(s);
        s.stage.max_viewers_per_stage = 1_000;
        s.stage.scale_up_threshold = 1_000;
    })
    .await;
    // Tickets are issued while a broadcast is on (here the media plane's signal says so).
    app.go_live().await;
    // 500 tickets (the worst case: the attacker has real viewer tokens) and offers that never
    // connect, from one address.
    let tickets: Vec<(String, String)> = futures_util::stream::iter(0..500)
        .map(|n| {
            let app = &app;
            async move {
                let d = app.join(&format!("attacker-{n}")).await;
                let d = d.assert_ok().clone();
                (d["whepEndpoint"].as_str().unwrap_or_default().to_string(), d["token"].as_str().unwrap().to_string())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let (_, offer) = Peer::offer(PeerRole::Play).await.unwrap();
    let whep = format!("{}/whep", app.base);
    let statuses: Vec<u16> = futures_util::stream::iter(tickets)
        .map(|(_, token)| {
            let (client, whep, offer) = (app.client.clone(), whep.clone(), offer.clone());
            async move {
                let r = client.post(&whep).bearer_auth(token).header("content-type", "application/sdp").body(offer).send().await;
                r.map(|r| r.status().as_u16()).unwrap_or(0)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let accepted = statuses.iter().filter(|s| **s == 201).count();
    let limits = Settings::defaults().limits;
    assert!(accepted <= limits.media_connecting_per_client, "{accepted} sessions held by one address");
    assert!(statuses.iter().all(|s| [201, 429].contains(s)), "{statuses:?}");

    // The publisher goes live from the same address.
    let p = app.post("/api/token/publisher", json!({ "userId": "broadcaster" })).await;
    let p = p.assert_ok();
    let (whip, token, id) =
        (p["whipEndpoint"].as_str().unwrap(), p["token"].as_str().unwrap(), p["participantId"].as_str().unwrap().to_string());
    let publisher = open_session(&app.client, whip, token, PeerRole::Publish, VideoCodec::Vp8, Duration::from_secs(5)).await;
    let _sending = keep_sending(publisher.peer);
    let live =
        eventually(Duration::from_secs(5), || async { live_participant(&app).await.as_deref() == Some(id.as_str()) }).await;
    assert!(live, "the broadcaster is live");

    // A real viewer elsewhere plays.
    let elsewhere = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 4])).build().unwrap();
    let ticket = elsewhere
        .post(format!("{}/api/token/viewer", app.base))
        .header("x-api-key", API_KEY)
        .json(&json!({ "userId": "real-viewer" }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let token = ticket["data"]["token"].as_str().unwrap();
    let mut viewer = open_session(&elsewhere, &whep, token, PeerRole::Play, VideoCodec::Vp8, Duration::from_secs(5)).await.peer;
    let mut frames = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while frames < 10 && tokio::time::Instant::now() < deadline {
        if let Some(PeerEvent::Frame { .. }) = viewer.next_event(Duration::from_millis(500)).await {
            frames += 1;
        }
    }
    assert_eq!(frames, 10, "the real viewer receives the broadcast");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_session_deletes_are_budgeted_per_client_before_any_token_is_checked() {
    let app = spawn_app_with(default_limits).await;
    let budget = Settings::defaults().limits.media_offers as usize;
    // A well-formed token with a signature that cannot verify, as a forger would send it.
    let forged = "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4In0.AAAA";
    let mut statuses = Vec::new();
    for (n, path) in ["/whep/s1", "/whip/s2", "/whip/c/default/s3"].iter().cycle().take(budget + 5).enumerate() {
        let r = app.client.delete(format!("{}{path}", app.base)).bearer_auth(forged).send().await.unwrap();
        let (status, body) = envelope(r).await;
        assert_eq!(body["success"], false, "{n}: {body}");
        statuses.push(status);
    }
    assert!(statuses[..budget].iter().all(|s| *s != 429), "within the budget: {statuses:?}");
    assert!(statuses[budget..].iter().all(|s| *s == 429), "past the budget: {statuses:?}");
    // Another address has a budget of its own.
    let other = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 3])).build().unwrap();
    let r = other.delete(format!("{}/whep/s1", app.base)).bearer_auth(forged).send().await.unwrap();
    assert_ne!(r.status(), 429);
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or_else(|| panic!("{name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_datagrams_are_dropped_as_they_are_read_and_a_real_viewer_still_connects() {
    let app = spawn_app_with(default_limits).await;
    app.go_live().await;
    let sfu = app.service.media().plane().unwrap().server.addresses()[0];
    let refused = || async {
        metric(
            &app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap(),
            "livestage_media_datagrams_refused_total",
        )
    };
    let before = refused().await;
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // RTP-, DTLS- and junk-looking datagrams from an address no session has, 10 a millisecond.
    for n in 0..1_000u32 {
        let first = [0x80, 0x16, 0xff, 0x40][n as usize % 4];
        let mut d = vec![first; 100];
        d[4..8].copy_from_slice(&n.to_be_bytes());
        stranger.send_to(&d, sfu).await.unwrap();
        if n % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // Read to the end: the count no longer moves.
    let mut settled = refused().await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = refused().await;
        if now == settled {
            break;
        }
        settled = now;
    }
    let flood = settled - before;
    assert!(flood > 0 && flood <= 1_000, "the stranger's datagrams are refused as read: {flood} of 1,000 counted");
    // STUN may come from a new address (an ICE check), so it is never refused as read: a
    // viewer connects, and its media then flows from its address.
    let d = app.join("real-viewer").await.assert_ok().clone();
    let (whep, token) = (d["whepEndpoint"].as_str().unwrap(), d["token"].as_str().unwrap());
    let _viewer = open_session(&app.client, whep, token, PeerRole::Play, VideoCodec::Vp8, Duration::from_secs(5)).await;
    assert_eq!(refused().await, settled, "nothing of the real viewer's was refused");
}

/// A publisher token from the studio `browser` is signed in to.
async fn studio_ticket(app: &TestApp, browser: &mut Browser) -> String {
    let (status, t) = browser.call(app, PublisherTicket::PATH, json!({ "channel": null })).await;
    assert_eq!(status, 200, "{t}");
    t["token"].as_str().expect("a publisher token").to_string()
}

/// A WHIP offer of a real (never connecting) publisher with `token`, and the answer's envelope
/// (the SDP answer is not JSON: a 201 comes back as `null`).
async fn publish_offer(app: &TestApp, token: &str) -> (u16, Value) {
    let (_, offer) = Peer::offer(PeerRole::Publish).await.unwrap();
    let r =
        app.client.post(format!("{}/whip", app.base)).bearer_auth(token).header("content-type", "application/sdp").body(offer);
    let r = r.send().await.expect("offer sent");
    let status = r.status().as_u16();
    (status, serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_of_the_studio_revokes_the_publisher_tokens_it_was_given() {
    let app = spawn_app_with(default_limits).await;
    let mut studio = Browser::default();
    assert_eq!(studio.call(&app, BroadcasterSignIn::PATH, json!({ "api_key": API_KEY, "channel": null })).await.1, true);
    // A token of the session publishes while the session lasts.
    let first = studio_ticket(&app, &mut studio).await;
    let (status, body) = publish_offer(&app, &first).await;
    assert_eq!(status, 201, "{body}");
    let kept = studio_ticket(&app, &mut studio).await;
    // Signed out: the session's tokens no longer publish, used or not.
    let (status, body) = studio.call(&app, BroadcasterSignOut::PATH, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = publish_offer(&app, &kept).await;
    assert_refused(status, &body, 401, "UNAUTHORIZED");
    assert!(body["error"]["message"].as_str().unwrap().contains("signed out"), "{body}");
    // A new session's tokens do.
    let mut again = Browser::default();
    assert_eq!(again.call(&app, BroadcasterSignIn::PATH, json!({ "api_key": API_KEY, "channel": null })).await.1, true);
    let (status, body) = publish_offer(&app, &studio_ticket(&app, &mut again).await).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_ticket_plays_only_while_its_viewer_is_present() {
    let app = spawn_app_with(default_limits).await;
    app.go_live().await;
    let d = app.join("leaver").await.assert_ok().clone();
    let (stage, token) = (d["stageArn"].as_str().unwrap(), d["token"].as_str().unwrap());
    app.post("/api/viewer/leave", json!({ "userId": "leaver", "stageArn": stage })).await.assert_ok();
    let (status, body) = play_offer(&app, &format!("{}/whep", app.base), token).await;
    assert_refused(status, &body, 403, "FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_database_answers_503_with_retry_after_and_no_write_is_lost() {
    use sqlx::Connection;
    let app = spawn_app_with(default_limits).await;
    if !app.db.url.is_empty() {
        return; // SQLite's writer lock; PostgreSQL has none to hold
    }
    app.go_live().await;
    app.join("before").await.assert_ok();
    // Another process holds SQLite's write lock for longer than the server waits for it.
    let path = app.dir.path().join("app.db");
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.expect("open the database");
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut other).await.expect("take the write lock");
    let started = Instant::now();
    let r = app.join("during").await;
    let took = started.elapsed();
    r.assert_error(503, "SERVICE_UNAVAILABLE");
    assert_eq!(r.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"), "{:?}", r.headers);
    assert!(took < Duration::from_secs(12), "answered after {took:?}, not held");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    // Once the lock is gone the same join succeeds, and the earlier viewer is still there.
    app.join("during").await.assert_ok();
    let viewers = app.get(&format!("/api/viewer/list/{}", enc(&app.master_arn().await))).await;
    assert_eq!(viewers.assert_ok()["totalViewers"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_history_is_kept_as_long_as_snapshots_and_no_longer() {
    let app = spawn_app_with(default_limits).await;
    app.go_live().await;
    let stage = app.master_arn().await;
    let history = |user: &'static str| {
        let app = &app;
        async move { app.get(&format!("/api/viewer/history/{user}")).await.assert_ok()["totalRecords"].as_u64().unwrap() }
    };
    app.join("old").await.assert_ok();
    app.post("/api/viewer/leave", json!({ "userId": "old", "stageArn": stage })).await.assert_ok();
    let retention_days = Settings::defaults().presence.snapshot_retention_days;
    app.advance_secs(retention_days * 86_400 - 3_600);
    app.join("recent").await.assert_ok();
    app.post("/api/viewer/leave", json!({ "userId": "recent", "stageArn": stage })).await.assert_ok();
    app.service.stats().take_snapshot().await.unwrap();
    assert_eq!((history("old").await, history("recent").await), (1, 1), "both within the retention");
    app.advance_secs(2 * 3_600);
    app.service.stats().take_snapshot().await.unwrap();
    assert_eq!((history("old").await, history("recent").await), (0, 1), "the old one is past it");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_and_the_database_are_readable_by_their_user_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app_with(|s| s.server.data_dir = s.server.data_dir.join("fresh")).await;
    let dir = app.dir.path().join("fresh");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the data dir");
    if app.db.url.is_empty() {
        assert_eq!(mode(&dir.join("app.db")), 0o600, "the SQLite file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_ask_for_their_token_when_one_is_set() {
    let app = spawn_app_with(|s| s.server.metrics_token = Some("scrape-me".into())).await;
    let url = format!("{}/metrics", app.base);
    let (status, body) = envelope(app.client.get(&url).send().await.unwrap()).await;
    assert_refused(status, &body, 401, "UNAUTHORIZED");
    let (status, body) = envelope(app.client.get(&url).bearer_auth("guess").send().await.unwrap()).await;
    assert_refused(status, &body, 401, "UNAUTHORIZED");
    let r = app.client.get(&url).bearer_auth("scrape-me").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("livestage_viewers_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cannot_be_framed_and_the_studio_is_never_cached() {
    let app = spawn_app().await;
    for path in ["/", "/broadcast", "/dashboard"] {
        let r = app.client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        let csp = h.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp:?}");
        assert_eq!(h.get("x-frame-options").and_then(|v| v.to_str().ok()), Some("DENY"), "{path}");
        let cache = h.get("cache-control").and_then(|v| v.to_str().ok());
        let private = path != "/";
        assert_eq!(cache == Some("no-store"), private, "{path}: cache-control {cache:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_dashboard_reads_the_store_at_most_once_a_second_however_often_it_is_rendered() {
    let app = spawn_app().await;
    let stages = |d: &livestage::api::DashboardData| d.stages.len();
    let first = app.service.stats().dashboard().await.unwrap();
    // A change in the store within the second is not read again for the next render…
    let created = app.post("/api/stage", json!({ "name": "extra-1" })).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let renders = futures_util::future::join_all((0..20).map(|_| app.service.stats().dashboard())).await;
    for r in renders {
        assert_eq!(stages(&r.unwrap()), stages(&first), "served from the read a moment ago");
    }
    // …and is there once the second is over.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(stages(&app.service.stats().dashboard().await.unwrap()), stages(&first) + 1);
}
