//! Lays out the functions wsbridge runs next to each other in the release binary.
//!
//! The kernel maps 64 KiB of an executable around every page a process touches, so the
//! ~700 KiB of code a connection runs, spread over 4 MB of text, made 2.7 MiB of it resident.
//! `bench/hot-symbols.txt` (written by `bench/hot-symbols.sh` from callgrind runs of the
//! benchmark's paths) names those functions; a linker that takes `--symbol-ordering-file`
//! (lld, Rust's default on x86_64 Linux since 1.90; mold) puts them first, and resident code
//! falls to ~1.1 MiB. GNU ld does not take the flag, so a probe link decides; without it the
//! binary is the same, only less compact. Names the binary no longer has (another toolchain,
//! updated dependencies) are skipped by the linker without a word.
//!
//! `WSBRIDGE_SYMBOL_ORDER=0` leaves the order to the linker (to measure the difference).

use std::env;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ORDER_FILE: &str = "bench/hot-symbols.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=WSBRIDGE_SYMBOL_ORDER");

    // Debug builds have other symbol names (the file lists the release build's) and are
    // linked often: leave them alone.
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let wanted = env::var("WSBRIDGE_SYMBOL_ORDER").map_or(true, |v| v != "0");
    let Some(manifest_dir) = env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order_file = Path::new(&manifest_dir).join(ORDER_FILE);
    if !release || !wanted || !order_file.is_file() {
        return;
    }
    let Some(order_file) = order_file.to_str().filter(|p| !p.contains(',')) else {
        // `-Wl,` splits at commas; such a path cannot be passed through the compiler driver.
        return;
    };
    let link_args = [
        format!("-Wl,--symbol-ordering-file={order_file}"),
        "-Wl,--no-warn-symbol-ordering".to_owned(),
    ];
    if linker_takes(&link_args) {
        for arg in &link_args {
            println!("cargo:rustc-link-arg-bin=wsbridge={arg}");
        }
    }
}

/// Links an empty program with `link_args` the way cargo will link ours (same rustc, target,
/// RUSTFLAGS and configured linker) and says whether that worked.
fn linker_takes(link_args: &[String]) -> bool {
    let (Some(out_dir), Ok(target)) = (env::var_os("OUT_DIR"), env::var("TARGET")) else {
        return false;
    };
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let mut probe = Command::new(rustc);
    probe
        .args(["--crate-name", "link_order_probe", "--crate-type", "bin"])
        .args(["--edition", "2021", "--target", &target, "-o"])
        .arg(PathBuf::from(out_dir).join("link_order_probe"));
    if let Ok(flags) = env::var("CARGO_ENCODED_RUSTFLAGS") {
        probe.args(flags.split('\x1f').filter(|flag| !flag.is_empty()));
    }
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        let mut flag = OsString::from("linker=");
        flag.push(linker);
        probe.arg("-C").arg(flag);
    }
    for arg in link_args {
        probe.arg("-C").arg(format!("link-arg={arg}"));
    }
    probe
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let Ok(mut child) = probe.spawn() else {
        return false;
    };
    let wrote = child
        .stdin
        .take()
        .is_some_and(|mut stdin| stdin.write_all(b"fn main() {}\n").is_ok());
    child.wait().is_ok_and(|status| status.success()) && wrote
}
