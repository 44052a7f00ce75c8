//! The `wsbridge` binary: parse arguments, run, map the outcome to an exit code.

// One `unsafe` block, reviewed: `tune_malloc`.
#![deny(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tune_malloc();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.run() {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsbridge: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// glibc gives freed memory at the top of its heap back to the system once 128 KiB are free,
/// and a busy connection frees and allocates its 64 KiB payload buffers all the time: every
/// give-back is a `brk`, and every page taken back is a page fault (4 KiB messages: 14,000 to
/// 39,000 faults per 200,000 messages, ~620 with this; 0.32-0.57 CPU s -> 0.25-0.30).
/// Up to 4 MiB free at the top now stays. Setting the trim threshold freezes glibc's mmap
/// threshold at 128 KiB, so that is set too: allocations up to 4 MiB (1 MiB messages) come
/// from the heap and are reused, as glibc's own adaptive default would have them.
/// (The stdout thread does one more thing for glibc, per thread: `sink::stdout` fills its
/// cache of small chunks when it starts.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    const KEEP: libc::c_int = 4 << 20;
    // SAFETY: mallopt only sets allocator parameters (under glibc's own lock); called first
    // thing in main, before any thread exists. A refusal (returns 0) leaves the defaults.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP);
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// `wsbridge … | head` closing the pipe is a normal ending.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
