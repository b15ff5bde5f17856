//! Several instances on one PostgreSQL database. These run in the PostgreSQL pass of the suite
//! (`TEST_DATABASE_URL=postgres://…`); on SQLite one instance is the whole deployment.

use crate::helpers::*;
use crate::websocket::{connect, next_json, send};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn instances_report_the_same_counts_and_push_each_others_changes() {
    let Some((a, b)) = spawn_pair().await else {
        eprintln!("single-instance database: nothing to compare");
        return;
    };
    a.go_live().await;
    b.go_live().await;
    let mut ws = connect(&b).await;
    send(&mut ws, json!({ "action": "subscribe", "channel": "stats" })).await;
    next_json(&mut ws, Duration::from_secs(2)).await.expect("subscribed");
    next_json(&mut ws, Duration::from_secs(2)).await.expect("initial stats");

    // A change on A reaches B's subscriber within a second.
    a.join("on-a").await.assert_ok();
    let changed = Instant::now();
    let mut seen = None;
    while changed.elapsed() < Duration::from_secs(1) {
        match next_json(&mut ws, Duration::from_millis(1000)).await {
            Some(m) if m["type"] == "stats_update" && m["data"]["totalViewers"] == 1 => {
                seen = Some(changed.elapsed());
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    let after = seen.expect("B's subscriber saw A's join within 1 s");
    eprintln!("cross-instance update after {after:?}");

    b.join("on-b").await.assert_ok();
    // the same user through the other instance is still one viewer
    a.join("on-b").await.assert_ok();
    for app in [&a, &b] {
        let s = app.get("/api/stats").await;
        assert_eq!(s.assert_ok()["totalViewers"], 2);
        assert_eq!(s.assert_ok()["activeStages"], 1, "one shared master stage");
    }
}

#[tokio::test]
async fn exactly_one_instance_leads_and_another_takes_over() {
    let Some((a, b)) = spawn_pair().await else {
        eprintln!("single-instance database: it always leads");
        return;
    };
    let one_leader = || async { a.service.is_leader() != b.service.is_leader() };
    assert!(eventually(Duration::from_secs(8), one_leader).await, "exactly one leader");
    let (mut leader, follower) = if a.service.is_leader() { (a, b) } else { (b, a) };
    leader.stop().await;
    assert!(
        eventually(Duration::from_secs(8), || async { follower.service.is_leader() }).await,
        "the other instance takes over when the leader goes"
    );
}

async fn publisher_live(app: &TestApp) -> bool {
    app.get("/api/stats/publisher").await.assert_ok()["isPublisherLive"] == true
}

#[tokio::test]
async fn every_instance_knows_the_publisher_another_instance_carries() {
    let Some((a, b)) = spawn_pair().await else {
        eprintln!("single-instance database: nothing to share");
        return;
    };
    b.join("early").await.assert_error(404, "NOT_FOUND");
    a.go_live().await; // only A's media plane has the publisher
    assert!(eventually(Duration::from_secs(3), || publisher_live(&b)).await, "B reports A's publisher live");
    assert_eq!(b.get("/api/stats/publisher").await.assert_ok()["publisher"]["userId"], "broadcaster");
    b.join("through-b").await.assert_ok();
    a.signal().set_offline();
    assert!(eventually(Duration::from_secs(3), || async { !publisher_live(&b).await }).await, "and offline when it stops");
    b.join("late").await.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn only_the_leader_auto_scales() {
    let Some((a, b)) = spawn_pair_with(|s| {
        s.stage.autoscale = true;
        s.stage.autoscale_interval_secs = 1;
        s.stage.max_viewers_per_stage = 5;
        s.stage.scale_up_threshold = 4;
        s.stage.scale_up_utilisation = 0.75;
        s.stage.scale_down_threshold = 0;
        s.stage.max_stages = 5;
    })
    .await
    else {
        eprintln!("single-instance database: it always leads");
        return;
    };
    assert!(eventually(Duration::from_secs(8), || async { a.service.is_leader() != b.service.is_leader() }).await);
    a.go_live().await;
    b.go_live().await;
    // crowd the master stage through both instances
    for (i, app) in [&a, &b, &a].into_iter().enumerate() {
        app.join(&format!("crowd-{i}")).await.assert_ok();
    }
    let two_stages = || async { a.get("/api/stage/list").await.assert_ok()["stages"].as_array().unwrap().len() == 2 };
    assert!(eventually(Duration::from_secs(5), two_stages).await, "one scale-up");
    tokio::time::sleep(Duration::from_secs(3)).await; // several more cycles on both instances
    assert_eq!(a.get("/api/stage/list").await.assert_ok()["stages"].as_array().unwrap().len(), 2, "exactly one");
    let (leader, follower) = if a.service.is_leader() { (&a, &b) } else { (&b, &a) };
    assert!(leader.service.autoscale_steps() > 0, "the leader runs the auto-scaler");
    assert_eq!(follower.service.autoscale_steps(), 0, "the follower never does");
}

/// The server binary as a separate process, so it can be SIGKILLed.
#[path = "../../benches/support/mod.rs"]
#[allow(dead_code)]
mod process;

#[tokio::test]
async fn an_instance_killed_mid_session_loses_no_watch_session() {
    use livestage::server::media::peer::{Peer, PeerRole};
    let Some((b, _spare)) = spawn_pair().await else {
        eprintln!("single-instance database: nothing to fail over to");
        return;
    };
    let mut a = process::Server::start(&[("DATABASE_URL", b.db.url.as_str()), ("API_SECRET_KEY", API_KEY)]);
    let client = &b.client;
    let call = |base: &str, path: &str, body: serde_json::Value| {
        client.post(format!("{base}{path}")).header("x-api-key", API_KEY).json(&body).send()
    };

    // A's publisher is live for real: a WHIP session sending audio.
    let p: serde_json::Value =
        call(&a.base, "/api/token/publisher", json!({ "userId": "host" })).await.unwrap().json().await.unwrap();
    let (peer, offer) = Peer::offer(PeerRole::Publish).await.unwrap();
    let answer = client
        .post(p["data"]["whipEndpoint"].as_str().unwrap())
        .bearer_auth(p["data"]["token"].as_str().unwrap())
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let mut peer = peer.connect(&answer.text().await.unwrap()).unwrap();
    assert!(peer.connected(Duration::from_secs(5)).await);
    let feed = tokio::spawn(async move {
        for n in 0u64..1500 {
            peer.send_audio(vec![0xf8, 0xff, 0xfe], n * 960);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    // A viewer watches through A…
    let mut joined = None;
    for _ in 0..50 {
        let r = call(&a.base, "/api/token/viewer", json!({ "userId": "survivor" })).await.unwrap();
        if r.status() == 200 {
            joined = Some(r.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stage = joined.expect("joined through A")["data"]["stageArn"].as_str().unwrap().to_string();
    let beat = json!({ "userId": "survivor", "stageArn": stage });
    assert_eq!(call(&a.base, "/api/viewer/heartbeat", beat.clone()).await.unwrap().status(), 200);

    // …and A dies without a chance to clean up.
    a.kill();
    feed.abort();

    // The load balancer sends the viewer's next heartbeats to B: the session carries on.
    b.post("/api/viewer/heartbeat", beat.clone()).await.assert_ok();
    let h = b.get("/api/viewer/history/survivor").await;
    let rec = &h.assert_ok()["history"][0];
    assert_eq!(rec["stageArn"], stage.as_str());
    assert!(rec["leftAt"].is_null(), "the watch session is still open: {rec}");
    assert_eq!(b.get("/api/stats").await.assert_ok()["totalViewers"], 1);

    // It ends when the viewer leaves, with its duration.
    b.advance_secs(20);
    b.post("/api/viewer/heartbeat", beat.clone()).await.assert_ok();
    b.post("/api/viewer/leave", beat).await.assert_ok();
    let h = b.get("/api/viewer/history/survivor").await;
    let rec = &h.assert_ok()["history"][0];
    assert!(!rec["leftAt"].is_null());
    assert_eq!(h.assert_ok()["totalRecords"], 1, "one session, not one per instance");
}
