//! Black-box tests of the public contract against the real server (SQLite by default;
//! PostgreSQL when TEST_DATABASE_URL=postgres://…).

mod helpers;

mod abuse;
mod auth;
mod autoscale;
mod channels;
mod cluster;
mod configuration;
mod cors;
mod errors;
mod first_run;
mod health;
#[cfg(feature = "ivs")]
mod ivs;
mod media;
mod openapi;
mod operations;
mod presence;
mod stages;
mod stats;
mod tokens;
mod validation;
mod viewers;
mod websocket;
