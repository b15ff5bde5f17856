//! The broadcaster's sign-in: the API key, exchanged once for an HttpOnly session cookie that
//! carries its expiry and an HMAC-SHA256 of it under the API key.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

pub const COOKIE: &str = "livestage_session";
pub const LIFETIME_SECS: i64 = 12 * 3600;

/// The server's API key, as the app's own pages may check it (never sent to the browser).
#[derive(Clone)]
pub struct ApiKey(pub Arc<str>);

fn mac(key: &str, expires: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("broadcaster:{expires}").as_bytes());
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cookie value valid until `now + LIFETIME_SECS`.
pub fn issue(key: &str, now_secs: i64) -> String {
    let expires = now_secs + LIFETIME_SECS;
    format!("{expires}.{}", hex(&mac(key, expires).finalize().into_bytes()))
}

/// Whether `value` was issued with `key` and has not expired (constant-time comparison).
pub fn verify(key: &str, value: &str, now_secs: i64) -> bool {
    let Some((expires, sig)) = value.split_once('.') else { return false };
    let Ok(expires) = expires.parse::<i64>() else { return false };
    if expires <= now_secs || sig.len() != 64 {
        return false;
    }
    let Some(sig) = (0..32).map(|i| u8::from_str_radix(&sig[i * 2..i * 2 + 2], 16).ok()).collect::<Option<Vec<u8>>>() else {
        return false;
    };
    mac(key, expires).verify_slice(&sig).is_ok()
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

    #[test]
    fn a_cookie_verifies_only_with_its_key_and_before_expiry() {
        let v = issue("key-a", 1_000);
        assert!(verify("key-a", &v, 1_000));
        assert!(!verify("key-b", &v, 1_000));
        assert!(!verify("key-a", &v, 1_000 + LIFETIME_SECS));
        let (exp, sig) = v.split_once('.').unwrap();
        assert!(!verify("key-a", &format!("{}.{sig}", exp.parse::<i64>().unwrap() + 1), 1_000), "expiry is signed");
        assert!(!verify("key-a", "garbage", 1_000));
        assert!(!verify("key-a", "1.zz", 1_000));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(from_cookie_header("a=1; livestage_session=x.y; b=2"), Some("x.y"));
        assert_eq!(from_cookie_header("a=1"), None);
    }
}
