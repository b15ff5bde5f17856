//! Wire types shared by the server and the browser, and the contract's error codes. A leaf:
//! it names nothing of the server (the server functions are in `crate::rpc`).

mod error;
pub mod request;
mod types;
pub mod ws;

pub use error::{ErrorCode, RpcError};
pub use types::*;
