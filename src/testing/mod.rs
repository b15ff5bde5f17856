//! Test support shared by the unit tests, `tests/`, `benches/` and `examples/`: a WHIP/WHEP
//! client peer, synthetic media, the server binary as a child process, the benches' smoke run
//! and the fake IVS API. Built only with the `testing` feature (the crate's dev-dependency on
//! itself turns it on for every test, bench and example) and for the crate's own unit tests;
//! never part of the served binary. Nothing else in `src/` may name it.

pub mod bench;
pub mod fake_ivs;
pub mod media;
pub mod peer;
pub mod process;
