//! A run's directory: where everything lives ([`RunDir`]) and `run.json` ([`Manifest`]), the
//! fixed inputs every later command (resume, audit, replay, report) reads back.

mod layout;
mod lock;
mod manifest;

pub use layout::RunDir;
pub use lock::RunLock;
pub use manifest::{FORMAT as MANIFEST_FORMAT, Manifest};
