//! Token issue: viewers placed on a stage and counted, publishers on the master stage, internal
//! media servers behind the internal secret.

use super::autoscaler::Autoscaler;
use super::hub::StatsHub;
use super::presence::Presence;
use super::publishers::PublisherRegistry;
use super::stages::Stages;
use super::views::{
    MediaServerTokenView, ObsInstructions, ObsSettings, PublishInstructions, PublisherTokenView, ViewerTokenView, WebInstructions,
};
use crate::api::ErrorCode;
use crate::domain::assignment::{choose_stage, Capacity, StageLoad};
use crate::domain::{ChannelId, StageArn, UserId};
use crate::server::backend::{BackendError, Capabilities, IssuedToken, Playback, StageBackend, TokenRequest};
use crate::server::clock::Clock;
use crate::server::config::Settings;
use crate::server::error::AppError;
use crate::server::store::{JoinMode, JoinResult, StageRecord, Store};
use crate::server::support::{absolute, secrets_match};
use crate::server::time::iso;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a viewer could not join. The pages tell "offline" and "full" apart from failures;
/// REST answers each with its status and code (converted once, below).
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("No publisher is live")]
    Offline,
    #[error("Stage not found")]
    StageNotFound,
    #[error("Channel not found")]
    ChannelNotFound,
    /// The asked-for stage is another channel's.
    #[error("stageArn is not a stage of channel {0}")]
    OtherChannel(ChannelId),
    /// Every stage is full (or the chosen one filled up meanwhile); the auto-scaler is woken.
    #[error("{0}")]
    Full(&'static str),
    /// The store, or issuing the token, failed.
    #[error(transparent)]
    Failed(#[from] AppError),
}

impl From<JoinError> for AppError {
    fn from(e: JoinError) -> Self {
        match e {
            JoinError::Offline | JoinError::StageNotFound | JoinError::ChannelNotFound => AppError::not_found(e.to_string()),
            JoinError::OtherChannel(_) => AppError::invalid_fields(e.to_string(), &["stageArn"]),
            JoinError::Full(message) => AppError::new(ErrorCode::StageFull, message),
            JoinError::Failed(e) => e,
        }
    }
}

/// Why a token could not be issued (other than a viewer's join, [`JoinError`]).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("The stage backend is unavailable")]
    BackendUnavailable,
    #[error("Token generation failed")]
    GenerationFailed,
    #[error("Stage not found")]
    StageNotFound,
    #[error("Internal endpoints are disabled on this server")]
    InternalDisabled,
    #[error("Invalid internal secret")]
    BadInternalSecret,
    #[error(transparent)]
    Failed(#[from] AppError),
}

impl From<TokenError> for AppError {
    fn from(e: TokenError) -> Self {
        let code = match e {
            TokenError::Failed(inner) => return inner,
            TokenError::BackendUnavailable => ErrorCode::ServiceUnavailable,
            TokenError::GenerationFailed => ErrorCode::TokenGenerationFailed,
            TokenError::StageNotFound => ErrorCode::NotFound,
            TokenError::InternalDisabled | TokenError::BadInternalSecret => ErrorCode::Forbidden,
        };
        AppError::new(code, e.to_string())
    }
}

type TokenResult<T> = Result<T, TokenError>;

/// Who asks for a viewer's ticket, which decides when the viewer is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinedBy {
    /// A front end's backend with the API key, joining on behalf of its users: counted at once.
    Api,
    /// An anonymous visitor of the app's pages. On a backend whose media this server carries
    /// (WHEP), the viewer holds a seat and is counted only once its media session connects, so
    /// tickets alone do not add to the audience; elsewhere (IVS) it is counted at once.
    Page,
}

/// The studio session a publisher token is issued to: the setting that holds its studio's
/// session epoch, and the epoch it was signed in at. Signing out advances the epoch, and the
/// embedded media server refuses the session's tokens from then on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudioSession {
    pub epoch_key: String,
    pub epoch: u64,
}

impl StudioSession {
    /// The token attributes that carry it.
    pub const KEY_ATTRIBUTE: &str = "studioEpochKey";
    pub const EPOCH_ATTRIBUTE: &str = "studioEpoch";
}

/// What [`Tokens`] works with.
pub struct TokensParts {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub backend: Arc<dyn StageBackend>,
    pub clock: Arc<dyn Clock>,
    pub hub: Arc<StatsHub>,
    pub presence: Arc<Presence>,
    pub stages: Arc<Stages>,
    pub autoscaler: Arc<Autoscaler>,
    pub publishers: Arc<PublisherRegistry>,
}

