//! Settings: the embedded `Leptos.toml` defaults, then an optional `Leptos.toml` (or the file named
//! by `APP_CONFIG`) in the working directory, then environment variables, which win.

use crate::domain::assignment::Capacity;
use crate::domain::StageArn;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// A setting read from text: `TryFrom<String>` through its `FromStr` (for serde's
/// `try_from`), and, with `str`, its text through `Deref`.
macro_rules! text_setting {
    ($($t:ident),* $(; str $($s:ident),*)?) => {
        $(impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(v: String) -> Result<Self, String> {
                v.parse()
            }
        })*
        $($(impl std::ops::Deref for $s {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        })*)?
    };
}
text_setting!(DatabaseUrl, PublicUrl, Origin, CandidateAddr, ScriptUrl, Cidr; str PublicUrl, Origin, ScriptUrl);

const EMBEDDED_DEFAULTS: &str = include_str!("../../Leptos.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub stage: StageSettings,
    pub tokens: TokenSettings,
    pub presence: PresenceSettings,
    pub rate_limit: RateLimitSettings,
    pub limits: LimitSettings,
    pub media: MediaSettings,
    pub ivs: IvsSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub site_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<DatabaseUrl>,
    pub api_secret_key: Option<Secret>,
    /// Signs the app's cookies (default: generated once and kept in the database, so every
    /// instance of a deployment shares it).
    pub cookie_secret: Option<Secret>,
    pub internal_secret: Option<Secret>,
    /// When set, `/metrics` answers only with it as `Authorization: Bearer`.
    pub metrics_token: Option<Secret>,
    pub public_url: Option<PublicUrl>,
    pub cors_origins: Vec<Origin>,
    pub body_limit_bytes: usize,
    pub log_format: LogFormat,
}

/// A secret setting. Its value is never printed: `Debug` shows `[redacted]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for comparing or sending it (never for logging).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(v: &str) -> Self {
        Self(v.to_string())
    }
}

impl From<String> for Secret {
    fn from(v: String) -> Self {
        Self(v)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        match v.trim() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err("expected text or json".into()),
        }
    }
}

/// `DATABASE_URL`: a SQLite file, created when it does not exist yet, or a PostgreSQL database.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The SQLite file at `path`, created when missing.
    pub fn sqlite_file(path: &std::path::Path) -> Self {
        Self(format!("sqlite://{}?mode=rwc", path.display()))
    }

    /// The URL to connect with.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        const EXPECTED: &str = "expected sqlite://<path of the database file> or postgres://<user>@<host>/<database>";
        let v = v.trim();
        if let Some(rest) = v.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            if path.is_empty() || path.starts_with('?') {
                return Err(format!("no database file named: {EXPECTED}"));
            }
            // Without a mode SQLite refuses a file that does not exist yet: create it.
            let has_mode = path.split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("mode=")));
            if has_mode || path == ":memory:" {
                return Ok(Self(v.to_string()));
            }
            let sep = if path.contains('?') { '&' } else { '?' };
            return Ok(Self(format!("{v}{sep}mode=rwc")));
        }
        for scheme in ["postgres://", "postgresql://"] {
            if let Some(rest) = v.strip_prefix(scheme) {
                if rest.is_empty() || rest.starts_with('/') {
                    return Err(format!("no database host named: {EXPECTED}"));
                }
                return Ok(Self(v.to_string()));
            }
        }
        Err(EXPECTED.into())
    }
}

/// Shows the URL with any password replaced.
impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once("://").and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?))) {
            Some((scheme, (userinfo, host))) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                let hidden = if userinfo.contains(':') { ":[redacted]" } else { "" };
                write!(f, "\"{scheme}://{user}{hidden}@{host}\"")
            }
            None => write!(f, "{:?}", self.0),
        }
    }
}

/// `PUBLIC_URL`: an `http://` or `https://` base URL with a host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PublicUrl(String);

impl FromStr for PublicUrl {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        let v = v.trim();
        let rest = v.strip_prefix("https://").or_else(|| v.strip_prefix("http://"));
        match rest {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace) => {
                Ok(Self(v.to_string()))
            }
            _ => Err("expected an http:// or https:// URL with a host, like https://live.example.com".into()),
        }
    }
}

/// One of `CORS_ORIGINS`: `scheme://host[:port]`, as browsers send it in `Origin`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Origin(String);

impl FromStr for Origin {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        let v = v.trim();
        let valid = v.split_once("://").is_some_and(|(scheme, host)| {
            matches!(scheme, "http" | "https")
                && !host.is_empty()
                && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        });
        if valid {
            Ok(Self(v.to_string()))
        } else {
            Err(format!("{v:?} is not an origin: expected scheme://host[:port] without a path, like https://studio.example"))
        }
    }
}

impl PartialEq<&str> for Origin {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// `MEDIA_CANDIDATE_ADDR`: the address announced to WebRTC peers behind NAT. An IP address,
/// or `IP:port` when the port the NAT forwards differs from the bound one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CandidateAddr(SocketAddr);

impl CandidateAddr {
    /// The announced address; its port is `bound_port` unless one was given.
    pub fn announced(self, bound_port: u16) -> SocketAddr {
        match self.0.port() {
            0 => SocketAddr::new(self.0.ip(), bound_port),
            _ => self.0,
        }
    }
}

impl FromStr for CandidateAddr {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        let v = v.trim();
        if let Ok(ip) = v.parse::<std::net::IpAddr>() {
            return Ok(Self(SocketAddr::new(ip, 0)));
        }
        match v.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => Ok(Self(addr)),
            _ => Err(format!("{v:?} is not an IP address or IP:port, like 203.0.113.7 or 203.0.113.7:40000")),
        }
    }
}

/// Where the pages load a script from: an `http(s)://` URL or a path on this server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ScriptUrl(String);

