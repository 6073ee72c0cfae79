//! The train/validation split: checked against the data before anything is written, then
//! written (training rows for agents, validation features for inference, validation labels
//! for the runner alone). Every split keeps its own validation files, so a snapshot made on an
//! earlier split can still be audited against the labels it was scored on.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::shared::{CvFolds, SplitState};
use crate::config::{ValidationConfig, ValidationMethod};
use crate::data::{TargetInfo, read_table, take, target_labels, write_csv};
use crate::metric::Metric;
use crate::run_dir::RunDir;
use crate::scoring::Truth;
use crate::steps::{SplitOutput, rules};

/// What is wrong with `split` for this data, as problems the agent can fix (empty: fine).
/// `labels` are the pool's class labels (classification only).
pub(super) fn problems(
    split: &SplitOutput,
    target: &TargetInfo,
    labels: Option<&[String]>,
    rows: usize,
) -> Vec<String> {
    let mut problems = rules::split(split);
    if !problems.is_empty() {
        return problems;
    }
    let parts = parts(split, target, labels, rows);
    if parts.held.is_empty() || parts.kept.is_empty() {
        problems.push(format!(
            "validation_fraction {} of {rows} rows leaves one side empty",
            split.validation_fraction
        ));
        return problems;
    }
    if target.metric == Metric::RocAuc
        && let Some(labels) = labels
    {
        let held: BTreeSet<&str> = parts.held.iter().map(|&i| labels[i as usize].as_str()).collect();
        let absent: Vec<&str> =
            target.classes.iter().map(String::as_str).filter(|c| !held.contains(c)).collect();
        if !absent.is_empty() {
            problems.push(format!(
                "with stratify={} and seed {}, the {} validation rows would hold no row of class {} \
                 (roc_auc needs every class among the scored rows): set stratify to true, or choose \
                 another seed or a larger validation_fraction",
                split.stratify,
                split.seed,
                parts.held.len(),
                absent.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    problems
}

fn parts(
    split: &SplitOutput,
    target: &TargetInfo,
    labels: Option<&[String]>,
    rows: usize,
) -> crate::data::Split {
    let stratify = if split.stratify && target.kind.is_classification() { labels } else { None };
    crate::data::split(rows, stratify, split.validation_fraction, split.seed)
}

/// Writes split `id`'s files and loads its validation labels. Fails (writing nothing) if the
/// split is unusable for this data. With `folds`, candidates are cross-validated: training
/// sees the whole pool, and each fold's files are written (stratified by class, dealt with the
/// split's seed); the validation files hold every pool row, in out-of-fold order.
pub(super) fn materialize(
    dir: &RunDir,
    target: &TargetInfo,
    split: &SplitOutput,
    id: u32,
    folds: Option<u32>,
) -> anyhow::Result<(SplitState, usize, usize)> {
    let pool = read_table(&dir.pool_csv())?;
    if let Some(k) = folds {
        let written = crate::folds::write(&pool, target, k, split.seed, &dir.folds(id))?;
        let inputs = dir.validation_inputs(id);
        fs_err::create_dir_all(&inputs)?;
        write_csv(&pool, &dir.train_csv())?;
        write_csv(&written.out_of_fold.drop(&target.column)?, &inputs.join("features.csv"))?;
        write_csv(&written.out_of_fold, &dir.validation_labels(id))?;
        let truth = Truth::from_csv(&dir.validation_labels(id), target).map_err(anyhow::Error::msg)?;
        let cv = CvFolds { dirs: written.dirs, ranges: written.ranges };
        let state =
            SplitState { split: split.clone(), id, truth: Arc::new(truth), folds: Some(Arc::new(cv)) };
        return Ok((state, pool.height(), pool.height()));
    }
    let labels =
        if target.kind.is_classification() { Some(target_labels(&pool, &target.column)?) } else { None };
    let problems = problems(split, target, labels.as_deref(), pool.height());
    anyhow::ensure!(problems.is_empty(), "the split is unusable: {}", problems.join("; "));
    let parts = parts(split, target, labels.as_deref(), pool.height());
    let train = take(&pool, &parts.kept)?;
    let validation = take(&pool, &parts.held)?;
    let inputs = dir.validation_inputs(id);
    fs_err::create_dir_all(&inputs)?;
    write_csv(&train, &dir.train_csv())?;
    write_csv(&validation.drop(&target.column)?, &inputs.join("features.csv"))?;
    write_csv(&validation, &dir.validation_labels(id))?;
    let truth = Truth::from_csv(&dir.validation_labels(id), target).map_err(anyhow::Error::msg)?;
    let state = SplitState { split: split.clone(), id, truth: Arc::new(truth), folds: None };
    Ok((state, train.height(), validation.height()))
}

/// The folds a new run cross-validates on (`None`: a held-out split), and a note when `auto`
/// wanted folds this data cannot fill. An explicit `cv` is kept, so its problem is reported
/// when the folds are written.
pub(super) fn initial_folds(
    config: &ValidationConfig,
    pool: &polars::prelude::DataFrame,
    target: &TargetInfo,
    seed: u64,
) -> (Option<u32>, Option<String>) {
    let Some(k) = config.folds_for(pool.height()) else { return (None, None) };
    if config.method != ValidationMethod::Auto {
        return (Some(k), None);
    }
    match crate::folds::check(pool, target, k, seed) {
        Ok(()) => (Some(k), None),
        Err(why) => (None, Some(format!("validation: a held-out split instead of cross-validation ({why})"))),
    }
}

/// Whether two splits hold out the same rows.
pub(super) fn same(a: &SplitOutput, b: &SplitOutput) -> bool {
    a.validation_fraction == b.validation_fraction && a.stratify == b.stratify && a.seed == b.seed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_that_leaves_a_class_out_of_validation_is_a_problem_for_the_agent() {
        let target = TargetInfo::binary_ab();
        // One `b` among 40 rows: a random 10% validation set misses it for most seeds.
        let labels: Vec<String> = (0..40).map(|i| if i == 7 { "b".into() } else { "a".into() }).collect();
        let random =
            |seed| SplitOutput { validation_fraction: 0.1, stratify: false, seed, rationale: String::new() };
        let seed = (0..50).find(|s| !problems(&random(*s), &target, Some(&labels), 40).is_empty()).unwrap();
        let found = problems(&random(seed), &target, Some(&labels), 40);
        assert!(found[0].contains("no row of class `b`"), "{found:?}");
        // Stratified, a class with one row cannot be on both sides; with two it can.
        let mut two = labels.clone();
        two[8] = "b".into();
        let stratified = SplitOutput { stratify: true, ..random(seed) };
        assert!(problems(&stratified, &target, Some(&two), 40).is_empty());
        let bad = SplitOutput { validation_fraction: 2.0, ..stratified };
        assert!(problems(&bad, &target, Some(&two), 40)[0].contains("outside"));
    }
}
