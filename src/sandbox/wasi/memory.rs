//! Guest linear memories on private anonymous mappings advised for transparent huge pages.
//!
//! Wasmtime's default maps a module's memory image copy-on-write: instantiation is nearly free,
//! but CPython writes reference counts all over the pre-imported heap, and each first write to
//! an image page is a write-protect fault that copies 4 KiB and flushes the TLB of every core
//! running another thread of the runner. With two guests at once that was a quarter of the
//! guests' time. Here a memory is an anonymous reservation the kernel may back with 2 MiB
//! pages; wasmtime copies the image in once at instantiation, and the guest runs without
//! faulting on it.

use std::ffi::c_void;
use std::ptr::NonNull;

use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

/// Creates every linear memory of an engine (set with `Config::with_host_memory`, which needs
/// `memory_init_cow(false)`: a copy-on-write image cannot sit on memory wasmtime did not map).
pub(crate) struct HugePageMemories;

// SAFETY: each memory is a fresh zero-filled reservation of `reserved + guard` bytes that never
// moves; only its first `byte_size` bytes are accessible, and the guard stays inaccessible, as
// the code wasmtime compiles (bounds checks elided up to reservation plus guard) requires. A
// guard of the same size before the memory stands in for wasmtime's own, which it keeps as
// defence in depth against a miscompiled negative offset.
unsafe impl MemoryCreator for HugePageMemories {
    fn new_memory(
        &self,
        _ty: MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        let capacity = reserved_size_in_bytes
            .filter(|r| *r > 0)
            .or(maximum)
            .ok_or("a guest memory without a maximum size needs a reservation")?;
        if minimum > capacity {
            return Err(format!("a guest memory of {minimum} bytes exceeds its reservation of {capacity}"));
        }
        let before = guard_size_in_bytes;
        let total = capacity
            .checked_add(guard_size_in_bytes)
            .and_then(|t| t.checked_add(before))
            .ok_or("a guest memory's reservation and guards overflow the address space")?;
        // SAFETY: a new private mapping at an address the kernel chooses; nothing aliases it.
        let mapping = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mapping == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            return Err(format!("reserving {total} bytes of address space for a guest memory: {e}"));
        }
        let mapping = NonNull::new(mapping).ok_or("the kernel mapped a guest memory at address zero")?;
        let mut memory = Reserved { mapping, before, total, capacity, size: 0 };
        // Advice only: without transparent huge pages (or with them off) it fails or does
        // nothing, and the memory works the same with 4 KiB pages.
        // SAFETY: the range lies inside the mapping just made.
        unsafe { libc::madvise(memory.as_ptr().cast(), capacity, libc::MADV_HUGEPAGE) };
        memory.grow_to(minimum).map_err(|e| format!("{e:#}"))?;
        Ok(Box::new(memory))
    }
}

/// One guest memory: `size` accessible bytes `before` bytes into a `total`-byte mapping.
struct Reserved {
    mapping: NonNull<c_void>,
    before: usize,
    total: usize,
    capacity: usize,
    size: usize,
}

// SAFETY: the mapping is owned by this value alone; wasmtime serializes access through its store.
unsafe impl Send for Reserved {}
// SAFETY: as above; `&Reserved` only reads the sizes and the base address.
unsafe impl Sync for Reserved {}

// SAFETY: the base never moves, growth stays inside the reservation, and the bytes past `size`
// (the rest of the reservation and the guard) stay inaccessible.
unsafe impl LinearMemory for Reserved {
    fn byte_size(&self) -> usize {
        self.size
    }

    fn byte_capacity(&self) -> usize {
        self.capacity
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        if new_size > self.capacity {
            wasmtime::bail!(
                "a guest memory cannot grow to {new_size} bytes: its reservation is {}",
                self.capacity
            );
        }
        if new_size > self.size {
            // SAFETY: `size..new_size` lies inside the reservation; wasmtime sizes are multiples
            // of the wasm page, so of the host page.
            let protected = unsafe {
                libc::mprotect(
                    self.as_ptr().add(self.size).cast(),
                    new_size - self.size,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if protected != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            self.size = new_size;
        }
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        // SAFETY: `before` bytes into the mapping, which is longer than that.
        unsafe { self.mapping.as_ptr().cast::<u8>().add(self.before) }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        // SAFETY: the whole mapping made in `new_memory`; wasmtime has dropped the instance.
        if unsafe { libc::munmap(self.mapping.as_ptr(), self.total) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!(error = %e, "unmapping a guest memory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 1 << 16;

    /// The permissions of the mapping holding `addr`, from `/proc/self/maps`.
    fn permissions_at(addr: usize) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .find_map(|line| {
                let (range, rest) = line.split_once(' ')?;
                let (start, end) = range.split_once('-')?;
                let (start, end) =
                    (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
                (start..end).contains(&addr).then(|| rest[..4].to_string())
            })
            .unwrap_or_else(|| format!("unmapped at {addr:#x}"))
    }

    #[test]
    fn a_memory_grows_inside_its_reservation_and_reads_zero() {
        let mut memory =
            HugePageMemories.new_memory(MemoryType::new(1, None), PAGE, None, Some(64 * PAGE), PAGE).unwrap();
        assert_eq!(memory.byte_size(), PAGE);
        memory.grow_to(3 * PAGE).unwrap();
        assert_eq!(memory.byte_size(), 3 * PAGE);
        // SAFETY: the first three wasm pages are accessible after the growth.
        let bytes = unsafe { std::slice::from_raw_parts_mut(memory.as_ptr(), 3 * PAGE) };
        assert!(bytes.iter().all(|b| *b == 0));
        bytes[3 * PAGE - 1] = 7;
        assert!(memory.grow_to(65 * PAGE).is_err(), "growth past the reservation is refused");
        assert_eq!(memory.byte_size(), 3 * PAGE);
    }

    /// Compiled wasm skips bounds checks up to the reservation plus the guard: all of it past
    /// the memory's size must fault, not read the host's memory; so must the guard before it.
    #[test]
    fn everything_past_the_size_up_to_the_end_of_the_guard_is_inaccessible() {
        let (reserved, guard) = (64 * PAGE, 32 * PAGE);
        let memory = HugePageMemories
            .new_memory(MemoryType::new(2, None), 2 * PAGE, None, Some(reserved), guard)
            .unwrap();
        let base = memory.as_ptr() as usize;
        assert_eq!(&permissions_at(base)[..2], "rw");
        assert_eq!(&permissions_at(base + 2 * PAGE - 1)[..2], "rw");
        for addr in [base + 2 * PAGE, base + reserved - 1, base + reserved, base + reserved + guard - 1] {
            assert_eq!(&permissions_at(addr)[..3], "---", "at {:#x} past the base", addr - base);
        }
        for addr in [base - 1, base - guard] {
            assert_eq!(&permissions_at(addr)[..3], "---", "at {:#x} before the base", base - addr);
        }
    }
}
