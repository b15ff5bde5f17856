//! The app's cookies, each an HMAC-SHA256 under the cookie key (a secret of its own, never the
//! API key):
//! - the broadcaster's sign-in: the API key (any channel's studio) or a channel's stream key
//!   (that channel's only), exchanged once for an HttpOnly session cookie that carries its
//!   expiry and its channel when it has one. The MAC also covers the studio's session epoch,
//!   which signing out advances (every session of that studio ends), and for a channel's
//!   session the hash of the stream key it was opened with: rotating the key ends it;
//! - the viewer's identity on the pages: an id the server mints, so no page call names a user
//!   of its own choosing.

use crate::domain::ChannelId;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

pub const COOKIE: &str = "livestage_session";
pub const LIFETIME_SECS: i64 = 12 * 3600;

/// The server's API key, as the app's own pages may check it (never sent to the browser).
#[derive(Clone)]
pub struct ApiKey(pub Arc<str>);

/// The key the cookies are signed with.
#[derive(Clone)]
pub struct CookieKey(pub Arc<str>);

pub const VIEWER_COOKIE: &str = "livestage_viewer";
pub const VIEWER_LIFETIME_SECS: i64 = 365 * 86_400;

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
fn mac(key: &str, expires: i64, epoch: u64, channel: Option<(&ChannelId, &str)>) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    match channel {
        None => mac.update(format!("broadcaster:{expires}:{epoch}").as_bytes()),
        Some((channel, key_hash)) => mac.update(format!("broadcaster:{expires}:{epoch}:{channel}:{key_hash}").as_bytes()),
    }
    mac
}

fn viewer_mac(key: &str, viewer: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("viewer:{viewer}").as_bytes());
    mac
}

fn unhex(sig: &str) -> Option<Vec<u8>> {
    if sig.len() != 64 {
        return None;
    }
    (0..32).map(|i| u8::from_str_radix(sig.get(i * 2..i * 2 + 2)?, 16).ok()).collect()
}

/// The viewer cookie's value for the viewer id `viewer`.
pub fn issue_viewer(key: &str, viewer: &str) -> String {
    format!("{viewer}.{}", hex(&viewer_mac(key, viewer).finalize().into_bytes()))
}

/// The viewer id a viewer cookie value stands for, if it was issued with `key`.
pub fn verify_viewer(key: &str, value: &str) -> Option<String> {
    let (viewer, sig) = value.rsplit_once('.')?;
    viewer_mac(key, viewer).verify_slice(&unhex(sig)?).ok().map(|_| viewer.to_string())
}

/// The value of the cookie `name` in a `Cookie` header.
pub fn cookie_in<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|p| p.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

pub fn set_viewer_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{VIEWER_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={VIEWER_LIFETIME_SECS}{secure}")
}

