//! Wire types shared by the server and the browser, the contract's error codes, and the
//! server functions the app's own pages call (thin: parse → service → view).

mod error;
pub mod server_fns;
mod types;

pub use error::ErrorCode;
pub use types::*;
