//! WHIP publish and WHEP play on the embedded media server: token checks, then the SFU.

use super::presence::Presence;
use super::studio::StudioEpochs;
use super::tokens::StudioSession;
use crate::api::ErrorCode;
use crate::domain::ChannelId;
use crate::server::backend::jwt::{JwtError, ParticipantClaims, TokenSigner};
use crate::server::clock::Clock;
use crate::server::error::{AppError, AppResult};
use crate::server::media::{Accepted, MediaError, MediaServer, Participant, Role};
use crate::server::store::{ChannelRecord, Store};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

/// Who publishes with a channel's stream key.
pub const STREAM_KEY_USER: &str = "stream-key";

/// The local backend's media plane: the SFU and the key its tokens are checked against.
pub struct MediaPlane {
    pub server: MediaServer,
    pub signer: Arc<TokenSigner>,
}

/// What a WHIP/WHEP request carries, before it is checked.
pub struct MediaRequest<'a> {
    /// The client's address (an IPv6 client's /64), for the per-client caps.
    pub client: Option<std::net::IpAddr>,
    pub bearer: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

impl Role {
    fn noun(self) -> &'static str {
        match self {
            Role::Publisher => "publish",
            Role::Viewer => "play",
        }
    }
}

impl From<MediaError> for AppError {
    fn from(e: MediaError) -> Self {
        let code = match e {
            MediaError::BadOffer(_) => ErrorCode::ValidationError,
            MediaError::PublisherBusy => ErrorCode::Conflict,
            MediaError::NotFound => ErrorCode::NotFound,
            MediaError::NotOwner => ErrorCode::Forbidden,
            MediaError::TokenEnded => ErrorCode::Unauthorized,
            MediaError::Full | MediaError::ConnectingFull | MediaError::Stopped => ErrorCode::ServiceUnavailable,
            MediaError::ClientConnecting => ErrorCode::TooManyRequests,
        };
        AppError::new(code, e.to_string())
    }
}

/// Admits WHIP and WHEP sessions to the embedded media server (when the backend has one).
pub struct MediaGateway {
    store: Store,
    clock: Arc<dyn Clock>,
    studios: Arc<StudioEpochs>,
    plane: OnceLock<MediaPlane>,
}

impl MediaGateway {
    pub fn new(store: Store, clock: Arc<dyn Clock>, studios: Arc<StudioEpochs>) -> Self {
        Self { store, clock, studios, plane: OnceLock::new() }
    }

    /// Connects the media server once it runs (the local backend only).
    pub fn attach(&self, plane: MediaPlane) {
        let _ = self.plane.set(plane);
    }

    pub fn plane(&self) -> Option<&MediaPlane> {
        self.plane.get()
    }

    fn media_plane(&self) -> AppResult<&MediaPlane> {
        self.plane
            .get()
            .ok_or_else(|| AppError::new(ErrorCode::NotFound, "This server's stage backend has no embedded media server"))
    }

    /// `POST` of a WHIP (publisher) or WHEP (viewer) offer.
    pub async fn offer(&self, role: Role, req: MediaRequest<'_>) -> AppResult<Accepted> {
        let plane = self.media_plane()?;
        let claims = self.check_token(plane, req.bearer, false)?;
        let allowed =
            if role == Role::Publisher { claims.capabilities.allow_publish } else { claims.capabilities.allow_subscribe };
        if !allowed {
            return Err(AppError::new(ErrorCode::Forbidden, format!("This token may not {}", role.noun())));
        }
        // The token's stage decides the channel: a publisher takes its channel's slot (only
        // from the channel's master stage), a viewer gets its channel's media and no other.
        let stage =
            self.store.stages().get(claims.resource.as_str()).await?.ok_or_else(|| AppError::not_found("Stage not found"))?;
        if role == Role::Publisher && !stage.is_master {
            return Err(AppError::new(ErrorCode::Forbidden, "Publishing is only possible on the channel's master stage"));
        }
        if role == Role::Publisher {
            self.check_studio_session(&claims).await?;
        }
        // A viewer's ticket plays while its viewer is counted, or holds the seat its join was
        // given: a token whose viewer left, was swept, or joined again with a newer ticket holds
        // no media session.
        if role == Role::Viewer && claims.attributes.get("role").is_some_and(|r| r == "viewer") {
            let presence = self.store.presence();
            let (stage, user) = (claims.resource.as_str(), claims.user_id.as_str());
            let counted = presence.get(stage, user).await?.is_some_and(|p| p.participant_id == claims.jti);
            if !counted && !presence.holds_seat(stage, user, &claims.jti, self.clock.now()).await? {
                return Err(AppError::new(ErrorCode::Forbidden, "This ticket's viewer is not present; join again"));
            }
        }
        let participant = participant(claims, stage.channel);
        self.open(plane, role, participant, req).await
    }

