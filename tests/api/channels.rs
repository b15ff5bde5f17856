//! Channels: their rows in the store (and the upgrade of a database written before channels
//! existed), the Channels component, and the channel routes.

use crate::helpers::*;
use livestage::domain::{ChannelId, LivePublisher, StageArn, UnixMs};
use livestage::server::service::{ChannelError, NewChannel};
use livestage::server::store::{ChannelRecord, DescriptionChange, Store};
use reqwest::Method;
use serde_json::json;

fn channel(name: &str) -> ChannelId {
    ChannelId::parse(name).unwrap()
}

fn arn(id: &str) -> StageArn {
    StageArn::parse(format!("arn:aws:ivs:local:000000000000:stage/{id}")).unwrap()
}

fn record(name: &str, at: i64) -> ChannelRecord {
    ChannelRecord {
        name: channel(name),
        title: format!("{name} title"),
        description: None,
        stream_key_hash: None,
        master_stage_arn: None,
        created_at: UnixMs::from_millis(at),
        updated_at: UnixMs::from_millis(at),
    }
}

async fn open(db: &TestDb) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&test_settings(dir.path(), db).database_url()).await.unwrap();
    (store, dir)
}

#[tokio::test]
async fn the_default_channel_always_exists() {
    let db = TestDb::new().await;
    let (store, _dir) = open(&db).await;
    let all = store.channels().list().await.unwrap();
    assert_eq!(all.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["default"]);
    assert_eq!(all[0].master_stage_arn, None, "a fresh database has no master stage yet");
    assert_eq!(store.channels().count().await.unwrap(), 1);
    store.close().await;
}

#[tokio::test]
async fn channels_are_added_once_changed_and_removed() {
    let db = TestDb::new().await;
    let (store, _dir) = open(&db).await;
    let rows = store.channels();
    assert!(rows.insert(&record("news", 1_000)).await.unwrap());
    assert!(!rows.insert(&record("news", 2_000)).await.unwrap(), "a taken name is refused");
    assert_eq!(rows.get(&channel("news")).await.unwrap().unwrap().created_at.as_millis(), 1_000, "the first one stays");
    assert!(rows.insert(&record("sport", 3_000)).await.unwrap());
    let names: Vec<String> = rows.list().await.unwrap().into_iter().map(|c| c.name.to_string()).collect();
    // Oldest first: these two were created (at 1 s and 3 s) before the default one (now).
    assert_eq!(names, ["news", "sport", "default"]);

    let changed = rows.update(&channel("news"), Some("Evening news"), DescriptionChange::Set("At nine"), 5_000).await.unwrap();
    let changed = changed.expect("it exists");
    assert_eq!(
        (changed.title.as_str(), changed.description.as_deref(), changed.updated_at.as_millis()),
        ("Evening news", Some("At nine"), 5_000)
    );
    let kept = rows.update(&channel("news"), None, DescriptionChange::Keep, 6_000).await.unwrap().unwrap();
    assert_eq!((kept.title.as_str(), kept.description.as_deref()), ("Evening news", Some("At nine")));
    let cleared = rows.update(&channel("news"), None, DescriptionChange::Clear, 7_000).await.unwrap().unwrap();
    assert_eq!(cleared.description, None);
    assert_eq!(rows.update(&channel("nope"), Some("x"), DescriptionChange::Keep, 8_000).await.unwrap(), None);

    assert!(rows.delete(&channel("news")).await.unwrap());
    assert!(!rows.delete(&channel("news")).await.unwrap());
    assert_eq!(rows.get(&channel("news")).await.unwrap(), None);
    store.close().await;
}

#[tokio::test]
async fn a_stream_key_hash_finds_its_channel_until_it_is_replaced() {
    let db = TestDb::new().await;
    let (store, _dir) = open(&db).await;
    let rows = store.channels();
    rows.insert(&record("news", 1_000)).await.unwrap();
    assert!(rows.set_stream_key_hash(&channel("news"), "aaaa", 2_000).await.unwrap());
    assert_eq!(rows.by_stream_key_hash("aaaa").await.unwrap().unwrap().name, channel("news"));
    assert!(rows.set_stream_key_hash(&channel("news"), "bbbb", 3_000).await.unwrap());
    assert_eq!(rows.by_stream_key_hash("aaaa").await.unwrap(), None, "the old key no longer works");
    assert_eq!(rows.by_stream_key_hash("bbbb").await.unwrap().unwrap().name, channel("news"));
    assert!(!rows.set_stream_key_hash(&channel("nope"), "cccc", 4_000).await.unwrap());
    store.close().await;
}

