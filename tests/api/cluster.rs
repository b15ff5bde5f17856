//! Several instances on one PostgreSQL database. On SQLite one instance is the whole
//! deployment, so these are ignored there; the PostgreSQL pass runs them
//! (`TEST_DATABASE_URL=postgres://… cargo test --test api -- --include-ignored`).

use crate::helpers::*;
use crate::websocket::{connect, next_json, send};
use livestage::server::clock::Clock;
use serde_json::json;
use std::time::{Duration, Instant};

/// Whether `n` database sessions are listening for change notifications.
async fn listening_sessions(url: &str, n: i64) -> bool {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect to the test database");
    let listening: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    conn.close().await.ok();
    listening == n
}

#[tokio::test]
#[ignore = "PostgreSQL only"]
async fn instances_report_the_same_counts_and_push_each_others_changes() {
    // B re-reads the database only once an hour: a change on A can only reach B's
    // subscribers through A's notification.
    let (a, b) = spawn_pair_with(|s| s.presence.stats_refresh_secs = 3600).await.expect(NEEDS_POSTGRES);
    a.go_live().await;
    b.go_live().await;
    let mut ws = connect(&b).await;
    send(&mut ws, json!({ "action": "subscribe", "channel": "stats" })).await;
    next_json(&mut ws, Duration::from_secs(2)).await.expect("subscribed");
    next_json(&mut ws, Duration::from_secs(2)).await.expect("initial stats");

    // Both instances listen, and B has shown all it knew so far (including the recompute each
    // makes once when it starts listening).
    let url = a.db.url.clone();
    assert!(eventually(Duration::from_secs(5), || listening_sessions(&url, 2)).await, "both instances listen");
    for _ in 0..20 {
        if next_json(&mut ws, Duration::from_millis(300)).await.is_none() {
            break;
        }
    }

    // Each change on A reaches B's subscriber within a second.
    for (n, user) in [(1, "on-a"), (2, "also-on-a")] {
        a.join(user).await.assert_ok();
        let changed = Instant::now();
        let limit = Duration::from_secs(1);
        let mut seen = None;
        while let Some(left) = limit.checked_sub(changed.elapsed()) {
            match next_json(&mut ws, left).await {
                Some(m) if m["type"] == "stats_update" && m["data"]["totalViewers"] == n => {
                    seen = Some(changed.elapsed());
                    break;
                }
                Some(_) => continue,
                None => break,
            }
        }
        let after = seen.unwrap_or_else(|| panic!("B's subscriber did not see {n} viewers within 1 s of the join on A"));
        assert!(after < limit, "cross-instance update took {after:?}");
    }

    b.join("on-b").await.assert_ok();
    // the same user through the other instance is still one viewer
    a.join("on-b").await.assert_ok();
    for app in [&a, &b] {
        let s = app.get("/api/stats").await;
        assert_eq!(s.assert_ok()["totalViewers"], 3);
        assert_eq!(s.assert_ok()["activeStages"], 1, "one shared master stage");
    }
}

#[tokio::test]
#[ignore = "PostgreSQL only"]
async fn exactly_one_instance_leads_and_another_takes_over() {
    let (a, b) = spawn_pair().await.expect(NEEDS_POSTGRES);
    let one_leader = || async { a.service.is_leader() != b.service.is_leader() };
    assert!(eventually(Duration::from_secs(8), one_leader).await, "exactly one leader");
    let (mut leader, follower) = if a.service.is_leader() { (a, b) } else { (b, a) };
    leader.stop().await;
    assert!(
        eventually(Duration::from_secs(8), || async { follower.service.is_leader() }).await,
        "the other instance takes over when the leader goes"
    );
}

async fn leader_metric(client: &reqwest::Client, base: &str) -> bool {
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().any(|l| l == "livestage_leader 1")
}

#[tokio::test]
#[ignore = "PostgreSQL only"]
async fn a_killed_leader_is_replaced_within_seconds() {
    let db = postgres_db().await;
    let mut a = start_process(&db, &[]).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    assert!(eventually(Duration::from_secs(8), || leader_metric(&client, &a.base)).await, "the first instance leads");
    let b = spawn_on(&db, manual_clock(), |_| {}).await;
    // B retries the lock every 2 s; while A lives it stays a follower.
    assert!(holds_for(Duration::from_secs(3), || async { !b.service.is_leader() }).await, "B follows while A leads");
    assert!(leader_metric(&client, &a.base).await);

    a.kill();
    let killed = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || async { b.service.is_leader() }).await,
        "B did not take over within 5 s of A's SIGKILL"
    );
    eprintln!("leader take-over after {:?}", killed.elapsed());
}

