//! The live publisher, as the media plane reports it and every instance shares it.

/// The publisher currently sending media.
#[derive(Debug, Clone, PartialEq)]
pub struct LivePublisher {
    pub user_id: String,
    pub participant_id: String,
    pub stage_arn: String,
    /// When it went live.
    pub since: super::UnixMs,
}

/// The publisher live on each channel that has one.
pub type LivePublishers = std::collections::BTreeMap<super::ChannelId, LivePublisher>;