    /// `POST` of a WHIP offer to a channel's stream-key URL: `channel` is the channel the key
    /// belongs to (the caller looked it up). The session publishes on the channel's master
    /// stage as the user `stream-key`, under a participant id fixed by the key, so the same key
    /// replaces its own earlier session (an encoder reconnecting), ends it with `DELETE`, and
    /// may go live again at once.
    pub async fn publish_with_stream_key(&self, channel: &ChannelRecord, req: MediaRequest<'_>) -> AppResult<Accepted> {
        let plane = self.media_plane()?;
        let master = self
            .store
            .stages()
            .master(&channel.name)
            .await?
            .ok_or_else(|| AppError::new(ErrorCode::ServiceUnavailable, "The channel has no master stage yet"))?;
        self.open(plane, Role::Publisher, stream_key_participant(channel, master.arn.into()), req).await
    }

    /// `DELETE` of a stream-key WHIP session by the key that opened it.
    pub async fn end_stream_key_session(&self, channel: &ChannelRecord, session_id: &str) -> AppResult<()> {
        let plane = self.media_plane()?;
        let participant = stream_key_participant(channel, String::new());
        Ok(plane.server.close(Role::Publisher, session_id, &participant.participant_id).await?)
    }

    async fn open(&self, plane: &MediaPlane, role: Role, participant: Participant, req: MediaRequest<'_>) -> AppResult<Accepted> {
        let content_type = req.content_type.unwrap_or_default();
        if !content_type.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("application/sdp") {
            return Err(AppError::new(ErrorCode::UnsupportedMediaType, "The offer must be sent as application/sdp"));
        }
        let offer = std::str::from_utf8(req.body).map_err(|_| AppError::validation("The SDP offer is not UTF-8"))?;
        if offer.trim().is_empty() {
            return Err(AppError::validation("The SDP offer is empty"));
        }
        Ok(plane.server.open(role, participant, req.client, offer).await?)
    }

    /// `DELETE` of a WHIP/WHEP session resource by the token that opened it (expired or not).
    pub async fn end(&self, role: Role, session_id: &str, bearer: Option<&str>) -> AppResult<()> {
        let plane = self.media_plane()?;
        let claims = self.check_token(plane, bearer, true)?;
        Ok(plane.server.close(role, session_id, &claims.jti).await?)
    }

    /// A token issued to a studio session publishes only while that session is signed in.
    async fn check_studio_session(&self, claims: &ParticipantClaims) -> AppResult<()> {
        let (Some(key), Some(epoch)) =
            (claims.attributes.get(StudioSession::KEY_ATTRIBUTE), claims.attributes.get(StudioSession::EPOCH_ATTRIBUTE))
        else {
            return Ok(());
        };
        if !self.studios.is_current(key, epoch).await? {
            return Err(AppError::new(ErrorCode::Unauthorized, "This studio session was signed out; sign in again"));
        }
        Ok(())
    }

    fn check_token(&self, plane: &MediaPlane, bearer: Option<&str>, allow_expired: bool) -> AppResult<ParticipantClaims> {
        let token = bearer.ok_or_else(|| {
            AppError::new(ErrorCode::Unauthorized, "Send the participant token as Authorization: Bearer <token>")
        })?;
        let now = if allow_expired { i64::MIN } else { self.clock.now_ms().div_euclid(1000) };
        plane.signer.verify(token, now).map_err(|e| {
            let message = match e {
                JwtError::Expired => "The token has expired; request a new one",
                JwtError::MissingClaims => "The token lacks participant claims",
                _ => "The token is not valid for this server",
            };
            AppError::new(ErrorCode::Unauthorized, message)
        })
    }
}

/// Counts each viewer whose media session connects and who holds a seat (a page's join), until
/// the media server stops sending.
pub async fn count_connected_viewers(presence: Arc<Presence>, mut connected: mpsc::UnboundedReceiver<Participant>) {
    while let Some(p) = connected.recv().await {
        // A count lost here is made good by the viewer itself: its heartbeat is answered
        // NOT_FOUND and its player joins again.
        if let Err(e) = presence.media_connected(&p.stage_arn, &p.user_id, &p.participant_id).await {
            tracing::warn!(error = %e, user = %p.user_id, "a connected viewer could not be counted");
        }
    }
}

/// The publisher a stream key stands for: its participant id is fixed by the key (a prefix of
/// the key's hash, which the key's holder alone can produce).
fn stream_key_participant(channel: &ChannelRecord, stage_arn: String) -> Participant {
    let hash = channel.stream_key_hash.as_deref().unwrap_or_default();
    Participant {
        user_id: STREAM_KEY_USER.into(),
        participant_id: format!("sk-{}", &hash[..hash.len().min(20)]),
        stage_arn,
        channel: channel.name.clone(),
        expires_at: None,
    }
}

fn participant(claims: ParticipantClaims, channel: ChannelId) -> Participant {
    Participant {
        user_id: claims.user_id,
        participant_id: claims.jti,
        stage_arn: claims.resource.into(),
        channel,
        expires_at: Some(claims.exp),
    }
}