async fn publisher_live(app: &TestApp) -> bool {
    app.get("/api/stats/publisher").await.assert_ok()["isPublisherLive"] == true
}

#[tokio::test]
#[ignore = "PostgreSQL only"]
async fn every_instance_knows_the_publisher_another_instance_carries() {
    let (a, b) = spawn_pair().await.expect(NEEDS_POSTGRES);
    b.join("early").await.assert_error(404, "NOT_FOUND");
    a.go_live().await; // only A's media plane has the publisher
    assert!(eventually(Duration::from_secs(3), || publisher_live(&b)).await, "B reports A's publisher live");
    assert_eq!(b.get("/api/stats/publisher").await.assert_ok()["publisher"]["userId"], "broadcaster");
    b.join("through-b").await.assert_ok();
    a.signal().set_offline(&ChannelId::default());
    assert!(eventually(Duration::from_secs(3), || async { !publisher_live(&b).await }).await, "and offline when it stops");
    b.join("late").await.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
#[ignore = "PostgreSQL only"]
async fn the_publisher_lease_lapses_5_s_after_its_instance_falls_silent() {
    let (a, b) = spawn_pair().await.expect(NEEDS_POSTGRES);
    a.go_live().await; // only A's media plane has the publisher
    assert!(eventually(Duration::from_secs(3), || publisher_live(&b)).await, "B reports A's publisher live");
    // A loses its database without a word: it can neither renew its report nor withdraw it.
    // The shared clock has not moved, so every renewal so far was made at `renewed`.
    let renewed = a.clock.now_ms();
    a.service.store().close().await;

    b.clock.set_ms(renewed + 4_999);
    assert!(
        holds_for(Duration::from_millis(1500), || publisher_live(&b)).await,
        "4.999 s after the last renewal the publisher is still live"
    );
    b.clock.set_ms(renewed + 5_000);
    assert!(
        eventually(Duration::from_secs(2), || async { !publisher_live(&b).await }).await,
        "5 s after the last renewal the publisher is offline"
    );
    b.join("late").await.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
#[ignore = "PostgreSQL only"]
async fn only_the_leader_auto_scales() {
    let (a, b) = spawn_pair_with(|s| {
        s.stage.autoscale = true;
        s.stage.autoscale_interval_secs = 1;
        s.stage.max_viewers_per_stage = 5;
        s.stage.scale_up_threshold = 4;
        s.stage.scale_up_utilisation = 0.7; // 3 viewers on one stage pass it
        s.stage.scale_down_threshold = 0;
        s.stage.max_stages = 5;
    })
    .await
    .expect(NEEDS_POSTGRES);
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
    assert!(leader.service.autoscaler().steps() > 0, "the leader runs the auto-scaler");
    assert_eq!(follower.service.autoscaler().steps(), 0, "the follower never does");
}

#[tokio::test]
#[ignore = "PostgreSQL only"]
async fn an_instance_killed_mid_session_loses_no_watch_session() {
    let db = postgres_db().await;
    let b = spawn_on(&db, manual_clock(), |_| {}).await;
    let mut a = start_process(&db, &[]).await;
    let client = &b.client;

    // A's publisher is live for real (a WHIP session), and a viewer watches through A…
    let feed = publish_audio(client, &a.base).await;
    let joined = join_when_live(client, &a.base, "survivor").await;
    let stage = joined["stageArn"].as_str().unwrap().to_string();
    let beat = json!({ "userId": "survivor", "stageArn": stage });
    let r = client.post(format!("{}/api/viewer/heartbeat", a.base)).header("x-api-key", API_KEY).json(&beat).send().await;
    assert_eq!(r.unwrap().status(), 200);

    // …and A dies without a chance to clean up.
    a.kill();
    feed.abort();

    // The session A opened is still there, open, with the time A recorded for the join.
    let h = b.get("/api/viewer/history/survivor").await;
    let rec = &h.assert_ok()["history"][0];
    assert_eq!(rec["stageArn"], stage.as_str());
    assert!(rec["leftAt"].is_null(), "the watch session is still open: {rec}");
    let joined_at = iso_ms(&rec["joinedAt"]);
    assert_eq!(b.get("/api/stats").await.assert_ok()["totalViewers"], 1);

    // The load balancer sends the viewer's next heartbeat to B, 20 s after the join (B's clock
    // is set from the recorded join time, so one clock measures the whole session)…
    b.clock.set_ms(joined_at + 20_000);
    b.post("/api/viewer/heartbeat", beat.clone()).await.assert_ok();
    let store = b.service.store().clone();
    let durable = eventually(Duration::from_secs(1), || {
        let (store, stage) = (store.clone(), stage.clone());
        async move {
            store
                .presence()
                .get(&stage, "survivor")
                .await
                .unwrap()
                .is_some_and(|p| p.last_heartbeat.as_millis() == joined_at + 20_000)
        }
    })
    .await;
    assert!(durable, "B wrote the heartbeat");

    // …then the viewer goes silent: its session closes at that last durable heartbeat.
    b.clock.set_ms(joined_at + 20_000 + 61_000);
    b.service.presence().sweep().await.unwrap();
    let h = b.get("/api/viewer/history/survivor").await;
    let rec = &h.assert_ok()["history"][0];
    assert_eq!(rec["watchDurationSeconds"], 20, "{rec}");
    assert_eq!(rec["leftAt"], ms_iso(joined_at + 20_000).as_str(), "{rec}");
    assert_eq!(h.assert_ok()["totalRecords"], 1, "one session, not one per instance");
    assert_eq!(b.get("/api/stats").await.assert_ok()["totalViewers"], 0);
}

async fn news_live(app: &TestApp) -> bool {
    app.get("/api/stats/publisher?channel=news").await.assert_ok()["isPublisherLive"] == true
}

#[tokio::test]
#[ignore = "PostgreSQL only"]
async fn each_channels_counts_liveness_and_pushes_are_the_same_on_every_instance() {
    use livestage::domain::{LivePublisher, UnixMs};
    let (a, b) = spawn_pair().await.expect(NEEDS_POSTGRES);
    let created = a.post("/api/channels", json!({ "name": "news" })).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let master = created.data()["channel"]["masterStageArn"].as_str().unwrap().to_string();
    let news = ChannelId::parse("news").unwrap();
    a.go_live().await;
    // Only A's media plane carries news' publisher.
    let anchor = LivePublisher {
        user_id: "anchor".into(),
        participant_id: "anchor-1".into(),
        stage_arn: master,
        since: UnixMs::from_millis(1),
    };
    a.signal().set_live(news.clone(), anchor);
    assert!(eventually(Duration::from_secs(3), || news_live(&b)).await, "B reports A's news publisher live");

    let mut ws = connect(&b).await;
    send(&mut ws, json!({ "action": "subscribe", "channel": "stats:news" })).await;
    next_json(&mut ws, Duration::from_secs(2)).await.expect("subscribed");
    for (app, user) in [(&a, "n1"), (&a, "n2"), (&b, "n3"), (&b, "n1")] {
        // n1 a second time, through the other instance: still one viewer
        app.post("/api/token/viewer", json!({ "userId": user, "channel": "news" })).await.assert_ok();
    }
    b.join("d1").await.assert_ok();
    // B's subscriber of news sees the three viewers, whichever instance counted them.
    let mut seen = false;
    for _ in 0..20 {
        match next_json(&mut ws, Duration::from_secs(1)).await {
            Some(m) if m["type"] == "stats_update" && m["data"]["totalViewers"] == 3 => {
                assert_eq!(m["data"]["channel"], "news");
                seen = true;
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    assert!(seen, "B pushed news' three viewers");
    for app in [&a, &b] {
        assert_eq!(app.get("/api/stats?channel=news").await.assert_ok()["totalViewers"], 3);
        assert_eq!(app.get("/api/stats").await.assert_ok()["totalViewers"], 1);
        let list = app.get("/api/channels").await;
        let mut counts: Vec<(String, u64, bool)> = list.assert_ok()["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c["viewerCount"].as_u64().unwrap(), c["isLive"] == true))
            .collect();
        counts.sort();
        assert_eq!(counts, [("default".to_string(), 1, true), ("news".to_string(), 3, true)], "{counts:?}");
    }
    // News stops on A: both instances report it offline, the default channel stays live.
    a.signal().set_offline(&news);
    assert!(eventually(Duration::from_secs(3), || async { !news_live(&b).await }).await, "B reports news offline");
    assert_eq!(b.get("/api/stats/publisher").await.assert_ok()["isPublisherLive"], true);
}
