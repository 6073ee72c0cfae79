//! The experiment loop and everything it keeps on disk for a run.

mod budget;
mod driver;
mod predictions;
mod progress;
mod run_dir;

pub use budget::Budget;
pub use driver::{RunInputs, Runner, State, StopReason, Summary};
pub use predictions::{Scored, Truth, score};
pub use progress::{Progress, Reporter, Silent};
pub use run_dir::RunDir;
