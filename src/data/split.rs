//! Seeded splits: stratified by class for classification, random for regression.

use std::collections::BTreeMap;

/// Row indices (ascending) kept and held out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub kept: Vec<u32>,
    pub held: Vec<u32>,
}

/// The rows of each class in label order (all rows as one group without labels).
fn groups(n: usize, labels: Option<&[String]>) -> Vec<Vec<u32>> {
    match labels {
        Some(labels) => {
            let mut by_class: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
            for (i, label) in labels.iter().enumerate() {
                by_class.entry(label.as_str()).or_default().push(i as u32);
            }
            by_class.into_values().collect()
        }
        None => vec![(0..n as u32).collect()],
    }
}

/// Splits `n` rows, holding out about `fraction` of them. With `labels`, each class is split on
/// its own so both sides keep the class balance; a class with two or more rows has at least one
/// on each side. The same inputs always give the same split.
pub fn split(n: usize, labels: Option<&[String]>, fraction: f64, seed: u64) -> Split {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kept = Vec::new();
    let mut held = Vec::new();
    let groups = groups(n, labels);
    for mut group in groups {
        rng.shuffle(&mut group);
        let mut take = (group.len() as f64 * fraction).round() as usize;
        if group.len() >= 2 {
            take = take.clamp(1, group.len() - 1);
        } else {
            take = 0;
        }
        held.extend_from_slice(&group[..take]);
        kept.extend_from_slice(&group[take..]);
    }
    kept.sort_unstable();
    held.sort_unstable();
    Split { kept, held }
}

/// Deals `n` rows into `k` folds (each fold's rows ascending). With `labels`, each class is
/// shuffled and dealt round-robin on its own, so every fold keeps the class balance; without,
/// all rows are. The same inputs always give the same folds.
pub fn folds(n: usize, labels: Option<&[String]>, k: usize, seed: u64) -> Vec<Vec<u32>> {
    let k = k.max(1);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut folds = vec![Vec::new(); k];
    let groups = groups(n, labels);
    // Dealing continues where the last class stopped, so fold sizes differ by at most one.
    let mut next = 0;
    for mut group in groups {
        rng.shuffle(&mut group);
        for row in group {
            folds[next % k].push(row);
            next += 1;
        }
    }
    for fold in &mut folds {
        fold.sort_unstable();
    }
    folds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_split_keeps_balance_and_is_seeded() {
        let labels: Vec<String> =
            (0..100).map(|i| if i % 4 == 0 { "rare".into() } else { "common".into() }).collect();
        let s = split(100, Some(&labels), 0.2, 7);
        assert_eq!(s.held.len(), 20);
        assert_eq!(s.kept.len() + s.held.len(), 100);
        let rare_held = s.held.iter().filter(|&&i| labels[i as usize] == "rare").count();
        assert_eq!(rare_held, 5);
        assert_eq!(s, split(100, Some(&labels), 0.2, 7));
        assert_ne!(s, split(100, Some(&labels), 0.2, 8));
        assert!(s.held.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn tiny_classes_stay_on_both_sides() {
        let labels: Vec<String> =
            ["a", "a", "b", "b", "b", "b", "b", "b", "b", "c"].iter().map(|s| s.to_string()).collect();
        let s = split(10, Some(&labels), 0.1, 0);
        let held: Vec<&str> = s.held.iter().map(|&i| labels[i as usize].as_str()).collect();
        assert!(held.contains(&"a") && held.contains(&"b") && !held.contains(&"c"), "{held:?}");
    }

    #[test]
    fn folds_cover_every_row_once_keep_the_balance_and_are_seeded() {
        let labels: Vec<String> =
            (0..103).map(|i| if i % 5 == 0 { "rare".into() } else { "common".into() }).collect();
        let f = folds(103, Some(&labels), 5, 3);
        let mut all: Vec<u32> = f.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..103).collect::<Vec<u32>>());
        let sizes: Vec<usize> = f.iter().map(Vec::len).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        for fold in &f {
            let rare = fold.iter().filter(|&&i| labels[i as usize] == "rare").count();
            assert!((4..=5).contains(&rare), "{rare} rare rows in a fold");
        }
        assert_eq!(f, folds(103, Some(&labels), 5, 3));
        assert_ne!(f, folds(103, Some(&labels), 5, 4));
        assert_eq!(folds(10, None, 3, 0).iter().map(Vec::len).sum::<usize>(), 10);
    }

    #[test]
    fn random_split_for_regression() {
        let s = split(10, None, 0.3, 1);
        assert_eq!(s.held.len(), 3);
        assert_eq!(s.kept.len(), 7);
    }
}
