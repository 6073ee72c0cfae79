//! k-fold cross-validation on disk. The pool of training rows is dealt into folds; fold `f`
//! trains on every other fold (`fold-F/data/train.csv`) and predicts its own rows' features
//! (`fold-F/input/features.csv`). Out-of-fold predictions are read in fold order, so the labels
//! they are scored against are the pool's rows in that order. The runner and `audit` make the
//! folds with this one function, so an audit scores exactly the rows the run did.

use std::ops::Range;
use std::path::{Path, PathBuf};

use polars::prelude::DataFrame;

use crate::data::{TargetInfo, take, target_labels, write_csv};
use crate::metric::Metric;

/// One fold's directories: what its training script sees, and what its inference script sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldDirs {
    pub data: PathBuf,
    pub input: PathBuf,
}

/// Folds written to disk.
#[derive(Debug, Clone)]
pub struct Folds {
    pub dirs: Vec<FoldDirs>,
    /// Each fold's rows within the out-of-fold order.
    pub ranges: Vec<Range<usize>>,
    /// The pool's rows in out-of-fold order (fold 1's rows, then fold 2's, ...), with labels.
    pub out_of_fold: DataFrame,
}

/// Fold `f`'s directories (1-based) under `root`.
pub fn fold_dirs(root: &Path, f: usize) -> FoldDirs {
    let base = root.join(format!("fold-{f}"));
    FoldDirs { data: base.join("data"), input: base.join("input") }
}

/// The rows (indices into the pool) each of the `k` folds holds out: the folds [`write`] makes.
pub fn held_out(pool: &DataFrame, target: &TargetInfo, k: u32, seed: u64) -> anyhow::Result<Vec<Vec<u32>>> {
    deal(pool, target, k, seed)
}

/// Deals the pool into `k` folds (stratified by class for classification) with `seed`.
fn deal(pool: &DataFrame, target: &TargetInfo, k: u32, seed: u64) -> anyhow::Result<Vec<Vec<u32>>> {
    let labels =
        if target.kind.is_classification() { Some(target_labels(pool, &target.column)?) } else { None };
    let folds = crate::data::folds(pool.height(), labels.as_deref(), k as usize, seed);
    let problems = problems(&folds, target, labels.as_deref());
    anyhow::ensure!(
        problems.is_empty(),
        "{k}-fold cross-validation is unusable here: {}",
        problems.join("; ")
    );
    Ok(folds)
}

/// What makes `folds` unusable: an empty fold, or (for roc_auc) a fold without every class.
fn problems(folds: &[Vec<u32>], target: &TargetInfo, labels: Option<&[String]>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, fold) in folds.iter().enumerate() {
        if fold.is_empty() {
            out.push(format!("fold {} of {} has no rows", i + 1, folds.len()));
            continue;
        }
        if target.metric == Metric::RocAuc
            && let Some(labels) = labels
        {
            let absent: Vec<&String> =
                target.classes.iter().filter(|c| !fold.iter().any(|&r| labels[r as usize] == **c)).collect();
            if !absent.is_empty() {
                out.push(format!(
                    "fold {} holds no row of class {} (a class needs at least one row per fold)",
                    i + 1,
                    absent.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    out
}

/// Whether `k` folds of `pool` can be scored (see [`write`]); the reason if not.
pub fn check(pool: &DataFrame, target: &TargetInfo, k: u32, seed: u64) -> Result<(), String> {
    deal(pool, target, k, seed).map(|_| ()).map_err(|e| e.to_string())
}

/// Writes `k` folds of `pool` under `root` (replacing what was there). Fails, writing nothing,
/// when a fold would be empty or could not be scored.
pub fn write(pool: &DataFrame, target: &TargetInfo, k: u32, seed: u64, root: &Path) -> anyhow::Result<Folds> {
    let folds = deal(pool, target, k, seed)?;
    if root.exists() {
        fs_err::remove_dir_all(root)?;
    }
    let mut dirs = Vec::with_capacity(folds.len());
    let mut ranges = Vec::with_capacity(folds.len());
    let mut order = Vec::with_capacity(pool.height());
    for (i, held) in folds.iter().enumerate() {
        let mut kept: Vec<u32> =
            folds.iter().enumerate().filter(|(j, _)| *j != i).flat_map(|(_, f)| f.iter().copied()).collect();
        kept.sort_unstable();
        let d = fold_dirs(root, i + 1);
        fs_err::create_dir_all(&d.data)?;
        fs_err::create_dir_all(&d.input)?;
        write_csv(&take(pool, &kept)?, &d.data.join("train.csv"))?;
        write_csv(&take(pool, held)?.drop(&target.column)?, &d.input.join("features.csv"))?;
        ranges.push(order.len()..order.len() + held.len());
        order.extend_from_slice(held);
        dirs.push(d);
    }
    Ok(Folds { dirs, ranges, out_of_fold: take(pool, &order)? })
}

/// The sha256 recorded for out-of-fold predictions: of each fold's predictions file, as its
/// script wrote it, one after the other in fold order.
pub fn predictions_sha256<'a>(files: impl IntoIterator<Item = &'a [u8]>) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    files.into_iter().for_each(|f| hasher.update(f));
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use polars::prelude::*;

    use super::*;

    #[test]
    fn folds_on_disk_partition_the_pool_and_hide_each_folds_labels() {
        let pool = df!("x" => (0..20).collect::<Vec<i64>>(), "y" => (0..20).map(|i| if i % 4 == 0 { "b" } else { "a" }).collect::<Vec<_>>()).unwrap();
        let target = TargetInfo::binary_ab();
        let dir = tempfile::tempdir().unwrap();
        let folds = write(&pool, &target, 4, 1, dir.path()).unwrap();
        assert_eq!(folds.ranges.iter().map(|r| r.len()).sum::<usize>(), 20);
        assert_eq!(folds.out_of_fold.height(), 20);
        for (d, range) in folds.dirs.iter().zip(&folds.ranges) {
            let train = crate::data::read_table(&d.data.join("train.csv")).unwrap();
            let features = crate::data::read_table(&d.input.join("features.csv")).unwrap();
            assert_eq!(train.height() + features.height(), 20);
            assert_eq!(features.height(), range.len());
            assert!(features.column("y").is_err(), "a fold's inference sees no labels");
            // Its held rows are not among its training rows.
            let held: Vec<i64> = features.column("x").unwrap().i64().unwrap().into_no_null_iter().collect();
            let trained: Vec<i64> = train.column("x").unwrap().i64().unwrap().into_no_null_iter().collect();
            assert!(held.iter().all(|x| !trained.contains(x)));
        }
        // Five `b` rows cannot give each of 6 folds one: roc_auc could not be scored.
        let err = write(&pool, &target, 6, 1, dir.path()).unwrap_err().to_string();
        assert!(err.contains("no row of class `b`"), "{err}");
    }
}
