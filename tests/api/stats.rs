use crate::helpers::*;

#[tokio::test]
async fn stats_reflect_viewers_stages_and_the_publisher() {
    let app = spawn_app().await;
    let master = app.master_arn().await;
    let d = app.get("/api/stats").await.assert_ok().clone();
    assert_eq!(d["totalViewers"], 0);
    assert_eq!(d["activeStages"], 1);
    assert_eq!(d["isPublisherLive"], false);
    assert_eq!(d["stages"][0]["stageArn"], master.as_str());
    assert_eq!(d["stages"][0]["stageName"], "master");
    assert_eq!(d["stages"][0]["autoScaled"], false);
    assert_iso(&d["stages"][0]["createdAt"]);
    assert_eq!(app.get("/api/stats/publisher").await.assert_ok(), &serde_json::json!({ "isPublisherLive": false }));

    app.go_live().await;
    app.join("a").await.assert_ok();
    app.join("b").await.assert_ok();
    let d = app.get("/api/stats").await.assert_ok().clone();
    assert_eq!(d["totalViewers"], 2);
    assert_eq!(d["isPublisherLive"], true);
    assert_eq!(d["stages"][0]["viewerCount"], 2);
    let v = app.get("/api/stats/viewers").await;
    assert_eq!(v.assert_ok()["totalViewers"], 2);
    assert_eq!(v.data()["calculatedFrom"], "real-time sum");
    let p = app.get("/api/stats/publisher").await;
    let p = p.assert_ok();
    assert_eq!(p["isPublisherLive"], true);
    assert_eq!(p["publisher"]["stageArn"], master.as_str());
    assert_eq!(p["publisher"]["userId"], "broadcaster");
    assert_iso(&p["publisher"]["since"]);

    let all = app.get("/api/stats/stages").await;
    assert_eq!(all.assert_ok()["totalStages"], 1);
    assert_eq!(all.data()["stages"][0]["viewerCount"], 2);
    let one = app.get(&format!("/api/stats/stages?arn={}", enc(&master))).await;
    let one = one.assert_ok();
    assert_eq!(one["stageArn"], master.as_str());
    assert_eq!(one["viewerCount"], 2);
    assert_eq!(one["stageInfo"]["isMaster"], true);
    app.get("/api/stats/stages?arn=arn:aws:ivs:us-east-1:000000000000:stage%2Fnone").await.assert_error(404, "NOT_FOUND");
    app.get("/api/stats/stages?arn=garbage").await.assert_error(400, "VALIDATION_ERROR");

    app.signal().set_offline(&ChannelId::default());
    assert_eq!(app.get("/api/stats").await.assert_ok()["isPublisherLive"], false);
    app.join("c").await.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn snapshots_are_recorded_and_pruned_after_retention() {
    let app = spawn_app().await;
    app.go_live().await;
    app.join("a").await.assert_ok();
    assert_eq!(app.service.stats().take_snapshot().await.unwrap(), 1);
    let snaps = app.service.stats().snapshots(1).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].2, 1);
}

/// Snapshots are kept 90 days (the contract's retention): one taken exactly 90 days ago stays,
/// one a millisecond older goes; 89 days stays, 91 days goes.
#[tokio::test]
async fn snapshots_are_kept_exactly_ninety_days() {
    let app = spawn_app().await;
    const DAY: i64 = 86_400_000;
    let take = || async {
        app.service.stats().take_snapshot().await.unwrap();
        app.service.stats().snapshots(24 * 400).await.unwrap().last().unwrap().1.clone()
    };
    let kept = || async {
        let mut at: Vec<String> = app.service.stats().snapshots(24 * 400).await.unwrap().into_iter().map(|s| s.1).collect();
        at.sort();
        at
    };
    let day0 = take().await;
    app.clock.advance_ms(DAY);
    let day1 = take().await;
    app.clock.advance_ms(DAY);
    let day2 = take().await;
    app.clock.advance_ms(89 * DAY);
    // now: day0 is 91 days old, day1 exactly 90, day2 89
    let day91 = take().await;
    assert_eq!(kept().await, [day1.clone(), day2.clone(), day91.clone()], "91 days is past retention, 90 and 89 are not");
    assert!(!kept().await.contains(&day0));
    app.clock.advance_ms(1);
    let later = take().await;
    assert_eq!(kept().await, [day2, day91, later], "90 days and 1 ms is past retention");
}
