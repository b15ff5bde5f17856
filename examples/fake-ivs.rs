//! A fake of the Amazon IVS Real-Time API on a local port, for running the app with
//! `STAGE_BACKEND=ivs` without an AWS account (the end-to-end tests do):
//!
//!   cargo run --features ssr --example fake-ivs -- 127.0.0.1:4566
//!   STAGE_BACKEND=ivs IVS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x cargo leptos serve
//!
//! It keeps everything in memory; `/_fake/connect`, `/_fake/disconnect` and `/_fake/state`
//! play the media side (participants joining, publishing, leaving).

use livestage::testing::fake_ivs::FakeIvs;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:4566".into());
    let fake = FakeIvs::start_on(&addr).await;
    println!("fake IVS listening on {}", fake.url);
    let _ = tokio::signal::ctrl_c().await;
}
