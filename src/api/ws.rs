//! The messages of `/ws`, both ways: what a client sends ([`WsRequest`]) and what the server
//! answers and pushes ([`WsMessage`]).

use super::{Directory, LiveStats};
use crate::domain::ChannelId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

/// A channel a client can subscribe to: a broadcast channel's live totals, pushed as
/// `stats_update` (written `"stats"` for the default channel's and `"stats:NAME"` for channel
/// NAME's), or the channel directory, pushed as `channels_update` (written `"channels"`). A
/// client follows at most one channel's totals (a new one replaces the old) and, beside them,
/// the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsChannel {
    Stats(ChannelId),
    Directory,
}

impl Default for WsChannel {
    fn default() -> Self {
        Self::Stats(ChannelId::default())
    }
}

impl WsChannel {
    /// The live totals of `channel`.
    pub fn stats(channel: ChannelId) -> Self {
        Self::Stats(channel)
    }

    fn parse(raw: &str) -> Option<Self> {
        if raw == "channels" {
            return Some(Self::Directory);
        }
        match raw.strip_prefix("stats") {
            Some("") => Some(Self::default()),
            Some(rest) => rest.strip_prefix(':').and_then(|name| ChannelId::parse(name).ok()).map(Self::stats),
            None => None,
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Stats(channel) if channel.is_default() => "stats".into(),
            Self::Stats(channel) => format!("stats:{channel}"),
            Self::Directory => "channels".into(),
        }
    }
}

impl Serialize for WsChannel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for WsChannel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).ok_or_else(|| serde::de::Error::custom(format!("unknown channel {raw:?}")))
    }
}

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WsAction {
    Subscribe,
    Unsubscribe,
    Ping,
}

/// A client's message: `{"action": "subscribe"|"unsubscribe"|"ping", "channel": "stats"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WsRequest {
    pub action: WsAction,
    pub channel: WsChannel,
}

impl WsRequest {
    pub fn subscribe(channel: WsChannel) -> Self {
        Self { action: WsAction::Subscribe, channel }
    }

    /// The message as sent.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a client's message as the contract allows it: the verb under `"action"` or (as the
    /// earlier server had it) `"type"`; the channel `"stats"` when not given; a ping whatever
    /// the channel.
    pub fn parse(text: &str) -> Result<Self, WsError> {
        let v: Value =
            serde_json::from_str(text).map_err(|_| WsError::new(WsErrorCode::InvalidMessage, "Message is not valid JSON"))?;
        let verb = v
            .get("action")
            .or_else(|| v.get("type"))
            .and_then(Value::as_str)
            .ok_or_else(|| WsError::new(WsErrorCode::InvalidMessage, "Message needs an \"action\" (or \"type\") field"))?;
        let channel = v.get("channel").and_then(Value::as_str).unwrap_or("stats");
        let action = match verb {
            "ping" => return Ok(Self { action: WsAction::Ping, channel: WsChannel::default() }),
            "subscribe" => WsAction::Subscribe,
            "unsubscribe" => WsAction::Unsubscribe,
            other => return Err(WsError::new(WsErrorCode::UnknownAction, format!("Unknown action {other:?}"))),
        };
        match WsChannel::parse(channel) {
            Some(channel) => Ok(Self { action, channel }),
            None => Err(WsError::new(
                WsErrorCode::UnknownChannel,
                format!("Unknown channel {channel:?}; available: \"stats\", \"stats:NAME\" for a channel NAME, and \"channels\""),
            )),
        }
    }
}

/// What the server sends: replies, pushes and errors, told apart by `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WsMessage<'a> {
    /// Live totals, to subscribers only.
    StatsUpdate {
        data: Cow<'a, LiveStats>,
    },
    /// The channel directory, to its subscribers only.
    ChannelsUpdate {
        data: Cow<'a, Directory>,
    },
    Subscribed {
        channel: WsChannel,
        timestamp: String,
    },
    Unsubscribed {
        channel: WsChannel,
        timestamp: String,
    },
    Pong {
        timestamp: String,
    },
    /// A message the server could not act on; the connection stays open.
    Error {
        error: WsError,
    },
}

impl WsMessage<'_> {
    /// The message as sent.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A server message; `None` for anything else.
    pub fn parse(text: &str) -> Option<WsMessage<'static>> {
        serde_json::from_str(text).ok()
    }
}

/// Why a client's message was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsError {
    pub code: WsErrorCode,
    pub message: String,
}

