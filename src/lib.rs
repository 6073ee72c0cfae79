//! loop-runner: unattended, budgeted ML experiment loops whose agent-written code runs in a
//! sandbox.
//!
//! The binary (`src/main.rs`) parses arguments and prints; everything else lives here. Data flows
//! one way: `cli` resolves configuration and calls into the runner, which drives agents, the
//! sandbox, data handling and snapshots. No module below `cli` prints to the terminal or reads the
//! process environment on its own: facts about the environment are resolved once and passed in.

pub mod agent;
pub mod audit;
pub mod bench;
pub mod builtin;
pub mod choice;
pub mod cli;
pub mod config;
pub mod data;
pub mod env;
pub mod error;
pub mod exit_code;
pub mod folds;
pub mod fsx;
pub mod guest_fs;
pub mod journal;
pub mod metric;
pub mod mlflow;
pub mod policy;
pub mod predict;
pub mod report;
pub mod requirements;
pub mod run_dir;
pub mod runner;
pub mod runtime;
pub mod sandbox;
pub mod scoring;
pub mod search;
pub mod serve;
pub mod snapshot;
pub mod steps;
pub mod sweep;
pub mod tables;
pub mod task;
pub mod units;
