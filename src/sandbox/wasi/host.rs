//! Per-run host state: the WASI context plus the bookkeeping behind the memory, open-file and
//! disk-write limits.

use std::collections::HashMap;

use wasmtime::ResourceLimiter;
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::sandbox::LimitKind;

/// The data of one `Store`.
pub(crate) struct Host {
    pub wasi: WasiP1Ctx,
    pub memory: MemoryLimiter,
    pub files: FileAccounting,
}

/// Caps linear memory and remembers the peak. A refused growth makes `memory.grow` return -1,
/// which CPython turns into a `MemoryError`.
pub(crate) struct MemoryLimiter {
    cap: usize,
    total: usize,
    pub peak: usize,
    pub denied: bool,
}

impl MemoryLimiter {
    pub fn new(cap: u64) -> Self {
        Self { cap: usize::try_from(cap).unwrap_or(usize::MAX), total: 0, peak: 0, denied: false }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let new_total = self.total.saturating_sub(current).saturating_add(desired);
        if new_total > self.cap || maximum.is_some_and(|max| desired > max) {
            self.denied = true;
            return Ok(false);
        }
        self.total = new_total;
        self.peak = self.peak.max(new_total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; ten million is far beyond any real program.
        Ok(desired <= 10_000_000 && maximum.is_none_or(|max| desired <= max))
    }
}

/// Tracks the descriptors the guest opened (with a hint of each one's position) and the bytes
/// it wrote into files.
pub(crate) struct FileAccounting {
    /// Descriptor to position hint: the last seek result plus bytes written since. It bounds
    /// how far past the start a write can land, which stops sparse files of absurd size.
    open: HashMap<u32, u64>,
    max_open: usize,
    written: u64,
    max_written: u64,
    pub open_denied: bool,
    pub disk_denied: bool,
}

/// Why a write is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteRefusal {
    /// The total-bytes budget is used up (`ENOSPC`).
    NoSpace,
    /// The write would make a file larger than the budget (`EFBIG`).
    TooLarge,
}

impl FileAccounting {
    pub fn new(max_open: u32, max_written: u64) -> Self {
        Self {
            open: HashMap::new(),
            max_open: max_open as usize,
            written: 0,
            max_written,
            open_denied: false,
            disk_denied: false,
        }
    }

    /// Whether another descriptor may be opened; records a refusal.
    pub fn may_open(&mut self) -> bool {
        let ok = self.open.len() < self.max_open;
        self.open_denied |= !ok;
        ok
    }

    pub fn opened(&mut self, fd: u32) {
        self.open.insert(fd, 0);
    }

    pub fn closed(&mut self, fd: u32) {
        self.open.remove(&fd);
    }

    /// After a successful `fd_renumber(from, to)`: `to` now refers to what `from` did.
    pub fn renumbered(&mut self, from: u32, to: u32) {
        let moved = self.open.remove(&from);
        self.open.remove(&to);
        if let Some(position) = moved {
            self.open.insert(to, position);
        }
    }

    pub fn seeked(&mut self, fd: u32, position: u64) {
        if let Some(p) = self.open.get_mut(&fd) {
            *p = position;
        }
    }

    /// True for descriptors the guest opened itself (files and directories, not stdio).
    pub fn is_opened(&self, fd: u32) -> bool {
        self.open.contains_key(&fd)
    }

    /// Checks a write of `len` bytes at `offset` (the position hint when `None`); records a
    /// refusal.
    pub fn check_write(&mut self, fd: u32, offset: Option<u64>, len: u64) -> Result<(), WriteRefusal> {
        let at = offset.or_else(|| self.open.get(&fd).copied()).unwrap_or(0);
        let result = if at.saturating_add(len) > self.max_written {
            Err(WriteRefusal::TooLarge)
        } else if self.written.saturating_add(len) > self.max_written {
            Err(WriteRefusal::NoSpace)
        } else {
            Ok(())
        };
        self.disk_denied |= result.is_err();
        result
    }

    /// Whether a file may be resized to `size` bytes; records a refusal.
    pub fn may_resize(&mut self, size: u64) -> bool {
        let ok = size <= self.max_written;
        self.disk_denied |= !ok;
        ok
    }

    /// Records `bytes` written; `positional` writes (`pwrite`) leave the position alone.
    pub fn wrote(&mut self, fd: u32, bytes: u64, positional: bool) {
        self.written = self.written.saturating_add(bytes);
        if !positional && let Some(p) = self.open.get_mut(&fd) {
            *p = p.saturating_add(bytes);
        }
    }

    pub fn limits_hit(&self) -> impl Iterator<Item = LimitKind> {
        [(self.open_denied, LimitKind::OpenFiles), (self.disk_denied, LimitKind::Disk)]
            .into_iter()
            .filter_map(|(hit, kind)| hit.then_some(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cap_refuses_and_tracks_peak() {
        let mut m = MemoryLimiter::new(1000);
        assert!(m.memory_growing(0, 600, None).unwrap());
        assert!(m.memory_growing(600, 1000, None).unwrap());
        assert!(!m.memory_growing(1000, 1001, None).unwrap());
        assert!(m.denied);
        assert_eq!(m.peak, 1000);
    }

    #[test]
    fn open_files_and_renumber() {
        let mut f = FileAccounting::new(2, 100);
        assert!(f.may_open());
        f.opened(5);
        f.opened(6);
        assert!(!f.may_open());
        assert!(f.open_denied);
        f.renumbered(5, 1);
        assert!(f.is_opened(1) && !f.is_opened(5));
        f.renumbered(9, 6);
        assert!(!f.is_opened(6), "stdio renumbered over a file is no longer a file");
        f.closed(1);
        assert!(f.may_open());
    }

    #[test]
    fn disk_cap_counts_writes_and_bounds_positions() {
        let mut f = FileAccounting::new(8, 100);
        f.opened(3);
        assert_eq!(f.check_write(3, None, 60), Ok(()));
        f.wrote(3, 60, false);
        assert_eq!(f.check_write(3, None, 41), Err(WriteRefusal::TooLarge));
        f.opened(4);
        assert_eq!(f.check_write(4, None, 41), Err(WriteRefusal::NoSpace));
        f.seeked(4, 1 << 40);
        assert_eq!(f.check_write(4, None, 1), Err(WriteRefusal::TooLarge));
        assert_eq!(f.check_write(4, Some(10), 1), Ok(()));
        assert!(!f.may_resize(101));
        assert!(f.disk_denied);
    }
}