impl WsError {
    pub fn new(code: WsErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// The error codes of `/ws` (apart from the REST contract's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WsErrorCode {
    /// Not JSON, binary, or without a verb.
    InvalidMessage,
    UnknownChannel,
    UnknownAction,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DirectoryEntry;
    use serde_json::json;

    fn code(text: &str) -> WsErrorCode {
        WsRequest::parse(text).unwrap_err().code
    }

    #[test]
    fn accepts_action_or_type() {
        let subscribe = WsRequest::subscribe(WsChannel::default());
        assert_eq!(WsRequest::parse(r#"{"action":"subscribe","channel":"stats"}"#), Ok(subscribe.clone()));
        assert_eq!(WsRequest::parse(r#"{"type":"subscribe","channel":"stats"}"#), Ok(subscribe.clone()));
        assert_eq!(WsRequest::parse(r#"{"type":"subscribe"}"#), Ok(subscribe), "the channel defaults to stats");
        let r = WsRequest::parse(r#"{"action":"unsubscribe","channel":"stats"}"#).unwrap();
        assert_eq!(r.action, WsAction::Unsubscribe);
        assert_eq!(WsRequest::parse(r#"{"action":"ping","channel":"chat"}"#).unwrap().action, WsAction::Ping);
    }

    #[test]
    fn reports_bad_messages() {
        assert_eq!(code("nope"), WsErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"channel":"stats"}"#), WsErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"action":7,"type":"subscribe"}"#), WsErrorCode::InvalidMessage);
        assert_eq!(code("[1]"), WsErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"action":"dance"}"#), WsErrorCode::UnknownAction);
        assert_eq!(code(r#"{"action":"subscribe","channel":"chat"}"#), WsErrorCode::UnknownChannel);
        let e = WsRequest::parse(r#"{"action":"subscribe","channel":"chat"}"#).unwrap_err();
        assert_eq!(e.message, r#"Unknown channel "chat"; available: "stats", "stats:NAME" for a channel NAME, and "channels""#);
        assert_eq!(code(r#"{"action":"subscribe","channel":"stats:Not A Name"}"#), WsErrorCode::UnknownChannel);
        assert_eq!(code(r#"{"action":"subscribe","channel":"stats:"}"#), WsErrorCode::UnknownChannel);
        assert_eq!(code(r#"{"action":"subscribe","channel":"statsnews"}"#), WsErrorCode::UnknownChannel);
    }

    #[test]
    fn a_named_channels_stats_are_stats_colon_name() {
        let news = WsChannel::stats(ChannelId::parse("news").unwrap());
        let r = WsRequest::parse(r#"{"action":"subscribe","channel":"stats:news"}"#).unwrap();
        assert_eq!(r.channel, news);
        let sent = WsRequest::subscribe(news.clone()).to_json();
        assert_eq!(serde_json::from_str::<Value>(&sent).unwrap(), json!({ "action": "subscribe", "channel": "stats:news" }));
        assert_eq!(
            WsRequest::parse("{\"action\":\"subscribe\",\"channel\":\"stats:default\"}").unwrap().channel,
            WsChannel::default()
        );
        let reply = WsMessage::Subscribed { channel: news.clone(), timestamp: "t".into() };
        assert_eq!(WsMessage::parse(&reply.to_json()), Some(WsMessage::Subscribed { channel: news, timestamp: "t".into() }));
    }

    #[test]
    fn the_directory_is_channels() {
        let r = WsRequest::parse(r#"{"action":"subscribe","channel":"channels"}"#).unwrap();
        assert_eq!(r.channel, WsChannel::Directory);
        assert_eq!(
            serde_json::from_str::<Value>(&WsRequest::subscribe(WsChannel::Directory).to_json()).unwrap(),
            json!({ "action": "subscribe", "channel": "channels" })
        );
        assert_eq!(code(r#"{"action":"subscribe","channel":"channels:news"}"#), WsErrorCode::UnknownChannel);
        let entry = |name: &str, is_live, viewer_count| DirectoryEntry {
            name: ChannelId::parse(name).unwrap(),
            title: name.into(),
            description: None,
            is_live,
            viewer_count,
        };
        let dir = Directory::new(vec![entry("default", false, 0), entry("news", true, 4), entry("talk", true, 2)], "t".into());
        let names: Vec<&str> = dir.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["news", "talk", "default"], "live first, oldest first within each group");
        assert_eq!((dir.total_channels, dir.total_viewers, dir.live_channels), (3, 6, 2));
        let push = WsMessage::ChannelsUpdate { data: Cow::Borrowed(&dir) };
        let v: Value = serde_json::from_str(&push.to_json()).unwrap();
        assert_eq!(v["type"], "channels_update");
        assert_eq!(
            v["data"]["channels"][0],
            json!({ "name": "news", "title": "news", "description": null, "isLive": true, "viewerCount": 4 })
        );
        assert_eq!(WsMessage::parse(&push.to_json()), Some(WsMessage::ChannelsUpdate { data: Cow::Owned(dir) }));
    }

    #[test]
    fn the_client_sends_what_the_server_reads() {
        let sent = WsRequest::subscribe(WsChannel::default()).to_json();
        assert_eq!(serde_json::from_str::<Value>(&sent).unwrap(), json!({ "action": "subscribe", "channel": "stats" }));
        assert_eq!(WsRequest::parse(&sent), Ok(WsRequest::subscribe(WsChannel::default())));
    }

    #[test]
    fn server_messages_have_the_contract_shape_and_read_back() {
        let stats = LiveStats { total_viewers: 3, timestamp: "t".into(), ..LiveStats::default() };
        let push = WsMessage::StatsUpdate { data: Cow::Borrowed(&stats) };
        let v: Value = serde_json::from_str(&push.to_json()).unwrap();
        assert_eq!(v["type"], "stats_update");
        assert_eq!(v["data"]["totalViewers"], 3);
        assert_eq!(v["data"]["channel"], "default", "every update says whose totals it carries");
        assert_eq!(WsMessage::parse(&push.to_json()), Some(WsMessage::StatsUpdate { data: Cow::Owned(stats) }));

        let reply = WsMessage::Subscribed { channel: WsChannel::default(), timestamp: "t".into() };
        assert_eq!(
            serde_json::from_str::<Value>(&reply.to_json()).unwrap(),
            json!({ "type": "subscribed", "channel": "stats", "timestamp": "t" })
        );
        let error = WsMessage::Error { error: WsError::new(WsErrorCode::UnknownAction, "Unknown action \"x\"") };
        assert_eq!(
            serde_json::from_str::<Value>(&error.to_json()).unwrap(),
            json!({ "type": "error", "error": { "code": "UNKNOWN_ACTION", "message": "Unknown action \"x\"" } })
        );
        assert_eq!(WsMessage::parse(r#"{"type":"something_new"}"#), None);
    }
}
