//! API keys: a type that never prints its value, and a redactor for everything written down.

use std::fmt;

/// A secret value. `Debug` and `Display` print `****`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it (the HTTP client).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// Replaces known secrets in text before it is written anywhere (transcripts, logs, errors): a
/// server may echo a key back in an error message.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<Secret>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = Secret>) -> Self {
        // Very short values would redact ordinary words; keys are long.
        Self { secrets: secrets.into_iter().filter(|s| s.expose().len() >= 8).collect() }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            out = out.replace(secret.expose(), "****");
            // The same key inside a JSON string, with escapes.
            let escaped = serde_json::to_string(secret.expose()).expect("strings serialize");
            out = out.replace(&escaped[1..escaped.len() - 1], "****");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let key = Secret::new("sk-test-1234567890");
        assert_eq!(format!("{key} {key:?}"), "**** Secret(****)");
        let r = Redactor::new([key, Secret::new("short")]);
        assert_eq!(r.redact("bad key sk-test-1234567890 (short)"), "bad key **** (short)");
    }
}