#[tokio::test]
async fn the_first_master_stage_recorded_for_a_channel_wins() {
    let db = TestDb::new().await;
    let (store, _dir) = open(&db).await;
    let rows = store.channels();
    rows.insert(&record("news", 1_000)).await.unwrap();
    // Two instances racing to record their new master stage: one of them wins, both agree.
    let (news, first, second) = (channel("news"), arn("a"), arn("b"));
    let (a, b) = tokio::join!(rows.master_or_insert(&news, &first), rows.master_or_insert(&news, &second));
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    assert_eq!(a, b);
    assert!(a == arn("a") || a == arn("b"));
    assert_eq!(rows.master_or_insert(&channel("news"), &arn("c")).await.unwrap(), Some(a));
    assert_eq!(rows.master_or_insert(&channel("nope"), &arn("c")).await.unwrap(), None, "no such channel");
    rows.set_master(&channel("news"), &arn("d")).await.unwrap();
    assert_eq!(rows.get(&channel("news")).await.unwrap().unwrap().master_stage_arn, Some(arn("d")));
    store.close().await;
}

/// A database written by a server from before channels (migrations 0001 and 0002), with a
/// master stage, a viewer and a reported publisher, opened by this one.
#[tokio::test]
async fn a_database_from_before_channels_is_upgraded_into_the_default_channel() {
    use sqlx::any::AnyPoolOptions;
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let url = test_settings(dir.path(), &db).database_url();
    let engine = if url.starts_with("sqlite") { "sqlite" } else { "postgres" };
    let old = tempfile::tempdir().unwrap();
    for file in ["0001_init.sql", "0002_publisher_live.sql"] {
        let from = format!("{}/migrations/{engine}/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(from, old.path().join(file)).unwrap();
    }
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(old.path()).await.unwrap().run(&pool).await.unwrap();
    let master = arn("Master01").to_string();
    for statement in [
        format!(
            "INSERT INTO stages (arn, name, is_master, auto_scaled, tags, endpoints, created_at, updated_at) \
             VALUES ('{master}', 'master', 1, 0, '{{}}', '{{}}', 1000, 1000)"
        ),
        format!("INSERT INTO settings (key, value) VALUES ('master_stage_arn', '{master}')"),
        "INSERT INTO settings (key, value) VALUES ('deployment_id', 'dep1')".to_string(),
        format!("INSERT INTO watch_sessions (user_id, stage_arn, participant_id, joined_at) VALUES ('v', '{master}', 'p', 2000)"),
        format!(
            "INSERT INTO publisher_live (singleton, user_id, participant_id, stage_arn, since_ms, expires_ms) \
             VALUES (1, 'b', 'pb', '{master}', 1, 2)"
        ),
    ] {
        sqlx::query(&statement).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = Store::connect(&url).await.expect("the old database opens and is upgraded");
    let default = store.channels().get(&ChannelId::default()).await.unwrap().expect("the default channel");
    assert_eq!(default.master_stage_arn.as_ref().map(StageArn::as_str), Some(master.as_str()), "it keeps the master stage");
    assert_eq!(store.settings().get("master_stage_arn").await.unwrap(), None, "remembered in one place only");
    assert_eq!(store.settings().get("deployment_id").await.unwrap().as_deref(), Some("dep1"), "other settings stay");
    let stage = store.stages().master(&ChannelId::default()).await.unwrap().expect("the master stage row");
    assert_eq!((stage.arn.as_str(), &stage.channel), (master.as_str(), &ChannelId::default()));
    assert_eq!(store.sessions().history("v", 10).await.unwrap().len(), 1, "history is kept");
    assert_eq!(store.publishers().shared(&ChannelId::default(), 0).await.unwrap(), None, "old reports are not carried over");
    store.close().await;

    // And a server on it serves that master stage.
    let db = std::sync::Arc::new(db);
    let mut app = spawn_on_dir(&db, dir).await;
    let info = app.get("/api/stage/master/info").await;
    assert_eq!(info.assert_ok()["stage"]["arn"], master.as_str());
    app.stop().await;
}

// ---- the Channels component ----

fn new_channel(name: &str) -> NewChannel {
    NewChannel { name: channel(name), title: None, description: Some("About it".into()) }
}

#[tokio::test]
async fn a_new_channel_gets_its_own_master_stage_and_a_stream_key_that_finds_it() {
    let mut app = spawn_app().await;
    let channels = app.service.channels();
    let (news, key) = channels.create(new_channel("news")).await.expect("created");
    assert_eq!((news.title.as_str(), news.description.as_deref()), ("news", Some("About it")), "the title defaults to the name");
    let master = news.master_stage_arn.clone().expect("a master stage");
    let default_master = app.service.store().stages().master(&ChannelId::default()).await.unwrap().unwrap();
    assert_ne!(master, default_master.arn, "its own, not the default channel's");
    let stage = app.service.store().stages().master(&channel("news")).await.unwrap().expect("its stage row");
    assert_eq!((stage.arn.as_str(), stage.name.as_str()), (master.as_str(), "news-master"));
    assert_eq!(stage.tags.get("LivestageChannel").map(String::as_str), Some("news"));

    assert_eq!(channels.by_stream_key(key.as_str()).await.unwrap().map(|c| c.name), Some(channel("news")));
    for wrong in ["", "lsk_", "not-a-key", &format!("{}x", key.as_str()), &key.as_str().replace("lsk_", "lsk-")] {
        assert_eq!(channels.by_stream_key(wrong).await.unwrap(), None, "{wrong:?}");
    }
    let rotated = channels.rotate_stream_key(&channel("news")).await.unwrap();
    assert_ne!(rotated, key);
    assert_eq!(channels.by_stream_key(key.as_str()).await.unwrap(), None, "the old key stopped working");
    assert_eq!(channels.by_stream_key(rotated.as_str()).await.unwrap().map(|c| c.name), Some(channel("news")));
    assert!(matches!(channels.rotate_stream_key(&channel("nope")).await, Err(ChannelError::NotFound(_))));

    assert!(matches!(channels.create(new_channel("news")).await, Err(ChannelError::Taken(_))), "a name is taken once");
    let names: Vec<String> = channels.list().await.unwrap().into_iter().map(|c| c.name.to_string()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"default".to_string()) && names.contains(&"news".to_string()));
    app.stop().await;
}

#[tokio::test]
async fn a_channel_that_no_stage_can_be_made_for_is_not_kept() {
    // The default channel's master stage is the one stage allowed.
    let mut app = spawn_app_with(|s| s.stage.max_stages = 1).await;
    let e = app.service.channels().create(new_channel("news")).await.unwrap_err();
    assert!(matches!(e, ChannelError::StageLimit(1)), "{e:?}");
    assert_eq!(livestage::server::error::AppError::from(e).code().http_status(), 503);
    assert_eq!(app.service.store().channels().get(&channel("news")).await.unwrap(), None);
    assert_eq!(app.service.store().stages().count().await.unwrap(), 1);
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_channel_removes_its_stages_but_never_the_default_or_a_live_one() {
    let mut app = spawn_app().await;
    let channels = app.service.channels();
    let (news, _) = channels.create(new_channel("news")).await.unwrap();
    let master = news.master_stage_arn.unwrap();
    let e = channels.delete(&ChannelId::default()).await.unwrap_err();
    assert!(matches!(e, ChannelError::Permanent));
    assert_eq!(livestage::server::error::AppError::from(e).code().http_status(), 403);

    // Live (as another instance reports it): refused, with the stages kept.
    let live = LivePublisher {
        user_id: "b".into(),
        participant_id: "p".into(),
        stage_arn: master.to_string(),
        since: UnixMs::from_millis(1),
    };
    app.service.publishers().set_remote([(channel("news"), live)].into());
    let e = channels.delete(&channel("news")).await.unwrap_err();
    assert!(matches!(e, ChannelError::Live(_)), "{e:?}");
    assert_eq!(livestage::server::error::AppError::from(e).code().http_status(), 400);
    assert!(app.service.store().stages().get(master.as_str()).await.unwrap().is_some());

    app.service.publishers().set_remote(Default::default());
    channels.delete(&channel("news")).await.expect("deleted once offline");
    assert_eq!(app.service.store().stages().get(master.as_str()).await.unwrap(), None, "its stage went with it");
    assert!(app.service.store().stages().of_channel(&channel("news")).await.unwrap().is_empty());
    assert!(matches!(channels.get(&channel("news")).await, Err(ChannelError::NotFound(_))));
    assert!(matches!(channels.delete(&channel("news")).await, Err(ChannelError::NotFound(_))));
    assert!(
        app.service.store().stages().master(&ChannelId::default()).await.unwrap().is_some(),
        "the default channel is untouched"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_channel_title_and_description_change_and_the_description_clears() {
    let mut app = spawn_app().await;
    let channels = app.service.channels();
    channels.create(new_channel("news")).await.unwrap();
    let c = channels.update(&channel("news"), Some("Evening news"), DescriptionChange::Keep).await.unwrap();
    assert_eq!((c.title.as_str(), c.description.as_deref()), ("Evening news", Some("About it")));
    let c = channels.update(&channel("news"), None, DescriptionChange::Clear).await.unwrap();
    assert_eq!((c.title.as_str(), c.description), ("Evening news", None));
    assert!(matches!(
        channels.update(&channel("nope"), Some("x"), DescriptionChange::Keep).await,
        Err(ChannelError::NotFound(_))
    ));
    app.stop().await;
}

// ---- the channel routes ----

#[tokio::test]
async fn channels_are_created_listed_changed_rekeyed_and_deleted_over_rest() {
    let mut app = spawn_app().await;
    let created = app.post("/api/channels", json!({ "name": "news", "title": "Evening news" })).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let data = created.data();
    let key = data["streamKey"].as_str().expect("the stream key, shown once").to_string();
    let c = &data["channel"];
    assert_eq!(
        (c["name"].as_str(), c["title"].as_str(), c["isLive"].as_bool()),
        (Some("news"), Some("Evening news"), Some(false))
    );
    assert_eq!((c["viewerCount"].as_u64(), c["activeStages"].as_u64()), (Some(0), Some(1)));
    assert!(c["masterStageArn"].as_str().is_some_and(|a| a.starts_with("arn:")));
    assert_iso(&c["createdAt"]);
    assert!(c.get("streamKey").is_none(), "the key is not part of the channel");

    app.post("/api/channels", json!({ "name": "news" })).await.assert_error(409, "CONFLICT");
    let bad = app.post("/api/channels", json!({ "name": "Bad Name" })).await;
    bad.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(bad.body["error"]["details"]["invalidFields"], json!(["name"]));

    let got = app.get("/api/channels/news").await;
    assert_eq!(got.assert_ok()["channel"]["title"], "Evening news");
    assert!(!got.body.to_string().contains(&key), "a read never shows the key");
    app.get("/api/channels/nope").await.assert_error(404, "NOT_FOUND");
    app.get("/api/channels/Not_A_Slug").await.assert_error(400, "VALIDATION_ERROR");

    let list = app.get("/api/channels").await;
    let list = list.assert_ok();
    assert_eq!(list["totalChannels"], 2);
    assert_eq!(list["totalViewers"], 0);
    let names: Vec<&str> = list["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"default") && names.contains(&"news"), "{names:?}");

    let changed = app.put("/api/channels/news", json!({ "description": "At nine" })).await;
    let changed = changed.assert_ok();
    assert_eq!(
        (changed["channel"]["title"].as_str(), changed["channel"]["description"].as_str()),
        (Some("Evening news"), Some("At nine"))
    );
    app.put("/api/channels/news", json!({})).await.assert_error(400, "VALIDATION_ERROR");

    let rotated = app.post("/api/channels/news/stream-key", json!({})).await;
    let new_key = rotated.assert_ok()["streamKey"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    let found = app.service.channels().by_stream_key(&new_key).await.unwrap().map(|c| c.name);
    assert_eq!(found, Some(channel("news")));
    assert_eq!(app.service.channels().by_stream_key(&key).await.unwrap(), None, "the old key stopped working");

    app.delete("/api/channels/default", None).await.assert_error(403, "FORBIDDEN");
    let deleted = app.delete("/api/channels/news", None).await;
    assert_eq!(deleted.assert_ok()["deleted"], true);
    app.get("/api/channels/news").await.assert_error(404, "NOT_FOUND");
    assert_eq!(app.get("/api/channels").await.assert_ok()["totalChannels"], 1);
    app.stop().await;
}

#[tokio::test]
async fn the_channel_routes_need_the_api_key() {
    let mut app = spawn_app().await;
    for (method, path) in
        [(Method::GET, "/api/channels"), (Method::POST, "/api/channels"), (Method::POST, "/api/channels/default/stream-key")]
    {
        app.request(method, path, Some(json!({ "name": "x" })), None).await.assert_error(401, "UNAUTHORIZED");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_channel_no_stage_can_be_made_for_answers_503() {
    let mut app = spawn_app_with(|s| s.stage.max_stages = 1).await;
    app.post("/api/channels", json!({ "name": "news" })).await.assert_error(503, "STAGE_LIMIT_REACHED");
    app.get("/api/channels/news").await.assert_error(404, "NOT_FOUND");
    app.stop().await;
}

// ---- a channel's tokens, stats, live totals and auto-scaling ----

/// Creates channel `name` over REST; returns its master stage's ARN.
async fn create(app: &TestApp, name: &str) -> String {
    let created = app.post("/api/channels", json!({ "name": name })).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.data()["channel"]["masterStageArn"].as_str().unwrap().to_string()
}

/// Makes `user` live on channel `name`'s master stage, as the media plane reports it.
fn go_live_on(app: &TestApp, name: &str, master: &str, user: &str) {
    let live = LivePublisher {
        user_id: user.into(),
        participant_id: format!("{user}-1"),
        stage_arn: master.into(),
        since: UnixMs::from_millis(1),
    };
    app.signal().set_live(channel(name), live);
}

#[tokio::test]
async fn a_channel_issues_its_own_tokens_on_its_own_stages() {
    let mut app = spawn_app().await;
    let news = create(&app, "news").await;
    let default_master = app.master_arn().await;

    // Publisher tokens are for the channel's master stage.
    let p = app.post("/api/token/publisher", json!({ "userId": "anchor", "channel": "news" })).await;
    let p = p.assert_ok();
    assert_eq!((p["channel"].as_str(), p["stageArn"].as_str()), (Some("news"), Some(news.as_str())));
    let p = app.post("/api/token/publisher", json!({ "userId": "host" })).await;
    assert_eq!(
        (p.assert_ok()["channel"].as_str(), p.data()["stageArn"].as_str()),
        (Some("default"), Some(default_master.as_str()))
    );

    // A viewer joins a channel only while that channel is live, and lands on its stages.
    app.post("/api/token/viewer", json!({ "userId": "v1", "channel": "news" })).await.assert_error(404, "NOT_FOUND");
    go_live_on(&app, "news", &news, "anchor");
    let v = app.post("/api/token/viewer", json!({ "userId": "v1", "channel": "news" })).await;
    let v = v.assert_ok();
    assert_eq!((v["channel"].as_str(), v["stageArn"].as_str()), (Some("news"), Some(news.as_str())));
    app.join("v1").await.assert_error(404, "NOT_FOUND"); // the default channel is not live
    app.go_live().await;
    let d = app.join("v1").await;
    assert_eq!(
        (d.assert_ok()["channel"].as_str(), d.data()["stageArn"].as_str()),
        (Some("default"), Some(default_master.as_str()))
    );
    assert_eq!(d.data()["isNewViewer"], true, "watching news does not count as watching the default channel");

    // A stage must be the channel's; a channel must exist and be named as channels are.
    let wrong = app.post("/api/token/viewer", json!({ "userId": "v2", "channel": "news", "stageArn": default_master })).await;
    wrong.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(wrong.body["error"]["details"]["invalidFields"], json!(["stageArn"]));
    app.post("/api/token/viewer", json!({ "userId": "v2", "channel": "nope" })).await.assert_error(404, "NOT_FOUND");
    app.post("/api/token/publisher", json!({ "userId": "p", "channel": "nope" })).await.assert_error(404, "NOT_FOUND");
    let bad = app.post("/api/token/viewer", json!({ "userId": "v2", "channel": "Not A Slug" })).await;
    bad.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(bad.body["error"]["details"]["invalidFields"], json!(["channel"]));

    // The channel going offline turns its viewers away and leaves the default one live.
    app.signal().set_offline(&channel("news"));
    app.post("/api/token/viewer", json!({ "userId": "v3", "channel": "news" })).await.assert_error(404, "NOT_FOUND");
    app.join("v3").await.assert_ok();
    app.stop().await;
}

#[tokio::test]
async fn every_stats_route_answers_for_the_channel_asked_for() {
    let mut app = spawn_app().await;
    let news = create(&app, "news").await;
    let default_master = app.master_arn().await;
    go_live_on(&app, "news", &news, "anchor");
    for u in ["a", "b"] {
        app.post("/api/token/viewer", json!({ "userId": u, "channel": "news" })).await.assert_ok();
    }

    let stats = app.get("/api/stats?channel=news").await;
    let stats = stats.assert_ok();
    assert_eq!((stats["totalViewers"].as_u64(), stats["isPublisherLive"].as_bool()), (Some(2), Some(true)));
    assert_eq!(stats["stages"][0]["stageArn"], news.as_str());
    let default = app.get("/api/stats").await;
    assert_eq!(
        (default.assert_ok()["totalViewers"].as_u64(), default.data()["isPublisherLive"].as_bool()),
        (Some(0), Some(false))
    );
    assert_eq!(app.get("/api/stats?channel=default").await.assert_ok()["stages"][0]["stageArn"], default_master.as_str());

    assert_eq!(app.get("/api/stats/viewers?channel=news").await.assert_ok()["totalViewers"], 2);
    assert_eq!(app.get("/api/stats/viewers").await.assert_ok()["totalViewers"], 0);
    let p = app.get("/api/stats/publisher?channel=news").await;
    assert_eq!(p.assert_ok()["publisher"]["userId"], "anchor");
    assert_eq!(app.get("/api/stats/publisher").await.assert_ok()["isPublisherLive"], false);
    let stages = app.get("/api/stats/stages?channel=news").await;
    let stages = stages.assert_ok();
    assert_eq!(stages["totalStages"], 1);
    assert_eq!(stages["stages"][0]["stageArn"], news.as_str());
    assert_eq!(stages["stages"][0]["channel"], "news");
    let master = app.get("/api/stage/master/info?channel=news").await;
    assert_eq!(master.assert_ok()["stage"]["arn"], news.as_str());
    assert_eq!(master.data()["viewerCount"], 2);
    assert_eq!(app.get("/api/stage/master/info").await.assert_ok()["stage"]["arn"], default_master.as_str());
    // Every stage, each with its channel, on the stage list.
    let all = app.get("/api/stage/list").await;
    let channels: Vec<&str> =
        all.assert_ok()["stages"].as_array().unwrap().iter().map(|s| s["channel"].as_str().unwrap()).collect();
    assert_eq!((channels.len(), channels.contains(&"news"), channels.contains(&"default")), (2, true, true));

    for path in ["/api/stats", "/api/stats/viewers", "/api/stats/publisher", "/api/stats/stages", "/api/stage/master/info"] {
        app.get(&format!("{path}?channel=nope")).await.assert_error(404, "NOT_FOUND");
        let bad = app.get(&format!("{path}?channel=Bad%20Name")).await;
        bad.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(bad.body["error"]["details"]["invalidFields"], json!(["channel"]), "{path}");
    }
    let listed = app.get("/api/channels/news").await;
    assert_eq!(
        (listed.assert_ok()["channel"]["isLive"].as_bool(), listed.data()["channel"]["viewerCount"].as_u64()),
        (Some(true), Some(2))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_channels_live_totals_are_pushed_to_its_own_subscribers() {
    use crate::websocket::{connect, next_json, send};
    use std::time::Duration;
    let mut app = spawn_app().await;
    let news = create(&app, "news").await;
    app.service.stats().refresh().await.unwrap();
    let mut news_ws = connect(&app).await;
    send(&mut news_ws, json!({ "action": "subscribe", "channel": "stats:news" })).await;
    let m = next_json(&mut news_ws, Duration::from_secs(2)).await.expect("reply");
    assert_eq!((m["type"].as_str(), m["channel"].as_str()), (Some("subscribed"), Some("stats:news")));
    let m = next_json(&mut news_ws, Duration::from_secs(2)).await.expect("first stats");
    assert_eq!(
        (m["data"]["isPublisherLive"].as_bool(), m["data"]["stages"][0]["stageArn"].as_str()),
        (Some(false), Some(news.as_str()))
    );
    let mut default_ws = connect(&app).await;
    send(&mut default_ws, json!({ "action": "subscribe", "channel": "stats" })).await;
    next_json(&mut default_ws, Duration::from_secs(2)).await.expect("subscribed");
    next_json(&mut default_ws, Duration::from_secs(2)).await.expect("first stats");

    go_live_on(&app, "news", &news, "anchor");
    let m = next_json(&mut news_ws, Duration::from_secs(1)).await.expect("news update within 1 s");
    assert_eq!(m["data"]["isPublisherLive"], true);
    app.post("/api/token/viewer", json!({ "userId": "a", "channel": "news" })).await.assert_ok();
    let m = next_json(&mut news_ws, Duration::from_secs(1)).await.expect("the viewer within 1 s");
    assert_eq!(m["data"]["totalViewers"], 1);
    assert_eq!(m["data"]["channel"], "news", "every update says whose totals it carries");
    // The default channel's subscribers hear nothing of it (the next is the 5-second repeat).
    let m = next_json(&mut default_ws, Duration::from_secs(6)).await.expect("the periodic repeat");
    assert_eq!((m["data"]["isPublisherLive"].as_bool(), m["data"]["totalViewers"].as_u64()), (Some(false), Some(0)));
    assert_eq!(m["data"]["channel"], "default");

    // An unknown channel is refused and the connection stays usable.
    send(&mut default_ws, json!({ "action": "subscribe", "channel": "stats:nope" })).await;
    let m = next_json(&mut default_ws, Duration::from_secs(2)).await.expect("error");
    assert_eq!((m["type"].as_str(), m["error"]["code"].as_str()), (Some("error"), Some("UNKNOWN_CHANNEL")));
    send(&mut default_ws, json!({ "action": "ping" })).await;
    assert_eq!(next_json(&mut default_ws, Duration::from_secs(2)).await.expect("pong")["type"], "pong");
    app.stop().await;
}

#[tokio::test]
async fn each_channel_scales_on_its_own_audience() {
    use livestage::domain::autoscale::ScaleDecision;
    let mut app = spawn_app_with(small_stages).await;
    let news = create(&app, "news").await;
    go_live_on(&app, "news", &news, "anchor");
    app.go_live().await;
    for u in ["a", "b", "c"] {
        app.post("/api/token/viewer", json!({ "userId": u, "channel": "news" })).await.assert_ok();
    }
    app.join("d").await.assert_ok();
    let autoscaler = app.service.autoscaler();
    assert_eq!(autoscaler.step(&ChannelId::default()).await.unwrap(), ScaleDecision::Hold, "one viewer on default");
    assert_eq!(autoscaler.step(&channel("news")).await.unwrap(), ScaleDecision::ScaleUp, "three on news");
    let stages = app.get("/api/stats/stages?channel=news").await;
    let stages = stages.assert_ok()["stages"].as_array().unwrap().clone();
    assert_eq!(stages.len(), 2, "the new stage is the channel's");
    let added = stages.iter().find(|s| s["autoScaled"] == true).expect("an auto-scaled stage");
    assert_eq!(added["channel"], "news");
    assert_eq!(app.get("/api/stats/stages").await.assert_ok()["totalStages"], 1, "the default channel keeps one");
    // New viewers of news may land on the new stage; the default channel's never do.
    let added_arn = added["stageArn"].as_str().unwrap();
    for u in ["e", "f", "g"] {
        let d = app.join(u).await;
        assert_ne!(d.assert_ok()["stageArn"].as_str(), Some(added_arn));
    }
    app.stop().await;
}

#[tokio::test]
async fn one_channels_crowd_leaves_stages_for_the_others() {
    use livestage::domain::autoscale::ScaleDecision;
    let mut app = spawn_app_with(|s| {
        small_stages(s);
        s.stage.max_stages = 4;
        s.stage.max_stages_per_channel = 2;
    })
    .await;
    let news = create(&app, "news").await;
    go_live_on(&app, "news", &news, "anchor");
    app.go_live().await;
    let autoscaler = app.service.autoscaler();
    let join_news = |u: String| app.post("/api/token/viewer", json!({ "userId": u, "channel": "news" }));
    for i in 0..3 {
        join_news(format!("n{i}")).await.assert_ok();
    }
    assert_eq!(autoscaler.step(&channel("news")).await.unwrap(), ScaleDecision::ScaleUp);
    for i in 3..6 {
        join_news(format!("n{i}")).await.assert_ok();
    }
    // News is at its own cap of two stages; the fourth stage of the server stays free.
    assert_eq!(autoscaler.step(&channel("news")).await.unwrap(), ScaleDecision::Hold, "news is at its cap");
    for u in ["d1", "d2", "d3"] {
        app.join(u).await.assert_ok();
    }
    assert_eq!(autoscaler.step(&ChannelId::default()).await.unwrap(), ScaleDecision::ScaleUp, "default still scales");
    assert_eq!(app.get("/api/stats/stages").await.assert_ok()["totalStages"], 2);
    assert_eq!(app.get("/api/stats/stages?channel=news").await.assert_ok()["totalStages"], 2);
    app.stop().await;
}

#[tokio::test]
async fn a_flash_crowd_is_placed_on_stages_made_for_it_without_stage_full() {
    let mut app = spawn_app_with(|s| {
        s.stage.autoscale = true;
        s.stage.max_viewers_per_stage = 50;
        s.stage.scale_up_threshold = 45;
        s.stage.max_stages = 21;
        s.stage.max_stages_per_channel = 20;
        // Time for every join of the crowd, however busy the machine running the tests is.
        s.stage.join_wait_ms = 60_000;
    })
    .await;
    let master = create(&app, "concert").await;
    go_live_on(&app, "concert", &master, "band");
    // The waiting audience joins at once when the broadcast starts.
    let started = std::time::Instant::now();
    let joins = (0..500).map(|i| {
        let app = &app;
        async move { app.post("/api/token/viewer", json!({ "userId": format!("fan-{i}"), "channel": "concert" })).await }
    });
    let answers = futures_util::future::join_all(joins).await;
    let elapsed = started.elapsed();
    let refused: Vec<_> = answers.iter().filter(|r| r.status != 200).map(|r| (r.status, r.body.clone())).collect();
    assert!(refused.is_empty(), "{} of 500 joins refused, e.g. {:?}", refused.len(), refused.first());
    println!("500 simultaneous joins placed in {} ms", elapsed.as_millis());
    let stages = app.get("/api/stats/stages?channel=concert").await;
    let stages = stages.assert_ok()["stages"].as_array().unwrap().clone();
    let counts: Vec<u64> = stages.iter().map(|s| s["viewerCount"].as_u64().unwrap()).collect();
    assert_eq!(counts.iter().sum::<u64>(), 500, "{counts:?}");
    assert!(counts.iter().all(|&c| c <= 50), "no stage over its capacity: {counts:?}");
    assert!(stages.len() >= 10 && stages.len() <= 20, "{} stages for 500 viewers: {counts:?}", stages.len());
    assert!(stages.iter().all(|s| s["channel"] == "concert"));
    assert_eq!(app.get("/api/stats?channel=concert").await.assert_ok()["totalViewers"], 500);
    app.stop().await;
}

#[tokio::test]
async fn the_directory_is_pushed_within_a_second_of_each_change() {
    use crate::websocket::{connect, next_json, send};
    use std::time::Duration;
    let mut app = spawn_app().await;
    app.service.stats().refresh().await.unwrap();
    let mut ws = connect(&app).await;
    // The directory beside a channel's totals: neither replaces the other.
    send(&mut ws, json!({ "action": "subscribe", "channel": "stats" })).await;
    assert_eq!(next_json(&mut ws, Duration::from_secs(2)).await.expect("subscribed")["channel"], "stats");
    assert_eq!(next_json(&mut ws, Duration::from_secs(2)).await.expect("stats")["type"], "stats_update");
    send(&mut ws, json!({ "action": "subscribe", "channel": "channels" })).await;
    let m = next_json(&mut ws, Duration::from_secs(2)).await.expect("subscribed");
    assert_eq!((m["type"].as_str(), m["channel"].as_str()), (Some("subscribed"), Some("channels")));
    let m = next_json(&mut ws, Duration::from_secs(2)).await.expect("the directory");
    assert_eq!(m["type"], "channels_update");
    assert_eq!(m["data"]["totalChannels"], 1);
    assert_eq!(m["data"]["channels"][0]["name"], "default");

    // Skips the 5-second repeat of the default channel's totals.
    async fn next_listing(ws: &mut crate::websocket::Ws, what: &str) -> serde_json::Value {
        for _ in 0..3 {
            let m = next_json(ws, Duration::from_secs(1)).await.unwrap_or_else(|| panic!("{what} within 1 s"));
            if m["type"] == "channels_update" {
                return m["data"].clone();
            }
        }
        panic!("no directory update for {what}")
    }
    let news = create(&app, "news").await;
    let d = next_listing(&mut ws, "a new channel").await;
    assert_eq!(d["totalChannels"], 2);
    let listed = d["channels"].as_array().unwrap().iter().find(|c| c["name"] == "news").cloned();
    assert_eq!(listed, Some(json!({ "name": "news", "title": "news", "description": null, "isLive": false, "viewerCount": 0 })));

    go_live_on(&app, "news", &news, "anchor");
    let d = next_listing(&mut ws, "news going live").await;
    assert_eq!(
        (d["channels"][0]["name"].as_str(), d["channels"][0]["isLive"].as_bool()),
        (Some("news"), Some(true)),
        "live first"
    );
    assert_eq!(d["liveChannels"], 1);

    app.post("/api/token/viewer", json!({ "userId": "a", "channel": "news" })).await.assert_ok();
    let d = next_listing(&mut ws, "a viewer").await;
    assert_eq!((d["channels"][0]["viewerCount"].as_u64(), d["totalViewers"].as_u64()), (Some(1), Some(1)));

    app.put("/api/channels/news", json!({ "title": "Evening news" })).await.assert_ok();
    let d = next_listing(&mut ws, "a new title").await;
    assert_eq!(d["channels"][0]["title"], "Evening news");

    app.signal().set_offline(&channel("news"));
    let d = next_listing(&mut ws, "news going offline").await;
    assert_eq!(d["liveChannels"], 0);
    app.delete("/api/channels/news", None).await.assert_ok();
    let d = next_listing(&mut ws, "the channel deleted").await;
    assert_eq!(d["totalChannels"], 1);

    // Unsubscribed, no more listings; the channel's totals go on.
    send(&mut ws, json!({ "action": "unsubscribe", "channel": "channels" })).await;
    let m = next_json(&mut ws, Duration::from_secs(2)).await.expect("unsubscribed");
    assert_eq!((m["type"].as_str(), m["channel"].as_str()), (Some("unsubscribed"), Some("channels")));
    create(&app, "later").await;
    let m = next_json(&mut ws, Duration::from_secs(6)).await.expect("the totals' repeat");
    assert_eq!(m["type"], "stats_update");
    app.stop().await;
}

#[tokio::test]
async fn joins_past_the_channels_stage_cap_are_refused_without_waiting() {
    let mut app = spawn_app_with(|s| {
        s.stage.autoscale = true;
        s.stage.max_viewers_per_stage = 2;
        s.stage.scale_up_threshold = 2;
        s.stage.max_stages = 10;
        s.stage.max_stages_per_channel = 2;
        s.stage.join_wait_ms = 60_000;
    })
    .await;
    let master = create(&app, "club").await;
    go_live_on(&app, "club", &master, "dj");
    let started = std::time::Instant::now();
    let joins = (0..6).map(|i| {
        let app = &app;
        async move { app.post("/api/token/viewer", json!({ "userId": format!("v{i}"), "channel": "club" })).await }
    });
    let answers = futures_util::future::join_all(joins).await;
    let placed = answers.iter().filter(|r| r.status == 200).count();
    let full: Vec<_> = answers.iter().filter(|r| r.status != 200).collect();
    assert_eq!(placed, 4, "two stages of two");
    assert_eq!(full.len(), 2);
    for r in full {
        assert_eq!((r.status.as_u16(), r.body["error"]["code"].as_str()), (503, Some("STAGE_FULL")));
    }
    // At the cap, a join does not wait out JOIN_WAIT_MS.
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
    assert_eq!(app.get("/api/stats/stages?channel=club").await.assert_ok()["totalStages"], 2);
    app.stop().await;
}
