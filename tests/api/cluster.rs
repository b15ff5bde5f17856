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
