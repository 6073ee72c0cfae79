//! The `replay` backend: answers from a recorded transcript, insisting that each request is one
//! that was recorded. Requests are matched by their identity (the request without its timing),
//! not by position: iterations that ran at once recorded their calls interleaved, and a run
//! resumed after a crash recorded the unfinished iteration's calls twice. Calls with the same
//! identity (a retried try, a repeated iteration) are answered in the order they were recorded.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use serde_json::Value;

use super::backend::{Backend, BackendError, BoxFuture, Divergence, Reply, Request};
use super::transcript::{Record, read};

pub struct ReplayBackend {
    records: Vec<Record>,
    /// Unreplayed records by request hash, in recorded order.
    queues: Mutex<HashMap<String, VecDeque<usize>>>,
}

impl ReplayBackend {
    pub fn from_transcript(path: &Path) -> std::io::Result<Self> {
        Ok(Self::new(read(path)?))
    }

    pub fn new(records: Vec<Record>) -> Self {
        let mut queues: HashMap<String, VecDeque<usize>> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            queues.entry(r.request_hash.clone()).or_default().push_back(i);
        }
        Self { records, queues: Mutex::new(queues) }
    }

    /// Recorded calls not yet replayed.
    pub fn remaining(&self) -> usize {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).values().map(VecDeque::len).sum()
    }

    /// Where `request` departs from the recorded call it should have been: the recorded request
    /// of the same step, iteration and attempt (else step and iteration).
    fn divergence(&self, request: &Request) -> BackendError {
        let same = |r: &&Record| r.request.step == request.step && r.request.iteration == request.iteration;
        let closest = self
            .records
            .iter()
            .filter(same)
            .find(|r| r.request.attempt == request.attempt)
            .or_else(|| self.records.iter().find(same));
        let Some(record) = closest else {
            return BackendError::ReplayExhausted {
                step: request.step.clone(),
                iteration: request.iteration,
            };
        };
        // As the transcript keeps requests: a change in the history shows as its digest.
        let (field, was, is) = first_difference(
            &record.request.clone().kept().identity(),
            &request.clone().kept().identity(),
            String::new(),
        )
        .unwrap_or_else(|| ("(hash only)".into(), record.request_hash.clone(), request.hash()));
        BackendError::ReplayMismatch(Box::new(Divergence {
            step: request.step.clone(),
            iteration: request.iteration,
            attempt: request.attempt,
            field,
            recorded: was,
            now: is,
        }))
    }
}

impl Backend for ReplayBackend {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn complete<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Reply, BackendError>> {
        Box::pin(async move {
            let next = self
                .queues
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&request.hash())
                .and_then(VecDeque::pop_front);
            let Some(index) = next else { return Err(self.divergence(request)) };
            let record = &self.records[index];
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
