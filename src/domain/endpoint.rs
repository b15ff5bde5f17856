//! Paths of the embedded media server's endpoints: the local backend names them in a stage's
//! endpoints and the HTTP layer serves them.

/// WHIP (publish).
pub const WHIP_PATH: &str = "/whip";
/// WHEP (play).
pub const WHEP_PATH: &str = "/whep";
