//! livestage: real-time live streaming on Amazon IVS Real-Time stages, with an embedded
//! local backend. One crate built twice: `ssr` (the axum server) and `hydrate` (the WASM UI).

pub mod api;
pub mod app;
pub mod domain;
pub mod rpc;

#[cfg(feature = "ssr")]
pub mod server;

#[cfg(all(feature = "ssr", any(test, feature = "testing")))]
pub mod testing;

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
