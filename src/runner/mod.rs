//! The experiment loop and everything it keeps on disk for a run.

mod budget;
mod driver;
mod manifest;
mod predictions;
mod progress;
mod resume;
mod run_dir;

pub use budget::Budget;
pub use driver::{FaultPlan, RunInputs, Runner, State, StopReason, Summary};
pub use manifest::Manifest;
pub use predictions::{Scored, Truth, score};
pub use progress::{Progress, Reporter, Silent};
pub use resume::{Recovered, recover};
pub use run_dir::RunDir;
