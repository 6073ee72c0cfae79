//! The `replay` backend: answers from a recorded transcript, in order, insisting that each
//! request is the one that was recorded.

use std::path::Path;
use std::sync::Mutex;

use serde_json::Value;

use super::backend::{Backend, BackendError, BoxFuture, Divergence, Reply, Request};
use super::transcript::{Record, read};

pub struct ReplayBackend {
    records: Vec<Record>,
    cursor: Mutex<usize>,
}

impl ReplayBackend {
    pub fn from_transcript(path: &Path) -> std::io::Result<Self> {
        Ok(Self::new(read(path)?))
    }

    pub fn new(records: Vec<Record>) -> Self {
        Self { records, cursor: Mutex::new(0) }
    }

    /// Recorded calls not yet replayed.
    pub fn remaining(&self) -> usize {
        self.records.len() - *self.cursor.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Backend for ReplayBackend {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn complete<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Reply, BackendError>> {
        Box::pin(async move {
            let mut cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
            let Some(record) = self.records.get(*cursor) else {
                return Err(BackendError::ReplayExhausted {
                    step: request.step.clone(),
                    iteration: request.iteration,
                });
            };
            if record.request_hash != request.hash() {
                let recorded = record.request.identity();
                let now = request.identity();
                let (field, was, is) = first_difference(&recorded, &now, String::new())
                    .unwrap_or_else(|| ("(hash only)".into(), record.request_hash.clone(), request.hash()));
                return Err(BackendError::ReplayMismatch(Box::new(Divergence {
                    step: request.step.clone(),
                    iteration: request.iteration,
                    attempt: request.attempt,
                    field,
                    recorded: was,
                    now: is,
                })));
            }
            *cursor += 1;
            match (&record.reply, &record.error) {
                (Some(reply), _) => Ok(reply.clone()),
                (None, Some(error)) => Err(error.to_error()),
                (None, None) => Err(BackendError::Fatal {
                    detail: format!("transcript record {} has no reply", record.seq),
                }),
            }
        })
    }
}

/// The first place two JSON values differ: its path and both sides, shortened around the
/// difference.
pub fn first_difference(a: &Value, b: &Value, path: String) -> Option<(String, String, String)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let sub = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => first_difference(l, r, sub),
                    (l, r) => Some((sub, show(l), show(r))),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let sub = format!("{path}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(l), Some(r)) => {
                        if let Some(found) = first_difference(l, r, sub) {
                            return Some(found);
                        }
                    }
                    (l, r) => return Some((sub, show(l), show(r))),
                }
            }
            None
        }
        (Value::String(x), Value::String(y)) if x != y => {
            let at = x.chars().zip(y.chars()).take_while(|(p, q)| p == q).count();
            Some((format!("{path} (from character {at})"), window(x, at), window(y, at)))
        }
        (x, y) if x != y => Some((path, x.to_string(), y.to_string())),
        _ => None,
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".to_string(), Value::to_string)
}

fn window(text: &str, at: usize) -> String {
    let start = at.saturating_sub(30);
    let shown: String = text.chars().skip(start).take(100).collect();
    format!("{}{shown:?}", if start > 0 { "..." } else { "" })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn differences_are_located() {
        let a = json!({"messages": [{"content": "hello world"}, {"content": "x"}], "model": "m"});
        let b = json!({"messages": [{"content": "hello there"}, {"content": "x"}], "model": "m"});
        let (field, was, now) = first_difference(&a, &b, String::new()).unwrap();
        assert_eq!(field, "messages[0].content (from character 6)");
        assert!(was.contains("world") && now.contains("there"));
        assert!(first_difference(&a, &a, String::new()).is_none());
        let c = json!({"model": "m2", "messages": []});
        assert_eq!(first_difference(&a, &c, String::new()).unwrap().0, "messages[0]");
    }
}
