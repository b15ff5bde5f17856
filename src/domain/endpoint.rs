//! Paths of the embedded media server's endpoints: the local backend names them in a stage's
//! endpoints and the HTTP layer serves them.

/// WHIP (publish).
pub const WHIP_PATH: &str = "/whip";
/// WHEP (play).
pub const WHEP_PATH: &str = "/whep";

/// A channel's WHIP path for encoders that publish with its stream key.
pub fn stream_key_whip_path(channel: &super::ChannelId) -> String {
    format!("{WHIP_PATH}/c/{channel}")
}
