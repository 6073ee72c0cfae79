//! The command-line interface: parse, resolve, dispatch, print.
//!
//! This is the only layer that prints to the terminal, reads the process environment, or turns
//! errors into exit codes.

mod agent_cmd;
mod args;
mod bench_cmd;
mod dispatch;
mod printer;
mod progress;
mod query_cmd;
mod run_cmd;
mod runs_cmd;
mod sandbox_cmd;
mod serve_cmd;
mod setup_cmd;
mod snapshot_cmd;
mod sweep_cmd;

pub use args::{Cli, parse_bytes, parse_duration};
pub use dispatch::main;