impl ScriptUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ScriptUrl {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        let v = v.trim();
        let path = v.starts_with('/') && !v.starts_with("//");
        if path || PublicUrl::from_str(v).is_ok() {
            Ok(Self(v.to_string()))
        } else {
            Err(format!("{v:?} is neither an http(s) URL nor a path on this server (starting with /)"))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Local,
    Ivs,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Ivs => "ivs",
        }
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        match v.trim() {
            "local" => Ok(Self::Local),
            "ivs" => Ok(Self::Ivs),
            _ => Err("expected local or ivs".into()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSettings {
    pub backend: BackendKind,
    pub region: String,
    pub master_stage_arn: Option<StageArn>,
    pub max_viewers_per_stage: u32,
    pub scale_up_threshold: u32,
    pub scale_up_utilisation: f64,
    pub scale_down_threshold: u32,
    pub max_stages: u32,
    /// Most stages one channel's audience may take (its master included), so that one channel's
    /// crowd leaves the rest of `max_stages` to the others.
    pub max_stages_per_channel: u32,
    /// How long a join that finds every stage of its channel full waits for the auto-scaler
    /// to add one before it is answered `STAGE_FULL`.
    pub join_wait_ms: u64,
    pub autoscale: bool,
    pub autoscale_interval_secs: u64,
    pub stage_warmup_secs: i64,
}

impl StageSettings {
    pub fn capacity(&self) -> Capacity {
        Capacity {
            max_viewers_per_stage: self.max_viewers_per_stage,
            scale_up_threshold: self.scale_up_threshold,
            scale_down_threshold: self.scale_down_threshold,
            max_stages: self.max_stages_per_channel.min(self.max_stages),
            warmup_secs: self.stage_warmup_secs,
            scale_up_utilisation: self.scale_up_utilisation,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    pub viewer_token_duration: i64,
    pub publisher_token_duration: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceSettings {
    pub heartbeat_timeout_secs: i64,
    pub sweep_interval_secs: u64,
    pub heartbeat_flush_ms: u64,
    pub snapshot_interval_secs: u64,
    pub snapshot_retention_days: i64,
    pub stats_refresh_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub window_ms: u64,
    pub max_requests: u32,
}

/// What one anonymous client may take: the limits that keep the public pages, media and
/// connections available to everyone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Proxies whose `X-Forwarded-For` / `Forwarded` names the client.
    pub trusted_proxies: Vec<Cidr>,
    pub header_read_timeout_ms: u64,
    pub max_connections: usize,
    pub websockets_per_client: usize,
    pub shutdown_deadline_ms: u64,
    /// Server-function calls per client per rate-limit window.
    pub page_requests: u32,
    /// Failed sign-ins per client before each further attempt waits (doubling).
    pub sign_in_failures: u32,
    /// Viewer identities one client holds at once on the pages.
    pub viewers_per_client: usize,
    pub joins_per_minute: u32,
    /// WHIP/WHEP offers per client per rate-limit window.
    pub media_offers: u32,
    /// Media sessions still connecting, per client and in all.
    pub media_connecting_per_client: usize,
    pub media_connecting_max: usize,
    pub media_connect_timeout_ms: u64,
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`), or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        let v = v.trim();
        let bad = || format!("{v:?} is not an IP network: expected an address or address/prefix, like 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match v.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (v, None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSettings {
    pub udp_port: u16,
    pub candidate_addr: Option<CandidateAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenMode {
    /// ES384 JWTs signed here with a key registered through ImportPublicKey.
    SelfSigned,
    /// One CreateParticipantToken call per token.
    Api,
}

impl FromStr for TokenMode {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        match v.trim() {
            "self-signed" => Ok(Self::SelfSigned),
            "api" => Ok(Self::Api),
            _ => Err("expected self-signed or api".into()),
        }
    }
}

/// The Amazon IVS backend (`STAGE_BACKEND=ivs`). AWS credentials and the region's endpoint
/// come from the standard AWS chain (environment, profile, web identity, container, instance).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvsSettings {
    pub token_mode: TokenMode,
    /// IVS API endpoint; unset uses AWS's (or `AWS_ENDPOINT_URL_IVS_REALTIME`).
    pub endpoint_url: Option<PublicUrl>,
    pub poll_interval_ms: u64,
    pub reconnect_window_secs: i32,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub breaker_failures: u32,
    pub breaker_cooldown_secs: u64,
    /// Requests per second allowed to each IVS quota class; calls beyond them wait, and are
    /// refused when the wait would exceed `timeout_ms`.
    pub stage_tps: f64,
    pub token_tps: f64,
    /// Where the pages load the IVS Web Broadcast SDK from (only on this backend).
    pub web_sdk_url: ScriptUrl,
    /// The SDK script's Subresource Integrity hash (`sha384-…`): the pages refuse a script
    /// that does not match it.
    pub web_sdk_integrity: Option<String>,
    /// Static credentials for embedders (never read from files or the environment): the
    /// access key id and the secret key, which never prints.
    #[serde(skip)]
    pub static_credentials: Option<(String, Secret)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    File { path: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("{var}={value:?}: {reason}")]
    Env { var: &'static str, value: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

type Setter = fn(&mut Settings, &str) -> Result<(), String>;

fn parse<T: std::str::FromStr>(v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.trim().parse::<T>().map_err(|e| e.to_string())
}

fn non_empty(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// An optional setting: unset when empty, else parsed.
fn optional<T: FromStr>(v: &str) -> Result<Option<T>, String>
where
    T::Err: fmt::Display,
{
    non_empty(v).map(|v| v.parse::<T>().map_err(|e| e.to_string())).transpose()
}

/// `host:port` with an IP address.
fn socket_addr(v: &str) -> Result<SocketAddr, String> {
    v.trim().parse().map_err(|_| "expected an IP address and port, like 127.0.0.1:3000 or [::]:3000".to_string())
}

/// Every environment variable the app reads: name, meaning, and how it applies.
#[rustfmt::skip] // one variable a line, as a table
pub const ENV_VARS: &[(&str, &str, Setter)] = &[
    ("LEPTOS_SITE_ADDR", "bind address (host:port)", |s, v| { s.server.site_addr = socket_addr(v)?; Ok(()) }),
    ("APP_DATA_DIR", "directory for the SQLite file, keys and generated secrets", |s, v| { s.server.data_dir = v.into(); Ok(()) }),
    ("DATABASE_URL", "sqlite://… or postgres://… (default: sqlite://<data dir>/app.db)", |s, v| { s.server.database_url = optional(v)?; Ok(()) }),
    ("API_SECRET_KEY", "x-api-key value (default: generated on first start, kept in the data dir)", |s, v| { s.server.api_secret_key = non_empty(v).map(Secret); Ok(()) }),
    ("COOKIE_SECRET", "signs the session and viewer cookies (default: generated once, kept in the database)", |s, v| { s.server.cookie_secret = non_empty(v).map(Secret); Ok(()) }),
    ("METRICS_TOKEN", "bearer token /metrics asks for (unset: /metrics is open, for a scraper on a private network)", |s, v| { s.server.metrics_token = non_empty(v).map(Secret); Ok(()) }),
    ("INTERNAL_SECRET", "x-internal-secret for /api/token/mediaserver (unset: refused)", |s, v| { s.server.internal_secret = non_empty(v).map(Secret); Ok(()) }),
    ("PUBLIC_URL", "public base URL of this server for WHIP/WHEP endpoints (default: request host)", |s, v| { s.server.public_url = optional(v)?; Ok(()) }),
    ("CORS_ORIGINS", "comma-separated origins allowed to call the REST API (default: same origin)", |s, v| {
        s.server.cors_origins = v.split(',').filter_map(non_empty).map(|o| o.parse()).collect::<Result<_, _>>()?; Ok(())
    }),
    ("BODY_LIMIT_BYTES", "largest accepted request body", |s, v| { s.server.body_limit_bytes = parse(v)?; Ok(()) }),
    ("LOG_FORMAT", "text or json", |s, v| { s.server.log_format = parse(v)?; Ok(()) }),
    ("STAGE_BACKEND", "local or ivs", |s, v| { s.stage.backend = parse(v)?; Ok(()) }),
    ("AWS_REGION", "AWS region of the IVS stages", |s, v| { s.stage.region = v.trim().to_string(); Ok(()) }),
    ("MASTER_STAGE_ARN", "the publisher's stage (default: created on first start and remembered)", |s, v| {
        s.stage.master_stage_arn = non_empty(v)
            .map(|v| StageArn::parse(v).map_err(|e| format!("{e}: expected arn:aws:ivs:<region>:<account>:stage/<id>")))
            .transpose()?;
        Ok(())
    }),
    ("MAX_VIEWERS_PER_STAGE", "viewers one stage holds", |s, v| { s.stage.max_viewers_per_stage = parse(v)?; Ok(()) }),
    ("SCALE_UP_THRESHOLD", "viewers per stage above which new viewers go elsewhere", |s, v| { s.stage.scale_up_threshold = parse(v)?; Ok(()) }),
    ("SCALE_UP_UTILISATION", "fraction of total threshold capacity that triggers a new stage", |s, v| { s.stage.scale_up_utilisation = parse(v)?; Ok(()) }),
    ("SCALE_DOWN_THRESHOLD", "auto-created stages at or below this many viewers are removed", |s, v| { s.stage.scale_down_threshold = parse(v)?; Ok(()) }),
    ("MAX_STAGES", "most stages this server manages", |s, v| { s.stage.max_stages = parse(v)?; Ok(()) }),
    ("MAX_STAGES_PER_CHANNEL", "most stages one channel's audience takes", |s, v| { s.stage.max_stages_per_channel = parse(v)?; Ok(()) }),
    ("JOIN_WAIT_MS", "milliseconds a join that finds every stage full waits for a new one", |s, v| { s.stage.join_wait_ms = parse(v)?; Ok(()) }),
    ("AUTOSCALE", "true or false: create and remove stages automatically", |s, v| { s.stage.autoscale = parse(v)?; Ok(()) }),
    ("AUTOSCALE_INTERVAL_SECS", "seconds between auto-scaling checks", |s, v| { s.stage.autoscale_interval_secs = parse(v)?; Ok(()) }),
    ("STAGE_WARMUP_SECS", "seconds before an auto-created stage may be removed", |s, v| { s.stage.stage_warmup_secs = parse(v)?; Ok(()) }),
    ("VIEWER_TOKEN_DURATION", "viewer token lifetime in seconds", |s, v| { s.tokens.viewer_token_duration = parse(v)?; Ok(()) }),
    ("PUBLISHER_TOKEN_DURATION", "publisher token lifetime in seconds", |s, v| { s.tokens.publisher_token_duration = parse(v)?; Ok(()) }),
    ("HEARTBEAT_TIMEOUT_SECS", "seconds of silence after which a viewer is dropped", |s, v| { s.presence.heartbeat_timeout_secs = parse(v)?; Ok(()) }),
    ("SWEEP_INTERVAL_SECS", "seconds between presence sweeps", |s, v| { s.presence.sweep_interval_secs = parse(v)?; Ok(()) }),
    ("HEARTBEAT_FLUSH_MS", "milliseconds between batched heartbeat writes", |s, v| { s.presence.heartbeat_flush_ms = parse(v)?; Ok(()) }),
    ("SNAPSHOT_INTERVAL_SECS", "seconds between viewer-count snapshots", |s, v| { s.presence.snapshot_interval_secs = parse(v)?; Ok(()) }),
    ("SNAPSHOT_RETENTION_DAYS", "days snapshots are kept", |s, v| { s.presence.snapshot_retention_days = parse(v)?; Ok(()) }),
    ("RATE_LIMIT_WINDOW_MS", "rate-limit window in milliseconds", |s, v| { s.rate_limit.window_ms = parse(v)?; Ok(()) }),
    ("RATE_LIMIT_MAX_REQUESTS", "requests per client IP per window on /api/*", |s, v| { s.rate_limit.max_requests = parse(v)?; Ok(()) }),
    ("TRUSTED_PROXIES", "comma-separated CIDRs of proxies whose X-Forwarded-For / Forwarded is believed", |s, v| {
        s.limits.trusted_proxies = v.split(',').filter_map(non_empty).map(|c| c.parse()).collect::<Result<_, _>>()?; Ok(())
    }),
    ("HEADER_READ_TIMEOUT_MS", "milliseconds a client has to send a request's headers", |s, v| { s.limits.header_read_timeout_ms = parse(v)?; Ok(()) }),
    ("MAX_CONNECTIONS", "most HTTP connections served at once", |s, v| { s.limits.max_connections = parse(v)?; Ok(()) }),
    ("WEBSOCKETS_PER_CLIENT", "most /ws sockets one client address holds", |s, v| { s.limits.websockets_per_client = parse(v)?; Ok(()) }),
    ("SHUTDOWN_DEADLINE_MS", "milliseconds open connections get to finish on shutdown", |s, v| { s.limits.shutdown_deadline_ms = parse(v)?; Ok(()) }),
    ("PAGE_RATE_LIMIT", "server-function calls from the pages per client per rate-limit window", |s, v| { s.limits.page_requests = parse(v)?; Ok(()) }),
    ("SIGN_IN_FAILURES", "failed studio sign-ins per client before each next attempt waits longer", |s, v| { s.limits.sign_in_failures = parse(v)?; Ok(()) }),
    ("VIEWERS_PER_CLIENT", "viewer identities one client address holds at once on the pages", |s, v| { s.limits.viewers_per_client = parse(v)?; Ok(()) }),
    ("JOINS_PER_MINUTE", "joins per client address per minute on the pages", |s, v| { s.limits.joins_per_minute = parse(v)?; Ok(()) }),
    ("MEDIA_OFFERS", "WHIP/WHEP offers per client per rate-limit window", |s, v| { s.limits.media_offers = parse(v)?; Ok(()) }),
    ("MEDIA_CONNECTING_PER_CLIENT", "media sessions one client address may have still connecting", |s, v| { s.limits.media_connecting_per_client = parse(v)?; Ok(()) }),
    ("MEDIA_CONNECTING_MAX", "media sessions still connecting, in all", |s, v| { s.limits.media_connecting_max = parse(v)?; Ok(()) }),
    ("MEDIA_CONNECT_TIMEOUT_MS", "milliseconds a media session has to connect", |s, v| { s.limits.media_connect_timeout_ms = parse(v)?; Ok(()) }),
    ("MEDIA_UDP_PORT", "UDP port of the embedded media server", |s, v| { s.media.udp_port = parse(v)?; Ok(()) }),
    ("MEDIA_CANDIDATE_ADDR", "address announced to WebRTC peers (behind NAT): IP or IP:port", |s, v| { s.media.candidate_addr = optional(v)?; Ok(()) }),
    ("IVS_TOKEN_MODE", "self-signed (ES384 key imported into IVS) or api (CreateParticipantToken)", |s, v| { s.ivs.token_mode = parse(v)?; Ok(()) }),
    ("IVS_ENDPOINT_URL", "IVS API endpoint (default: AWS's, or AWS_ENDPOINT_URL_IVS_REALTIME)", |s, v| { s.ivs.endpoint_url = optional(v)?; Ok(()) }),
    ("IVS_POLL_INTERVAL_MS", "milliseconds between publisher liveness checks (ListParticipants)", |s, v| { s.ivs.poll_interval_ms = parse(v)?; Ok(()) }),
    ("IVS_RECONNECT_WINDOW_SECS", "seconds a replicated publisher may reconnect without ending replication (0-60)", |s, v| { s.ivs.reconnect_window_secs = parse(v)?; Ok(()) }),
    ("IVS_TIMEOUT_MS", "longest an IVS call may take, retries included", |s, v| { s.ivs.timeout_ms = parse(v)?; Ok(()) }),
    ("IVS_MAX_ATTEMPTS", "attempts per IVS call (throttling and server errors are retried with backoff)", |s, v| { s.ivs.max_attempts = parse(v)?; Ok(()) }),
    ("IVS_BREAKER_FAILURES", "consecutive IVS failures after which calls fail fast", |s, v| { s.ivs.breaker_failures = parse(v)?; Ok(()) }),
    ("IVS_WEB_SDK_URL", "where the pages load the IVS Web Broadcast SDK (amazon-ivs-web-broadcast) from", |s, v| { s.ivs.web_sdk_url = parse(v)?; Ok(()) }),
    ("IVS_WEB_SDK_INTEGRITY", "Subresource Integrity hash of that script (sha384-…); the pages refuse any other", |s, v| { s.ivs.web_sdk_integrity = non_empty(v); Ok(()) }),
    ("IVS_BREAKER_COOLDOWN_SECS", "seconds calls fail fast before IVS is tried again", |s, v| { s.ivs.breaker_cooldown_secs = parse(v)?; Ok(()) }),
];

fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

impl Settings {
    /// The embedded defaults only.
    pub fn defaults() -> Self {
        toml::from_str(EMBEDDED_DEFAULTS).expect("embedded Leptos.toml is valid")
    }

    /// Loads settings the way the server does at start.
    pub fn load() -> Result<Self, ConfigError> {
        let path = std::env::var("APP_CONFIG").unwrap_or_else(|_| "Leptos.toml".into());
        let file = std::fs::read_to_string(&path).ok();
        Self::from_sources(file.as_deref(), |k| std::env::var(k).ok()).map_err(|e| match e {
            ConfigError::File { source, .. } => ConfigError::File { path, source },
            other => other,
        })
    }

    pub fn from_sources(file: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut value: toml::Value = toml::from_str(EMBEDDED_DEFAULTS).expect("embedded Leptos.toml is valid");
        if let Some(text) = file {
            let overlay: toml::Value =
                toml::from_str(text).map_err(|e| ConfigError::File { path: String::new(), source: Box::new(e) })?;
            merge(&mut value, overlay);
        }
        let mut settings: Settings =
            value.try_into().map_err(|e: toml::de::Error| ConfigError::File { path: String::new(), source: Box::new(e) })?;
        for (var, _, apply) in ENV_VARS {
            if let Some(raw) = env(var) {
                apply(&mut settings, &raw).map_err(|reason| ConfigError::Env { var, value: raw.clone(), reason })?;
            }
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.stage;
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if s.max_viewers_per_stage == 0 {
            return bad("max_viewers_per_stage must be at least 1");
        }
        if s.scale_up_threshold == 0 || s.scale_up_threshold > s.max_viewers_per_stage {
            return bad("scale_up_threshold must be between 1 and max_viewers_per_stage");
        }
        if s.join_wait_ms > 60_000 {
            return bad("join_wait_ms must be at most 60000");
        }
        if s.max_stages == 0 || s.max_stages_per_channel == 0 {
            return bad("max_stages and max_stages_per_channel must be at least 1");
        }
        if !(s.scale_up_utilisation > 0.0 && s.scale_up_utilisation <= 1.0) {
            return bad("scale_up_utilisation must be in (0, 1]");
        }
        if !(60..=1_209_600).contains(&self.tokens.viewer_token_duration)
            || !(60..=1_209_600).contains(&self.tokens.publisher_token_duration)
        {
            return bad("token durations must be between 60 s and 14 days");
        }
        if self.presence.heartbeat_timeout_secs < 1 || self.presence.heartbeat_flush_ms == 0 {
            return bad("heartbeat_timeout_secs and heartbeat_flush_ms must be positive");
        }
        if self.rate_limit.window_ms == 0 || self.rate_limit.max_requests == 0 {
            return bad("rate limit window and maximum must be positive");
        }
        let l = &self.limits;
        if l.header_read_timeout_ms == 0 || l.max_connections == 0 || l.websockets_per_client == 0 {
            return bad("header_read_timeout_ms, max_connections and websockets_per_client must be positive");
        }
        if l.page_requests == 0 || l.sign_in_failures == 0 || l.viewers_per_client == 0 || l.joins_per_minute == 0 {
            return bad("page_requests, sign_in_failures, viewers_per_client and joins_per_minute must be positive");
        }
        if l.media_offers == 0 || l.media_connecting_per_client == 0 || l.media_connecting_max == 0 {
            return bad("media_offers, media_connecting_per_client and media_connecting_max must be positive");
        }
        if !(500..=60_000).contains(&l.media_connect_timeout_ms) {
            return bad("media_connect_timeout_ms must be between 500 and 60000");
        }
        let i = &self.ivs;
        if !(0..=60).contains(&i.reconnect_window_secs) {
            return bad("ivs reconnect_window_secs must be between 0 and 60");
        }
        if i.poll_interval_ms < 200 || i.timeout_ms == 0 || i.max_attempts == 0 || i.breaker_failures == 0 {
            return bad("ivs poll_interval_ms (>= 200), timeout_ms, max_attempts and breaker_failures must be positive");
        }
        let sri = |h: &str| {
            ["sha256-", "sha384-", "sha512-"].iter().any(|p| h.starts_with(p))
                && h.split_once('-').is_some_and(|(_, b64)| {
                    !b64.is_empty() && b64.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
                })
        };
        if i.web_sdk_integrity.as_deref().is_some_and(|h| !sri(h)) {
            return bad("ivs web_sdk_integrity must be a Subresource Integrity hash: sha384-<base64>");
        }
        if !(i.stage_tps > 0.0 && i.token_tps > 0.0) {
            return bad("ivs stage_tps and token_tps must be positive");
        }
        Ok(())
    }

    /// The SQLite file in the data dir unless `DATABASE_URL` names another database.
    pub fn database_url(&self) -> String {
        match &self.server.database_url {
            Some(url) => url.as_str().to_string(),
            None => DatabaseUrl::sqlite_file(&self.server.data_dir.join("app.db")).as_str().to_string(),
        }
    }
}

/// The text printed by `--help`.
pub fn help_text() -> String {
    let mut out = String::from(
        "livestage: real-time live streaming on Amazon IVS stages (or the embedded local backend)\n\n\
         USAGE: livestage                     serve\n\
         \x20      livestage rotate-key          register a new IVS token signing key and sign with it\n\
         \x20      livestage delete-key <arn>    unregister an old IVS signing key\n\
         \x20      livestage --help\n\n\
         Settings come from Leptos.toml (embedded defaults, then ./Leptos.toml or $APP_CONFIG),\n\
         overridden by these environment variables:\n\n",
    );
    for (var, meaning, _) in ENV_VARS {
        out.push_str(&format!("  {var:<26} {meaning}\n"));
    }
    out.push_str("\n  AWS credentials and AWS_ENDPOINT_URL_IVS_REALTIME follow the standard AWS chain.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_match_the_contract() {
        let s = Settings::defaults();
        assert_eq!(s.server.site_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(s.stage.backend, BackendKind::Local);
        assert_eq!((s.stage.max_viewers_per_stage, s.stage.scale_up_threshold, s.stage.max_stages), (50, 45, 20));
        assert_eq!((s.tokens.viewer_token_duration, s.tokens.publisher_token_duration), (3600, 14400));
        assert_eq!((s.rate_limit.window_ms, s.rate_limit.max_requests), (60_000, 100));
        assert_eq!(s.server.body_limit_bytes, 65_536);
    }

    #[test]
    fn file_then_env_override_defaults() {
        let file = "[stage]\nmax_stages = 7\nmax_viewers_per_stage = 10\nscale_up_threshold = 8\n";
        let s = Settings::from_sources(Some(file), |k| match k {
            "MAX_STAGES" => Some("9".into()),
            "DATABASE_URL" => Some("postgres://db/x".into()),
            "CORS_ORIGINS" => Some("https://a.example, https://b.example".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.stage.max_stages, 9);
        assert_eq!(s.stage.max_viewers_per_stage, 10);
        assert_eq!(s.database_url(), "postgres://db/x");
        assert_eq!(s.server.cors_origins, vec!["https://a.example", "https://b.example"]);
    }

    #[test]
    fn bad_values_are_reported_by_name() {
        let err = Settings::from_sources(None, |k| (k == "MAX_STAGES").then(|| "many".into())).unwrap_err();
        assert!(err.to_string().starts_with("MAX_STAGES="), "{err}");
        let err = Settings::from_sources(Some("[stage]\nbogus = 1\n"), |_| None).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = Settings::from_sources(None, |k| (k == "SCALE_UP_THRESHOLD").then(|| "80".into())).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)));
    }

    #[test]
    fn a_candidate_is_an_ip_or_an_ip_and_port() {
        let announced = |v: &str, bound: u16| v.parse::<CandidateAddr>().map(|c| c.announced(bound).to_string());
        assert_eq!(announced("203.0.113.7", 5000).as_deref(), Ok("203.0.113.7:5000"));
        assert_eq!(announced("203.0.113.7:40000", 5000).as_deref(), Ok("203.0.113.7:40000"));
        assert_eq!(announced("[2001:db8::1]:40000", 5000).as_deref(), Ok("[2001:db8::1]:40000"));
        assert_eq!(announced("2001:db8::1", 5000).as_deref(), Ok("[2001:db8::1]:5000"));
        for bad in ["live.example.com", "203.0.113.7:0", "203.0.113.7:70000", ""] {
            assert!(bad.parse::<CandidateAddr>().is_err(), "{bad:?} taken");
        }
    }

    #[test]
    fn addresses_and_urls_are_checked_when_read_and_refused_by_name() {
        for (var, bad) in [
            ("MEDIA_CANDIDATE_ADDR", "live.example.com"),
            ("IVS_ENDPOINT_URL", "127.0.0.1:4566"),
            ("IVS_WEB_SDK_URL", "ivs.js"),
            ("IVS_WEB_SDK_URL", "//cdn.example/ivs.js"),
        ] {
            let err = Settings::from_sources(None, only(var, bad)).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{var}=")), "{var}={bad}: {err}");
        }
        let s = Settings::from_sources(None, only("IVS_WEB_SDK_URL", "https://cdn.example/ivs.js")).unwrap();
        assert_eq!(s.ivs.web_sdk_url.as_str(), "https://cdn.example/ivs.js");
    }

    /// An environment of one variable.
    fn only(var: &'static str, value: &'static str) -> impl Fn(&str) -> Option<String> {
        move |k| (k == var).then(|| value.to_string())
    }

    #[test]
    fn the_readme_default_database_url_creates_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/app.db", dir.path().display());
        let s = Settings::from_sources(None, |k| (k == "DATABASE_URL").then(|| url.clone())).unwrap();
        assert_eq!(s.database_url(), format!("{url}?mode=rwc"));
        let s = Settings::from_sources(None, only("DATABASE_URL", "sqlite://data/app.db?cache=shared")).unwrap();
        assert_eq!(s.database_url(), "sqlite://data/app.db?cache=shared&mode=rwc");
        // A mode that is given is kept.
        let s = Settings::from_sources(None, only("DATABASE_URL", "sqlite://data/app.db?mode=ro")).unwrap();
        assert_eq!(s.database_url(), "sqlite://data/app.db?mode=ro");
        let s = Settings::from_sources(None, only("DATABASE_URL", "postgresql://live@db.example/live")).unwrap();
        assert_eq!(s.database_url(), "postgresql://live@db.example/live");
    }

    #[tokio::test]
    async fn a_sqlite_database_url_opens_a_file_that_does_not_exist_yet() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.db");
        let url = format!("sqlite://{}", file.display());
        let s = Settings::from_sources(None, |k| (k == "DATABASE_URL").then(|| url.clone())).unwrap();
        let store = crate::server::store::Store::connect(&s.database_url()).await.expect("the store opens");
        store.close().await;
        assert!(file.exists(), "the database file is created");
    }

    #[test]
    fn typed_values_that_do_not_parse_say_which_variable_and_what_was_expected() {
        for (var, value, expected) in [
            ("DATABASE_URL", "mysql://db/live", "expected sqlite://"),
            ("DATABASE_URL", "sqlite://", "no database file"),
            ("DATABASE_URL", "postgres:///live", "no database host"),
            ("LEPTOS_SITE_ADDR", "localhost", "expected an IP address and port"),
            ("LEPTOS_SITE_ADDR", "127.0.0.1", "expected an IP address and port"),
            ("PUBLIC_URL", "live.example.com", "expected an http:// or https:// URL"),
            ("CORS_ORIGINS", "https://a.example,studio.example", "\"studio.example\" is not an origin"),
            ("CORS_ORIGINS", "https://a.example/app", "without a path"),
            ("LOG_FORMAT", "xml", "expected text or json"),
            ("STAGE_BACKEND", "aws", "expected local or ivs"),
            ("IVS_TOKEN_MODE", "jwt", "expected self-signed or api"),
            ("MASTER_STAGE_ARN", "stage/AbC", "expected arn:aws:ivs:<region>:<account>:stage/<id>"),
        ] {
            let err = Settings::from_sources(None, only(var, value)).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{var}=")), "{var}={value}: {err}");
            assert!(err.contains(expected), "{var}={value}: {err}");
        }
        let err = Settings::from_sources(Some("[server]\nlog_format = \"xml\"\n"), |_| None).unwrap_err().to_string();
        assert!(err.contains("log_format"), "{err}");
        let err = Settings::from_sources(Some("[server]\ncors_origins = [\"nope\"]\n"), |_| None).unwrap_err().to_string();
        assert!(err.contains("not an origin"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::from_sources(None, |k| match k {
            "API_SECRET_KEY" => Some("key-hunter2".into()),
            "INTERNAL_SECRET" => Some("internal-hunter2".into()),
            "DATABASE_URL" => Some("postgres://live:db-hunter2@db.example/live".into()),
            _ => None,
        })
        .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(shown.contains("postgres://live:[redacted]@db.example/live"), "{shown}");
        assert_eq!(s.server.api_secret_key.as_ref().map(Secret::expose), Some("key-hunter2"));
    }

    type Check = fn(&Settings) -> bool;

    /// The variables of the contract's "Configuration names", then the others the README and
    /// `Leptos.toml` name: a value different from the default, and how the setting shows it.
    const HONOURED: &[(&str, &str, Check)] = &[
        ("LEPTOS_SITE_ADDR", "0.0.0.0:8080", |s| s.server.site_addr.to_string() == "0.0.0.0:8080"),
        ("API_SECRET_KEY", "k-123", |s| s.server.api_secret_key.as_ref().map(Secret::expose) == Some("k-123")),
        ("DATABASE_URL", "postgres://db.example/live", |s| s.database_url() == "postgres://db.example/live"),
        ("APP_DATA_DIR", "/srv/live", |s| s.server.data_dir == std::path::Path::new("/srv/live")),
        ("STAGE_BACKEND", "ivs", |s| s.stage.backend == BackendKind::Ivs),
        ("AWS_REGION", "eu-west-1", |s| s.stage.region == "eu-west-1"),
        ("MASTER_STAGE_ARN", "arn:aws:ivs:eu-west-1:123456789012:stage/Abc", |s| {
            s.stage.master_stage_arn.as_ref().map(StageArn::as_str) == Some("arn:aws:ivs:eu-west-1:123456789012:stage/Abc")
        }),
        ("MAX_VIEWERS_PER_STAGE", "60", |s| s.stage.max_viewers_per_stage == 60),
        ("SCALE_UP_THRESHOLD", "40", |s| s.stage.scale_up_threshold == 40),
        ("SCALE_DOWN_THRESHOLD", "3", |s| s.stage.scale_down_threshold == 3),
        ("MAX_STAGES", "7", |s| s.stage.max_stages == 7),
        ("MAX_STAGES_PER_CHANNEL", "3", |s| s.stage.max_stages_per_channel == 3),
        ("JOIN_WAIT_MS", "1000", |s| s.stage.join_wait_ms == 1000),
        ("AUTOSCALE_INTERVAL_SECS", "15", |s| s.stage.autoscale_interval_secs == 15),
        ("STAGE_WARMUP_SECS", "120", |s| s.stage.stage_warmup_secs == 120),
        ("VIEWER_TOKEN_DURATION", "1800", |s| s.tokens.viewer_token_duration == 1800),
        ("PUBLISHER_TOKEN_DURATION", "7200", |s| s.tokens.publisher_token_duration == 7200),
        ("HEARTBEAT_TIMEOUT_SECS", "90", |s| s.presence.heartbeat_timeout_secs == 90),
        ("RATE_LIMIT_WINDOW_MS", "30000", |s| s.rate_limit.window_ms == 30_000),
        ("RATE_LIMIT_MAX_REQUESTS", "50", |s| s.rate_limit.max_requests == 50),
        ("CORS_ORIGINS", "https://a.example", |s| s.server.cors_origins == ["https://a.example"]),
        ("INTERNAL_SECRET", "s3cret", |s| s.server.internal_secret.as_ref().map(Secret::expose) == Some("s3cret")),
        // README and Leptos.toml
        ("PUBLIC_URL", "https://live.example.com", |s| s.server.public_url.as_deref() == Some("https://live.example.com")),
        ("BODY_LIMIT_BYTES", "1024", |s| s.server.body_limit_bytes == 1024),
        ("LOG_FORMAT", "json", |s| s.server.log_format == LogFormat::Json),
        ("SCALE_UP_UTILISATION", "0.5", |s| s.stage.scale_up_utilisation == 0.5),
        ("AUTOSCALE", "false", |s| !s.stage.autoscale),
        ("SWEEP_INTERVAL_SECS", "20", |s| s.presence.sweep_interval_secs == 20),
        ("HEARTBEAT_FLUSH_MS", "100", |s| s.presence.heartbeat_flush_ms == 100),
        ("SNAPSHOT_INTERVAL_SECS", "600", |s| s.presence.snapshot_interval_secs == 600),
        ("SNAPSHOT_RETENTION_DAYS", "30", |s| s.presence.snapshot_retention_days == 30),
        ("MEDIA_UDP_PORT", "4000", |s| s.media.udp_port == 4000),
        ("MEDIA_CANDIDATE_ADDR", "203.0.113.7", |s| {
            s.media.candidate_addr == Some(CandidateAddr(SocketAddr::from(([203, 0, 113, 7], 0))))
        }),
        ("IVS_TOKEN_MODE", "api", |s| s.ivs.token_mode == TokenMode::Api),
        ("IVS_ENDPOINT_URL", "http://127.0.0.1:4566", |s| s.ivs.endpoint_url.as_deref() == Some("http://127.0.0.1:4566")),
        ("IVS_POLL_INTERVAL_MS", "500", |s| s.ivs.poll_interval_ms == 500),
        ("IVS_RECONNECT_WINDOW_SECS", "30", |s| s.ivs.reconnect_window_secs == 30),
        ("IVS_TIMEOUT_MS", "2000", |s| s.ivs.timeout_ms == 2000),
        ("IVS_MAX_ATTEMPTS", "5", |s| s.ivs.max_attempts == 5),
        ("IVS_BREAKER_FAILURES", "4", |s| s.ivs.breaker_failures == 4),
        ("IVS_BREAKER_COOLDOWN_SECS", "20", |s| s.ivs.breaker_cooldown_secs == 20),
        ("IVS_WEB_SDK_URL", "/sdk/ivs.js", |s| s.ivs.web_sdk_url.as_str() == "/sdk/ivs.js"),
        ("IVS_WEB_SDK_INTEGRITY", "sha384-abc+/=", |s| s.ivs.web_sdk_integrity.as_deref() == Some("sha384-abc+/=")),
        ("METRICS_TOKEN", "m-123", |s| s.server.metrics_token.as_ref().map(Secret::expose) == Some("m-123")),
        ("COOKIE_SECRET", "c-123", |s| s.server.cookie_secret.as_ref().map(Secret::expose) == Some("c-123")),
        ("TRUSTED_PROXIES", "10.0.0.0/8, fd00::1", |s| {
            s.limits.trusted_proxies == ["10.0.0.0/8".parse().unwrap(), "fd00::1/128".parse::<Cidr>().unwrap()]
        }),
        ("HEADER_READ_TIMEOUT_MS", "3000", |s| s.limits.header_read_timeout_ms == 3000),
        ("MAX_CONNECTIONS", "100", |s| s.limits.max_connections == 100),
        ("WEBSOCKETS_PER_CLIENT", "4", |s| s.limits.websockets_per_client == 4),
        ("SHUTDOWN_DEADLINE_MS", "2000", |s| s.limits.shutdown_deadline_ms == 2000),
        ("PAGE_RATE_LIMIT", "50", |s| s.limits.page_requests == 50),
        ("SIGN_IN_FAILURES", "3", |s| s.limits.sign_in_failures == 3),
        ("VIEWERS_PER_CLIENT", "5", |s| s.limits.viewers_per_client == 5),
        ("JOINS_PER_MINUTE", "10", |s| s.limits.joins_per_minute == 10),
        ("MEDIA_OFFERS", "20", |s| s.limits.media_offers == 20),
        ("MEDIA_CONNECTING_PER_CLIENT", "3", |s| s.limits.media_connecting_per_client == 3),
        ("MEDIA_CONNECTING_MAX", "50", |s| s.limits.media_connecting_max == 50),
        ("MEDIA_CONNECT_TIMEOUT_MS", "8000", |s| s.limits.media_connect_timeout_ms == 8000),
    ];

    /// Read by the AWS SDK's own configuration chain, not by these settings.
    const AWS_CHAIN: &[&str] = &["AWS_ENDPOINT_URL_IVS_REALTIME"];

    fn env_like_names(text: &str) -> std::collections::BTreeSet<&str> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| {
                w.len() > 3 && w.contains('_') && w.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .collect()
    }

    #[test]
    fn every_configuration_variable_name_is_honoured() {
        let defaults = Settings::defaults();
        for (var, value, check) in HONOURED {
            assert!(!check(&defaults), "{var}: the test value {value:?} is the default");
            let s = Settings::from_sources(None, |k| (k == *var).then(|| value.to_string()))
                .unwrap_or_else(|e| panic!("{var}={value}: {e}"));
            assert!(check(&s), "{var}={value} does not change its setting");
        }
    }

    #[test]
    fn every_variable_named_in_leptos_toml_and_the_readme_is_honoured() {
        let readme = include_str!("../../README.md");
        let config = &readme[readme.find("## Configuration").unwrap()..];
        let config = &config[..3 + config[3..].find("\n## ").unwrap()];
        let table: String = config.lines().filter(|l| l.starts_with("| `")).collect::<Vec<_>>().join("\n");
        let named = env_like_names(EMBEDDED_DEFAULTS).into_iter().chain(env_like_names(&table));
        let known: Vec<&str> = HONOURED.iter().map(|(v, _, _)| *v).collect();
        let mut count = 0;
        for var in named {
            count += 1;
            assert!(known.contains(&var) || AWS_CHAIN.contains(&var), "{var} is documented but not checked here");
        }
        assert!(count >= 30, "found only {count} names");
    }

    #[test]
    fn a_cidr_parses_and_contains_its_addresses() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()), "an IPv4-mapped address is its IPv4 address");
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("203.0.113.1".parse().unwrap()));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(one.prefix, 32);
        for bad in ["10.0.0.0/33", "fd00::/129", "example.com/8", "10.0.0.0/", ""] {
            assert!(bad.parse::<Cidr>().unwrap_err().contains("not an IP network"), "{bad}");
        }
    }

    #[test]
    fn help_lists_every_variable() {
        let help = help_text();
        for var in HONOURED.iter().map(|(v, _, _)| *v).chain(AWS_CHAIN.iter().copied()) {
            assert!(help.lines().any(|l| l.split_whitespace().any(|w| w == var)), "--help does not list {var}");
        }
    }
}
