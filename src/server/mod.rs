//! Everything that runs only on the server.

pub mod backend;
pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod media;
pub mod publisher;
pub mod service;
pub mod startup;
pub mod store;
pub mod support;
pub mod telemetry;
pub mod time;
