//! Output capture that truncates and counts instead of failing the writer.
//!
//! A guest that floods stdout must still finish: bytes past the cap are dropped and counted, and
//! the writer is told everything was written.

use std::sync::{Arc, Mutex};

use super::spec::Captured;

/// A shared, capped byte buffer. Clones share the same buffer.
#[derive(Debug, Clone)]
pub struct CappedBuffer(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    bytes: Vec<u8>,
    cap: usize,
    dropped: u64,
}

impl CappedBuffer {
    pub fn new(cap: u64) -> Self {
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        Self(Arc::new(Mutex::new(State { bytes: Vec::new(), cap, dropped: 0 })))
    }

    /// Keeps what fits under the cap and counts the rest. Always "writes" everything.
    pub fn push(&self, data: &[u8]) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = state.cap.saturating_sub(state.bytes.len());
        let kept = room.min(data.len());
        state.bytes.extend_from_slice(&data[..kept]);
        state.dropped += (data.len() - kept) as u64;
    }

    pub fn dropped(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).dropped
    }

    /// The captured text so far.
    pub fn snapshot(&self) -> Captured {
        let state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Captured { text: String::from_utf8_lossy(&state.bytes).into_owned(), dropped_bytes: state.dropped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_and_counts() {
        let buf = CappedBuffer::new(5);
        buf.push(b"abc");
        buf.push(b"defgh");
        buf.push(b"ij");
        let c = buf.snapshot();
        assert_eq!(c.text, "abcde");
        assert_eq!(c.dropped_bytes, 5);
    }
}