/// Issues tokens and places viewers: the one way onto a stage.
pub struct Tokens {
    parts: TokensParts,
    seats: Seats,
}

/// Seats given to joins that have not yet been counted on their stage (their token is being
/// issued), by stage ARN: placement counts them, so that joins arriving together spread over
/// the stages instead of all picking the same least-loaded one.
#[derive(Default)]
struct Seats(std::sync::Mutex<std::collections::HashMap<String, u32>>);

/// A seat on a stage, held until the join is counted there (or fails).
struct Seat<'a> {
    seats: &'a Seats,
    stage: String,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let mut held = self.seats.lock();
        if let Some(n) = held.get_mut(&self.stage) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.stage);
            }
        }
    }
}

impl Seats {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u32>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the seats in `held` on each stage to its load.
    fn count_held(held: &std::collections::HashMap<String, u32>, loads: &mut [StageLoad]) {
        for l in loads {
            l.viewers += held.get(l.arn.as_str()).copied().unwrap_or(0);
        }
    }

    /// Adds the seats held on each stage to its load.
    fn add_to(&self, loads: &mut [StageLoad]) {
        Self::count_held(&self.lock(), loads);
    }

    /// Chooses a stage by the rule over the loads with the seats held, and holds a seat there
    /// (under one lock, so two joins never take the last seat twice).
    fn take(&self, mut loads: Vec<StageLoad>, cap: &Capacity) -> Option<(StageArn, Seat<'_>)> {
        let mut held = self.lock();
        Self::count_held(&held, &mut loads);
        let arn = choose_stage(&loads, cap)?.clone();
        *held.entry(arn.to_string()).or_default() += 1;
        Some((arn.clone(), Seat { seats: self, stage: arn.to_string() }))
    }
}

/// Whole seconds from `now_ms` until `at_ms`, rounded up (tokens expire on whole seconds).
fn seconds_until(at_ms: i64, now_ms: i64) -> i64 {
    ((at_ms - now_ms).max(0) + 999) / 1000
}

impl Tokens {
    pub fn new(parts: TokensParts) -> Self {
        Self { parts, seats: Seats::default() }
    }

    #[allow(clippy::too_many_arguments)]
    async fn issue(
        &self,
        stage: &StageRecord,
        user_id: &str,
        capabilities: Capabilities,
        duration_secs: i64,
        role: &str,
        studio: Option<&StudioSession>,
        base_url: &str,
    ) -> TokenResult<IssuedToken> {
        let now_ms = self.parts.clock.now_ms();
        let mut attributes = BTreeMap::from([("role".to_string(), role.to_string())]);
        if let Some(s) = studio {
            attributes.insert(StudioSession::KEY_ATTRIBUTE.into(), s.epoch_key.clone());
            attributes.insert(StudioSession::EPOCH_ATTRIBUTE.into(), s.epoch.to_string());
        }
        let req = TokenRequest {
            stage_arn: stage.arn.as_str(),
            stage_endpoints: &stage.endpoints,
            user_id,
            capabilities,
            duration_secs,
            attributes,
            base_url,
            now_ms,
        };
        self.parts.backend.issue_token(req).await.map_err(|e| {
            tracing::error!(error = %e, stage = %stage.arn, "token issue failed");
            match e {
                BackendError::Unavailable(_) => TokenError::BackendUnavailable,
                _ => TokenError::GenerationFailed,
            }
        })
    }

    /// The stage of `channel` a new viewer goes to, with its seat held there: the one it is
    /// already counted on (a reload, a retry), else the rule's choice; `None` when every stage
    /// is full.
    async fn place(
        &self,
        channel: &ChannelId,
        user_id: &UserId,
        cap: &Capacity,
    ) -> Result<Option<(StageRecord, Option<Seat<'_>>)>, JoinError> {
        let p = &self.parts;
        let loads = p.stages.loads_of(channel).await?;
        let counted = p.store.presence().stages_of(user_id.as_str()).await?;
        let (arn, seat) = match loads.iter().find(|l| counted.iter().any(|c| c == l.arn.as_str())) {
            Some(load) => (load.arn.clone(), None),
            None => match self.seats.take(loads, cap) {
                Some((arn, seat)) => (arn, Some(seat)),
                None => return Ok(None),
            },
        };
        let stage = p.store.stages().get(arn.as_str()).await?.ok_or(JoinError::StageNotFound)?;
        Ok(Some((stage, seat)))
    }

