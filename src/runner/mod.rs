//! The experiment loop and everything it keeps on disk for a run.
//!
//! `lifecycle` owns a run from start to end (and dispatches iterations, committing them in
//! order); `iteration` runs one iteration's steps and scripts (`cv` across folds); `ask` asks the agent one step and
//! journals it; `split` checks and writes the train/validation split; `commit` turns a finished
//! iteration into a snapshot; `resume` rebuilds a run from its journal; `stuck` stops a run whose
//! iterations all fail. What scripts may see is
//! decided in [`crate::policy`], never here.

mod ask;
mod budget;
mod commit;
mod cv;
mod disk;
mod ensemble;
mod evaluate;
mod iteration;
mod lifecycle;
mod next;
mod progress;
mod refit;
mod resume;
mod shared;
mod split;
mod stuck;

pub(crate) use ask::ask_agent;
pub use budget::Budget;
pub use lifecycle::{Runner, State, StopReason};
pub use progress::{Progress, Reporter, Silent};
pub use resume::{Recovered, recover};
pub use shared::{FaultPlan, RunInputs};
