//! Token and cost accounting, and the hard spend cap.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::backend::Usage;

/// Price of a model in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

/// Running totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    pub calls: u64,
    pub usage: Usage,
    pub cost_usd: f64,
    /// Models used without a price in the table (their cost counts as zero).
    pub unpriced_models: Vec<String>,
}

impl Spend {
    /// Adds one call; returns its cost.
    pub fn add(&mut self, prices: &BTreeMap<String, Price>, model: &str, usage: Usage) -> f64 {
        self.calls += 1;
        self.usage += usage;
        let cost = match prices.get(model) {
            Some(price) => {
                (usage.prompt_tokens as f64 * price.input_per_million
                    + usage.completion_tokens as f64 * price.output_per_million)
                    / 1e6
            }
            None => {
                if !self.unpriced_models.iter().any(|m| m == model) {
                    self.unpriced_models.push(model.to_string());
                }
                0.0
            }
        };
        self.cost_usd += cost;
        cost
    }

    /// Whether the cap (if any) is reached.
    pub fn over(&self, cap: Option<f64>) -> bool {
        cap.is_some_and(|cap| self.cost_usd >= cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_follow_the_price_table() {
        let prices =
            BTreeMap::from([("m".to_string(), Price { input_per_million: 1.0, output_per_million: 4.0 })]);
        let mut spend = Spend::default();
        let cost = spend.add(&prices, "m", Usage { prompt_tokens: 1_000_000, completion_tokens: 500_000 });
        assert!((cost - 3.0).abs() < 1e-12);
        assert!(spend.over(Some(3.0)) && !spend.over(Some(3.5)) && !spend.over(None));
        spend.add(&prices, "other", Usage { prompt_tokens: 5, completion_tokens: 5 });
        assert_eq!(spend.unpriced_models, ["other"]);
        assert_eq!(spend.calls, 2);
    }
}
