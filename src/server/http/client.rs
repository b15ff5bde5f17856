//! Who is calling: the client's address (believing `X-Forwarded-For` / `Forwarded` only from a
//! trusted proxy) and the key its limits are counted under (an IPv4 address, an IPv6 /64:
//! one household or office, however many addresses it is given).

use crate::server::config::Cidr;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// The client a limit counts: an IPv4 address or the /64 of an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => Self(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX)))),
            },
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.0
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
            v4 => write!(f, "{v4}"),
        }
    }
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[Cidr]>);

impl TrustedProxies {
    pub fn new(cidrs: &[Cidr]) -> Self {
        Self(cidrs.into())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy; then the nearest
    /// address in the forwarding chain that is not itself a trusted proxy (a client cannot
    /// choose its key by sending the header itself: only what trusted hops appended counts).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut chain = forwarded_chain(headers);
        while let Some(hop) = chain.pop() {
            if !self.trusts(hop) {
                return hop;
            }
        }
        peer
    }
}

/// The addresses a request was forwarded for, nearest last: `Forwarded: for=` when present,
/// else `X-Forwarded-For`. An entry that does not parse ends the chain there (nothing before
/// it can be believed).
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let values = |name| headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
    let forwarded: Vec<&str> = values("forwarded")
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            })
        })
        .collect();
    let raw: Vec<&str> = if forwarded.is_empty() { values("x-forwarded-for").map(str::trim).collect() } else { forwarded };
    let mut chain = Vec::with_capacity(raw.len());
    for entry in raw.iter().rev() {
        match parse_node(entry) {
            Some(ip) => chain.push(ip),
            None => break,
        }
    }
    chain.reverse();
    chain
}

/// `203.0.113.7`, `"[2001:db8::1]:4711"`, `198.51.100.1:80`.
fn parse_node(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    v.strip_prefix('[').and_then(|r| r.split_once(']')).and_then(|(ip, _)| ip.parse().ok())
}

/// The calling client, as an extractor: the key its limits are counted under.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub key: ClientKey,
}

impl Client {
    /// From a request's parts: the peer (`ConnectInfo`) and the trusted proxies (an extension
    /// the router sets).
    pub fn from_parts(parts: &Parts) -> Self {
        Self::resolve(&parts.extensions, &parts.headers)
    }

    pub fn of_request<B>(req: &axum::http::Request<B>) -> Self {
        Self::resolve(req.extensions(), req.headers())
    }

    fn resolve(extensions: &axum::http::Extensions, headers: &HeaderMap) -> Self {
        let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let ip = match extensions.get::<TrustedProxies>() {
            Some(t) => t.client_ip(peer, headers),
            None => peer,
        };
        Self { key: ClientKey::of(ip) }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self::from_parts(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(&list.iter().map(|c| c.parse().unwrap()).collect::<Vec<Cidr>>())
    }

    #[test]
    fn forwarding_headers_count_only_from_a_trusted_proxy() {
        let lb: IpAddr = "10.0.0.5".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "198.51.100.9, 203.0.113.7")]);
        assert_eq!(proxies(&[]).client_ip(lb, &h), lb, "no trusted proxy: the peer");
        assert_eq!(proxies(&["10.0.0.0/8"]).client_ip(lb, &h), "203.0.113.7".parse::<IpAddr>().unwrap());
        // a client that claims an address of its own: the nearest untrusted hop is believed
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(proxies(&["10.0.0.0/8"]).client_ip(stranger, &h), stranger);
        // two trusted hops
        let h = headers(&[("x-forwarded-for", "203.0.113.7, 10.1.1.1")]);
        assert_eq!(proxies(&["10.0.0.0/8"]).client_ip(lb, &h), "203.0.113.7".parse::<IpAddr>().unwrap());
        // Forwarded wins over X-Forwarded-For
        let h = headers(&[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https"), ("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(proxies(&["10.0.0.0/8"]).client_ip(lb, &h), "2001:db8::1".parse::<IpAddr>().unwrap());
        // garbage ends the chain: the proxy itself is what is known
        let h = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(proxies(&["10.0.0.0/8"]).client_ip(lb, &h), lb);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a = ClientKey::of("2001:db8:1:2::1".parse().unwrap());
        let b = ClientKey::of("2001:db8:1:2:ffff:1:2:3".parse().unwrap());
        let c = ClientKey::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(ClientKey::of("::ffff:192.0.2.1".parse().unwrap()), ClientKey::of("192.0.2.1".parse().unwrap()));
    }
}
