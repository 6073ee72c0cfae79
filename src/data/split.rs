//! Seeded splits: stratified by class for classification, random for regression.

use std::collections::BTreeMap;

/// Row indices (ascending) kept and held out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub kept: Vec<u32>,
    pub held: Vec<u32>,
}

/// Splits `n` rows, holding out about `fraction` of them. With `labels`, each class is split on
/// its own so both sides keep the class balance; a class with two or more rows has at least one
/// on each side. The same inputs always give the same split.
pub fn split(n: usize, labels: Option<&[String]>, fraction: f64, seed: u64) -> Split {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kept = Vec::new();
    let mut held = Vec::new();
    let groups: Vec<Vec<u32>> = match labels {
        Some(labels) => {
            let mut by_class: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
            for (i, label) in labels.iter().enumerate() {
                by_class.entry(label.as_str()).or_default().push(i as u32);
            }
            by_class.into_values().collect()
        }
        None => vec![(0..n as u32).collect()],
    };
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
    fn random_split_for_regression() {
        let s = split(10, None, 0.3, 1);
        assert_eq!(s.held.len(), 3);
        assert_eq!(s.kept.len(), 7);
    }
}
