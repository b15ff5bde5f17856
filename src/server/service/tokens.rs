use super::views::{
    MediaServerTokenView, ObsInstructions, ObsSettings, PublishInstructions, PublisherTokenView, ViewerTokenView, WebInstructions,
};
use super::Service;
use crate::api::ErrorCode;
use crate::domain::assignment::choose_stage;
use crate::domain::{StageArn, UserId};
use crate::server::backend::{Capabilities, IssuedToken, Playback, TokenRequest};
use crate::server::error::{AppError, AppResult};
use crate::server::store::{JoinResult, StageRecord};
use crate::server::support::{absolute, secrets_match};
use crate::server::time::iso;
use std::collections::BTreeMap;

/// Whole seconds from `now_ms` until `at_ms`, rounded up (tokens expire on whole seconds).
fn seconds_until(at_ms: i64, now_ms: i64) -> i64 {
    ((at_ms - now_ms).max(0) + 999) / 1000
}

impl Service {
    async fn issue(
        &self,
        stage: &StageRecord,
        user_id: &str,
        capabilities: Capabilities,
        duration_secs: i64,
        role: &str,
        base_url: &str,
    ) -> AppResult<IssuedToken> {
        let now_ms = self.now_ms();
        let req = TokenRequest {
            stage_arn: &stage.arn,
            stage_endpoints: &stage.endpoints,
            user_id,
            capabilities,
            duration_secs,
            attributes: BTreeMap::from([("role".to_string(), role.to_string())]),
            base_url,
            now_ms,
        };
        self.backend.issue_token(req).await.map_err(|e| {
            tracing::error!(error = %e, stage = %stage.arn, "token issue failed");
            match e {
                crate::server::backend::BackendError::Unavailable(_) => {
                    AppError::new(ErrorCode::ServiceUnavailable, "The stage backend is unavailable")
                }
                _ => AppError::new(ErrorCode::TokenGenerationFailed, "Token generation failed"),
            }
        })
    }

    /// Issues a SUBSCRIBE token, places the viewer on a stage and opens its watch session.
    #[tracing::instrument(skip(self, base_url), fields(user = %user_id))]
    pub async fn issue_viewer_token(
        &self,
        user_id: &UserId,
        stage_arn: Option<&StageArn>,
        base_url: &str,
    ) -> AppResult<ViewerTokenView> {
        if !self.is_publisher_live() {
            return Err(AppError::not_found("No publisher is live"));
        }
        let cap = self.settings.stage.capacity();
        let stage = match stage_arn {
            Some(arn) => self.store.get_stage(arn.as_str()).await?.ok_or_else(|| AppError::not_found("Stage not found"))?,
            None => {
                let loads = self.stages.loads().await?;
                // A viewer already counted somewhere (a reload, a retry) keeps its stage.
                let existing = match self.store.stage_of_user(user_id.as_str()).await? {
                    Some(arn) => self.store.get_stage(&arn).await?,
                    None => None,
                };
                match existing {
                    Some(stage) => stage,
                    None => {
                        let Some(arn) = choose_stage(&loads, &cap) else {
                            self.autoscaler.kick();
                            return Err(AppError::new(ErrorCode::StageFull, "All stages are full, try again shortly"));
                        };
                        self.store.get_stage(arn.as_str()).await?.ok_or_else(|| AppError::not_found("Stage not found"))?
                    }
                }
            }
        };
        let duration = self.settings.tokens.viewer_token_duration;
        let issued = self.issue(&stage, user_id.as_str(), Capabilities::SUBSCRIBE, duration, "viewer", base_url).await?;
        let now = self.now_ms();
        let joined =
            self.store.join(&stage.arn, user_id.as_str(), &issued.participant_id, now, Some(cap.max_viewers_per_stage)).await?;
        let JoinResult::Joined { is_new, current_viewers, .. } = joined else {
            self.autoscaler.kick();
            return Err(AppError::new(ErrorCode::StageFull, "The stage is full, try again shortly"));
        };
        self.presence.mark_present(&stage.arn, user_id.as_str());
        self.hub.mark_dirty();
        if current_viewers >= cap.scale_up_threshold {
            self.autoscaler.kick();
        }
        tracing::info!(stage = %stage.arn, is_new, current_viewers, "viewer joined");
        Ok(ViewerTokenView {
            token: issued.token,
            participant_id: issued.participant_id,
            user_id: user_id.to_string(),
            stage_arn: stage.arn.clone(),
            capabilities: Capabilities::SUBSCRIBE.names(),
            expires_at: iso(issued.expires_at_ms),
            expires_in: seconds_until(issued.expires_at_ms, now),
            current_viewers,
            is_new_viewer: is_new,
            whep_endpoint: match self.backend.capabilities().playback {
                Playback::Whep { path } => Some(absolute(base_url, path, false)),
                Playback::IvsSdk => None,
            },
        })
    }

    /// The IVS Web Broadcast SDK the pages use, on backends played with it (IVS).
    pub fn web_sdk_url(&self) -> Option<String> {
        (self.backend.capabilities().playback == Playback::IvsSdk).then(|| self.settings.ivs.web_sdk_url.clone())
    }

    /// Issues a PUBLISH token on the master stage.
    #[tracing::instrument(skip(self, base_url), fields(user = %user_id))]
    pub async fn issue_publisher_token(&self, user_id: &UserId, base_url: &str) -> AppResult<PublisherTokenView> {
        let stage = self.stages.master().await?;
        let duration = self.settings.tokens.publisher_token_duration;
        let issued = self.issue(&stage, user_id.as_str(), Capabilities::PUBLISH, duration, "publisher", base_url).await?;
        let now = self.now_ms();
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
            stage_arn: stage.arn,
            capabilities: Capabilities::PUBLISH.names(),
            expires_at: iso(issued.expires_at_ms),
            expires_in: seconds_until(issued.expires_at_ms, now),
            whip_endpoint: whip,
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
    ) -> AppResult<MediaServerTokenView> {
        self.check_internal_secret(secret)?;
        let stage = self.store.get_stage(stage_arn.as_str()).await?.ok_or_else(|| AppError::not_found("Stage not found"))?;
        let duration = self.settings.tokens.publisher_token_duration;
        let user = format!("media-server-{server_id}");
        let issued = self.issue(&stage, &user, Capabilities::BOTH, duration, "media-server", base_url).await?;
        let now = self.now_ms();
        Ok(MediaServerTokenView {
            token: issued.token,
            participant_id: issued.participant_id,
            stage_arn: stage.arn,
            capabilities: Capabilities::BOTH.names(),
            expires_at: iso(issued.expires_at_ms),
            expires_in: seconds_until(issued.expires_at_ms, now),
        })
    }

    pub fn check_internal_secret(&self, given: Option<&str>) -> AppResult<()> {
        match (&self.settings.server.internal_secret, given) {
            (Some(expected), Some(given)) if secrets_match(given, expected.expose()) => Ok(()),
            (None, _) => Err(AppError::new(ErrorCode::Forbidden, "Internal endpoints are disabled on this server")),
            _ => Err(AppError::new(ErrorCode::Forbidden, "Invalid internal secret")),
        }
    }
}