/// The settings key of a studio's session epoch: the API key's sessions, or one channel's.
pub fn epoch_setting(scope: &Scope) -> String {
    match scope {
        Scope::AnyChannel => "session_epoch".to_string(),
        Scope::Channel(c) => format!("session_epoch:{c}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cookie value valid until `now + LIFETIME_SECS` and while the API key's session epoch is
/// `epoch`, for every channel.
pub fn issue(key: &str, now_secs: i64, epoch: u64) -> String {
    let expires = now_secs + LIFETIME_SECS;
    format!("{expires}.{}", hex(&mac(key, expires, epoch, None).finalize().into_bytes()))
}

/// A cookie value valid until `now + LIFETIME_SECS`, for `channel` only, while its stream key
/// hashes to `key_hash` and its session epoch is `epoch`.
pub fn issue_for_channel(key: &str, channel: &ChannelId, key_hash: &str, now_secs: i64, epoch: u64) -> String {
    let expires = now_secs + LIFETIME_SECS;
    format!("{expires}.{}.{channel}", hex(&mac(key, expires, epoch, Some((channel, key_hash))).finalize().into_bytes()))
}

/// The channel a cookie value is for (`None`: every channel), without checking it.
pub fn claimed_channel(value: &str) -> Option<ChannelId> {
    value.splitn(3, '.').nth(2).and_then(|c| ChannelId::parse(c).ok())
}

/// What `value` allows, if it was issued with `key` and has not expired (constant-time
/// comparison). `key_hash` is the current stream-key hash of the channel the value claims, and
/// `epoch` the current session epoch of its scope.
pub fn verify(key: &str, value: &str, now_secs: i64, key_hash: Option<&str>, epoch: u64) -> Option<Scope> {
    let mut parts = value.splitn(3, '.');
    let expires = parts.next()?.parse::<i64>().ok()?;
    let sig = parts.next()?;
    let channel = match parts.next() {
        Some(raw) => Some(ChannelId::parse(raw).ok()?),
        None => None,
    };
    if expires <= now_secs {
        return None;
    }
    let sig = unhex(sig)?;
    match channel {
        None => mac(key, expires, epoch, None).verify_slice(&sig).ok().map(|_| Scope::AnyChannel),
        Some(channel) => {
            let hash = key_hash?;
            mac(key, expires, epoch, Some((&channel, hash))).verify_slice(&sig).ok().map(|_| Scope::Channel(channel))
        }
    }
}

/// The session cookie's value in a `Cookie` header.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    cookie_in(header, COOKIE)
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
        verify(key, v, now, None, 0) == Some(Scope::AnyChannel)
    }

    #[test]
    fn a_cookie_verifies_only_with_its_key_and_before_expiry() {
        let v = issue("key-a", 1_000, 0);
        assert!(ok("key-a", &v, 1_000));
        assert_eq!(verify("key-a", &v, 1_000, None, 1), None, "signing out (a new epoch) ends it");
        assert!(!ok("key-b", &v, 1_000));
        assert!(!ok("key-a", &v, 1_000 + LIFETIME_SECS));
        let (exp, sig) = v.split_once('.').unwrap();
        assert!(!ok("key-a", &format!("{}.{sig}", exp.parse::<i64>().unwrap() + 1), 1_000), "expiry is signed");
        assert!(!ok("key-a", "garbage", 1_000));
        assert!(!ok("key-a", "1.zz", 1_000));
        assert_eq!(
            verify("key-a", &format!("{}.{}", "9".repeat(12), "é".repeat(32)), 1_000, None, 0),
            None,
            "no panic on non-ASCII"
        );
    }

    #[test]
    fn a_channels_session_is_for_that_channel_and_its_current_stream_key_only() {
        let news = ChannelId::parse("news").unwrap();
        let v = issue_for_channel("key-a", &news, "hash-1", 1_000, 3);
        assert_eq!(claimed_channel(&v), Some(news.clone()));
        assert_eq!(verify("key-a", &v, 1_000, Some("hash-1"), 4), None, "signed out");
        let scope = verify("key-a", &v, 1_000, Some("hash-1"), 3).expect("valid");
        assert_eq!(scope, Scope::Channel(news.clone()));
        assert!(scope.allows(&news));
        assert!(!scope.allows(&ChannelId::default()), "not the other channels' studios");
        assert_eq!(verify("key-a", &v, 1_000, Some("hash-2"), 3), None, "a rotated stream key ends it");
        assert_eq!(verify("key-a", &v, 1_000, None, 3), None);
        assert_eq!(verify("key-b", &v, 1_000, Some("hash-1"), 3), None);
        // The channel is signed: the same MAC under another channel's name is refused.
        let forged = v.replace(".news", ".sports");
        assert_eq!(verify("key-a", &forged, 1_000, Some("hash-1"), 3), None);
        // An API-key session claims no channel and allows every one.
        let any = issue("key-a", 1_000, 0);
        assert_eq!(claimed_channel(&any), None);
        assert!(verify("key-a", &any, 1_000, None, 0).unwrap().allows(&news));
    }

    #[test]
    fn a_viewer_cookie_names_the_viewer_it_was_minted_for() {
        let v = issue_viewer("key-a", "viewer-abc");
        assert_eq!(verify_viewer("key-a", &v).as_deref(), Some("viewer-abc"));
        assert_eq!(verify_viewer("key-b", &v), None);
        let forged = v.replace("viewer-abc", "viewer-abd");
        assert_eq!(verify_viewer("key-a", &forged), None, "the id is signed");
        assert_eq!(verify_viewer("key-a", "viewer-abc"), None);
        assert_eq!(verify_viewer("key-a", "x.é"), None);
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(from_cookie_header("a=1; livestage_session=x.y; b=2"), Some("x.y"));
        assert_eq!(from_cookie_header("a=1"), None);
    }
}
