//! The broadcaster's sign-in: the API key (any channel's studio) or a channel's stream key (that
//! channel's only), exchanged once for an HttpOnly session cookie that carries its expiry, its
//! channel when it has one, and an HMAC-SHA256 of them under the API key. A channel's session is
//! also bound to the stream key it was opened with (its hash is in the MAC): rotating the key
//! ends it.

use crate::domain::ChannelId;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

pub const COOKIE: &str = "livestage_session";
pub const LIFETIME_SECS: i64 = 12 * 3600;

/// The server's API key, as the app's own pages may check it (never sent to the browser).
#[derive(Clone)]
pub struct ApiKey(pub Arc<str>);

/// What a session may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Opened with the API key: every channel's studio.
    AnyChannel,
    /// Opened with a channel's stream key: that channel's studio only.
    Channel(ChannelId),
}

impl Scope {
    pub fn allows(&self, channel: &ChannelId) -> bool {
        match self {
            Self::AnyChannel => true,
            Self::Channel(own) => own == channel,
        }
    }
}

/// The MAC of a session: its expiry, and for a channel's session the channel and the hash of
/// the stream key it was opened with.
fn mac(key: &str, expires: i64, channel: Option<(&ChannelId, &str)>) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    match channel {
        None => mac.update(format!("broadcaster:{expires}").as_bytes()),
        Some((channel, key_hash)) => mac.update(format!("broadcaster:{expires}:{channel}:{key_hash}").as_bytes()),
    }
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cookie value valid until `now + LIFETIME_SECS`, for every channel.
pub fn issue(key: &str, now_secs: i64) -> String {
    let expires = now_secs + LIFETIME_SECS;
    format!("{expires}.{}", hex(&mac(key, expires, None).finalize().into_bytes()))
}

/// A cookie value valid until `now + LIFETIME_SECS`, for `channel` only, while its stream key
/// hashes to `key_hash`.
pub fn issue_for_channel(key: &str, channel: &ChannelId, key_hash: &str, now_secs: i64) -> String {
    let expires = now_secs + LIFETIME_SECS;
    format!("{expires}.{}.{channel}", hex(&mac(key, expires, Some((channel, key_hash))).finalize().into_bytes()))
}

/// The channel a cookie value is for (`None`: every channel), without checking it.
pub fn claimed_channel(value: &str) -> Option<ChannelId> {
    value.splitn(3, '.').nth(2).and_then(|c| ChannelId::parse(c).ok())
}

/// What `value` allows, if it was issued with `key` and has not expired (constant-time
/// comparison). `key_hash` is the current stream-key hash of the channel the value claims.
pub fn verify(key: &str, value: &str, now_secs: i64, key_hash: Option<&str>) -> Option<Scope> {
    let mut parts = value.splitn(3, '.');
    let expires = parts.next()?.parse::<i64>().ok()?;
    let sig = parts.next()?;
    let channel = match parts.next() {
        Some(raw) => Some(ChannelId::parse(raw).ok()?),
        None => None,
    };
    if expires <= now_secs || sig.len() != 64 {
        return None;
    }
    let sig = (0..32).map(|i| u8::from_str_radix(sig.get(i * 2..i * 2 + 2)?, 16).ok()).collect::<Option<Vec<u8>>>()?;
    match channel {
        None => mac(key, expires, None).verify_slice(&sig).ok().map(|_| Scope::AnyChannel),
        Some(channel) => {
            let hash = key_hash?;
            mac(key, expires, Some((&channel, hash))).verify_slice(&sig).ok().map(|_| Scope::Channel(channel))
        }
    }
}

/// The session cookie's value in a `Cookie` header.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header.split(';').filter_map(|p| p.trim().split_once('=')).find(|(k, _)| *k == COOKIE).map(|(_, v)| v)
}

pub fn set_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={LIFETIME_SECS}{secure}")
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(key: &str, v: &str, now: i64) -> bool {
        verify(key, v, now, None) == Some(Scope::AnyChannel)
    }

    #[test]
    fn a_cookie_verifies_only_with_its_key_and_before_expiry() {
        let v = issue("key-a", 1_000);
        assert!(ok("key-a", &v, 1_000));
        assert!(!ok("key-b", &v, 1_000));
        assert!(!ok("key-a", &v, 1_000 + LIFETIME_SECS));
        let (exp, sig) = v.split_once('.').unwrap();
        assert!(!ok("key-a", &format!("{}.{sig}", exp.parse::<i64>().unwrap() + 1), 1_000), "expiry is signed");
        assert!(!ok("key-a", "garbage", 1_000));
        assert!(!ok("key-a", "1.zz", 1_000));
        assert_eq!(
            verify("key-a", &format!("{}.{}", "9".repeat(12), "é".repeat(32)), 1_000, None),
            None,
            "no panic on non-ASCII"
        );
    }

    #[test]
    fn a_channels_session_is_for_that_channel_and_its_current_stream_key_only() {
        let news = ChannelId::parse("news").unwrap();
        let v = issue_for_channel("key-a", &news, "hash-1", 1_000);
        assert_eq!(claimed_channel(&v), Some(news.clone()));
        let scope = verify("key-a", &v, 1_000, Some("hash-1")).expect("valid");
        assert_eq!(scope, Scope::Channel(news.clone()));
        assert!(scope.allows(&news));
        assert!(!scope.allows(&ChannelId::default()), "not the other channels' studios");
        assert_eq!(verify("key-a", &v, 1_000, Some("hash-2")), None, "a rotated stream key ends it");
        assert_eq!(verify("key-a", &v, 1_000, None), None);
        assert_eq!(verify("key-b", &v, 1_000, Some("hash-1")), None);
        // The channel is signed: the same MAC under another channel's name is refused.
        let forged = v.replace(".news", ".sports");
        assert_eq!(verify("key-a", &forged, 1_000, Some("hash-1")), None);
        // An API-key session claims no channel and allows every one.
        let any = issue("key-a", 1_000);
        assert_eq!(claimed_channel(&any), None);
        assert!(verify("key-a", &any, 1_000, None).unwrap().allows(&news));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(from_cookie_header("a=1; livestage_session=x.y; b=2"), Some("x.y"));
        assert_eq!(from_cookie_header("a=1"), None);
    }
}
