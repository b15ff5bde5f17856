//! WHIP publish and WHEP play on the embedded media server: token checks, then the SFU.

use crate::api::ErrorCode;
use crate::domain::ChannelId;
use crate::server::backend::jwt::{JwtError, ParticipantClaims, TokenSigner};
use crate::server::clock::Clock;
use crate::server::error::{AppError, AppResult};
use crate::server::media::{Accepted, MediaError, MediaServer, Participant, Role};
use crate::server::store::Store;
use std::sync::{Arc, OnceLock};

/// The local backend's media plane: the SFU and the key its tokens are checked against.
pub struct MediaPlane {
    pub server: MediaServer,
    pub signer: Arc<TokenSigner>,
}

/// What a WHIP/WHEP request carries, before it is checked.
pub struct MediaRequest<'a> {
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
            MediaError::Full | MediaError::Stopped => ErrorCode::ServiceUnavailable,
        };
        AppError::new(code, e.to_string())
    }
}

/// Admits WHIP and WHEP sessions to the embedded media server (when the backend has one).
pub struct MediaGateway {
    store: Store,
    clock: Arc<dyn Clock>,
    plane: OnceLock<MediaPlane>,
}

impl MediaGateway {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock, plane: OnceLock::new() }
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
        let participant = participant(claims);
        match role {
            Role::Publisher => {
                let master = self
                    .store
                    .stages()
                    .master(&ChannelId::default())
                    .await?
                    .ok_or_else(|| AppError::not_found("Stage not found"))?;
                if master.arn != participant.stage_arn {
                    return Err(AppError::new(ErrorCode::Forbidden, "Publishing is only possible on the master stage"));
                }
            }
            Role::Viewer => {
                if self.store.stages().get(&participant.stage_arn).await?.is_none() {
                    return Err(AppError::not_found("Stage not found"));
                }
            }
        }
        let content_type = req.content_type.unwrap_or_default();
        if !content_type.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("application/sdp") {
            return Err(AppError::new(ErrorCode::UnsupportedMediaType, "The offer must be sent as application/sdp"));
        }
        let offer = std::str::from_utf8(req.body).map_err(|_| AppError::validation("The SDP offer is not UTF-8"))?;
        if offer.trim().is_empty() {
            return Err(AppError::validation("The SDP offer is empty"));
        }
        Ok(plane.server.open(role, participant, offer).await?)
    }

    /// `DELETE` of a WHIP/WHEP session resource by the token that opened it (expired or not).
    pub async fn end(&self, role: Role, session_id: &str, bearer: Option<&str>) -> AppResult<()> {
        let plane = self.media_plane()?;
        let claims = self.check_token(plane, bearer, true)?;
        let participant = participant(claims);
        Ok(plane.server.close(role, session_id, &participant.participant_id).await?)
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

fn participant(claims: ParticipantClaims) -> Participant {
    Participant { user_id: claims.user_id, participant_id: claims.jti, stage_arn: claims.resource.into(), expires_at: claims.exp }
}
