//! The `wsbridge` binary: parse arguments, run, map the outcome to an exit code.

// Two reviewed exceptions: the `unsafe` block in `tune_malloc` and the `pow` symbol.
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

/// C's `pow`, so that the binary does not need glibc's libm for it.
///
/// tokio's multi-thread scheduler is the one caller of libm in this binary (`f64::powf` in
/// its average of poll times). Loading libm.so.6 costs every process ~320 KiB resident,
/// whatever it calls: the loader runs libm's IFUNC resolvers, spread over 250 KiB of its
/// code. With `pow` defined here (the `libm` crate, the Rust port of musl's), the linker
/// (`--as-needed`) leaves libm out: peak RSS of `connect` with 64 B messages 5.2 -> 4.7 MiB,
/// with 1 MiB `--ndjson` 7.1 -> 6.8 MiB. Should a dependency one day call another libm
/// function, the linker takes libm again and this `pow` still serves; nothing breaks.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
// SAFETY: `double pow(double, double)` in C's ABI, as C declares it, with C's meaning; no
// other object linked into this binary defines the symbol (libm.so only would).
#[unsafe(no_mangle)]
extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

/// `wsbridge … | head` closing the pipe is a normal ending.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use std::hint::black_box;

    /// `f64::powf` in this binary calls the `pow` above (tokio's scheduler among its callers):
    /// it must be C's pow, ABI and results.
    #[test]
    fn powf_lands_in_a_correct_pow() {
        let powf = |x: f64, y: f64| black_box(x).powf(black_box(y));
        assert_eq!(powf(2.0, 10.0), 1024.0);
        assert_eq!(powf(0.9, 0.0), 1.0);
        assert!((powf(0.9, 3.0) - 0.729).abs() < 1e-15);
        assert!((powf(2.0, 0.5) - std::f64::consts::SQRT_2).abs() < 1e-15);
        assert!(powf(-1.0, 0.5).is_nan());
    }
}
