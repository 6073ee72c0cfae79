//! Task data: loading (CSV, Parquet) with polars, checking, profiling, splitting, fingerprinting.
//!
//! Everything here is trusted code run by the runner; agent code only ever sees the files this
//! module writes into the run's `data/` directory.

mod dataset;
mod fingerprint;
mod load;
mod profile;
mod split;

pub use dataset::{Dataset, TargetInfo, take, target_labels};
pub use fingerprint::{FileStamp, Fingerprint, fingerprint};
pub use load::{read_csv_bytes, read_table, write_csv};
pub use profile::{
    ColumnKind, ColumnProfile, Profile, TargetProfile, canonical_label, labels, numeric_values,
};
pub use split::{Split, folds, split};