    /// Asks the auto-scaler for room in `channel` and waits for it until `deadline`; whether
    /// there is room to try again.
    async fn wait_for_room(&self, channel: &ChannelId, deadline: tokio::time::Instant) -> Result<bool, JoinError> {
        let room = self.parts.autoscaler.make_room(channel, |loads| self.seats.add_to(loads));
        match tokio::time::timeout_at(deadline, room).await {
            Ok(room) => Ok(room?),
            Err(_) => Ok(false),
        }
    }

    /// Issues a SUBSCRIBE token, places the viewer on one of `channel`'s stages and opens its
    /// watch session.
    #[tracing::instrument(skip(self, base_url), fields(user = %user_id))]
    pub async fn issue_viewer_token(
        &self,
        channel: &ChannelId,
        user_id: &UserId,
        stage_arn: Option<&StageArn>,
        base_url: &str,
        by: JoinedBy,
    ) -> Result<ViewerTokenView, JoinError> {
        let p = &self.parts;
        let whep = match p.backend.capabilities().playback {
            Playback::Whep { path } => Some(path),
            Playback::IvsSdk => None,
        };
        let on_connect = by == JoinedBy::Page && whep.is_some();
        if p.publishers.live(channel).is_none() {
            if !channel.is_default() && p.store.channels().get(channel).await?.is_none() {
                return Err(JoinError::ChannelNotFound);
            }
            return Err(JoinError::Offline);
        }
        let cap = p.settings.stage.capacity();
        // A join that finds every stage full waits (bounded) for the stages it makes room in.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(p.settings.stage.join_wait_ms);
        let (stage, issued, now, counted, current_viewers) = loop {
            let (stage, _seat) = match stage_arn {
                Some(arn) => {
                    let stage = p.store.stages().get(arn.as_str()).await?.ok_or(JoinError::StageNotFound)?;
                    if stage.channel != *channel {
                        return Err(JoinError::OtherChannel(channel.clone()));
                    }
                    (stage, None)
                }
                None => match self.place(channel, user_id, &cap).await? {
                    Some(placed) => placed,
                    None if self.wait_for_room(channel, deadline).await? => continue,
                    None => {
                        p.autoscaler.kick();
                        return Err(JoinError::Full("All stages are full, try again shortly"));
                    }
                },
            };
            let duration = p.settings.tokens.viewer_token_duration;
            let issued =
                self.issue(&stage, user_id.as_str(), Capabilities::SUBSCRIBE, duration, "viewer", None, base_url).await?;
            let now = p.clock.now();
            let mode = match on_connect {
                true => JoinMode::Hold { max: cap.max_viewers_per_stage, until: now + self.seat_hold() },
                false => JoinMode::Count { max: Some(cap.max_viewers_per_stage) },
            };
            let joined = p.store.presence().join(stage.arn.as_str(), user_id.as_str(), &issued.participant_id, now, mode).await?;
            match joined {
                JoinResult::Joined { is_new, current_viewers, .. } => break (stage, issued, now, Some(is_new), current_viewers),
                JoinResult::Held { current_viewers } => break (stage, issued, now, None, current_viewers),
                _ if stage_arn.is_none() && self.wait_for_room(channel, deadline).await? => continue,
                _ => {
                    p.autoscaler.kick();
                    return Err(JoinError::Full("The stage is full, try again shortly"));
                }
            }
        };
        match counted {
            Some(is_new) => {
                p.presence.mark_present(stage.arn.as_str(), user_id.as_str(), &issued.participant_id);
                p.hub.mark_dirty();
                tracing::info!(stage = %stage.arn, is_new, current_viewers, "viewer joined");
            }
            None => tracing::info!(stage = %stage.arn, current_viewers, "viewer holds a seat until its media connects"),
        }
        if current_viewers >= cap.scale_up_threshold {
            p.autoscaler.kick();
        }
        Ok(ViewerTokenView {
            token: issued.token,
            participant_id: issued.participant_id,
            user_id: user_id.to_string(),
            stage_arn: stage.arn.to_string(),
            capabilities: Capabilities::SUBSCRIBE.names(),
            expires_at: iso(issued.expires_at_ms),
            expires_in: seconds_until(issued.expires_at_ms, now.as_millis()),
            current_viewers,
            // A viewer holding a seat is not counted yet: it is new to the stage.
            is_new_viewer: counted.unwrap_or(true),
            whep_endpoint: whep.map(|path| absolute(base_url, path, false)),
            channel: stage.channel,
        })
    }

    /// How long a page viewer's seat is held for its media to connect: the WHEP offer follows
    /// the join at once, and its session has the media connect timeout to connect.
    fn seat_hold(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.parts.settings.limits.media_connect_timeout_ms).saturating_mul(3)
    }

    /// The IVS Web Broadcast SDK the pages use, on backends played with it (IVS).
    pub fn web_sdk_url(&self) -> Option<String> {
        let p = &self.parts;
        // With a Subresource Integrity hash configured, the URL carries it in its fragment
        // (never sent to the server): the pages load the script with that `integrity`.
        (p.backend.capabilities().playback == Playback::IvsSdk).then(|| match &p.settings.ivs.web_sdk_integrity {
            Some(hash) => format!("{}#integrity={hash}", p.settings.ivs.web_sdk_url.as_str()),
            None => p.settings.ivs.web_sdk_url.to_string(),
        })
    }

    /// Issues a PUBLISH token on `channel`'s master stage; with `studio`, for that studio
    /// session only (signing it out revokes the token on the embedded media server).
    #[tracing::instrument(skip(self, studio, base_url), fields(user = %user_id))]
    pub async fn issue_publisher_token(
        &self,
        channel: &ChannelId,
        user_id: &UserId,
        studio: Option<&StudioSession>,
        base_url: &str,
    ) -> TokenResult<PublisherTokenView> {
        let stage = self.parts.stages.master(channel).await?;
        let duration = self.parts.settings.tokens.publisher_token_duration;
        let issued = self.issue(&stage, user_id.as_str(), Capabilities::PUBLISH, duration, "publisher", studio, base_url).await?;
        let now = self.parts.clock.now_ms();
        let whip = stage.endpoints.get("whip").map(|p| absolute(base_url, p, false)).unwrap_or_default();
        Ok(PublisherTokenView {
            instructions: PublishInstructions {
                obs: ObsInstructions {
                    service: "WHIP",
                    server: whip.clone(),
                    bearer_token: issued.token.clone(),
                    settings: ObsSettings::RECOMMENDED,
                },
                web: match self.web_sdk_url() {
                    None => WebInstructions {
                        sdk: "WHIP (RTCPeerConnection)",
                        method: "POST SDP offer to whipEndpoint",
                        sdk_url: None,
                    },
                    Some(url) => {
                        WebInstructions { sdk: "amazon-ivs-web-broadcast", method: "Stage.join(token)", sdk_url: Some(url) }
                    }
                },
            },
            token: issued.token,
            participant_id: issued.participant_id,
            user_id: user_id.to_string(),
            stage_arn: stage.arn.into(),
            capabilities: Capabilities::PUBLISH.names(),
            expires_at: iso(issued.expires_at_ms),
            expires_in: seconds_until(issued.expires_at_ms, now),
            whip_endpoint: whip,
            channel: stage.channel,
        })
    }

    /// Issues a PUBLISH+SUBSCRIBE token for an internal media server. Refused unless an
    /// internal secret is configured and matches.
    pub async fn issue_mediaserver_token(
        &self,
        secret: Option<&str>,
        server_id: &UserId,
        stage_arn: &StageArn,
        base_url: &str,
    ) -> TokenResult<MediaServerTokenView> {
        self.check_internal_secret(secret)?;
        let stage = self.parts.store.stages().get(stage_arn.as_str()).await?.ok_or(TokenError::StageNotFound)?;
        let duration = self.parts.settings.tokens.publisher_token_duration;
        let user = format!("media-server-{server_id}");
        let issued = self.issue(&stage, &user, Capabilities::BOTH, duration, "media-server", None, base_url).await?;
        let now = self.parts.clock.now_ms();
        Ok(MediaServerTokenView {
            token: issued.token,
            participant_id: issued.participant_id,
            stage_arn: stage.arn.into(),
            capabilities: Capabilities::BOTH.names(),
            expires_at: iso(issued.expires_at_ms),
            expires_in: seconds_until(issued.expires_at_ms, now),
        })
    }

    pub fn check_internal_secret(&self, given: Option<&str>) -> TokenResult<()> {
        match (&self.parts.settings.server.internal_secret, given) {
            (Some(expected), Some(given)) if secrets_match(given, expected.expose()) => Ok(()),
            (None, _) => Err(TokenError::InternalDisabled),
            _ => Err(TokenError::BadInternalSecret),
        }
    }
}
