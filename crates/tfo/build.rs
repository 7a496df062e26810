//! Builds the preload shim of `tfo wrap` (crates/fastopen-preload) and puts it
//! in `OUT_DIR`, where `src/wrap_shim.rs` embeds it: `cargo install --path
//! crates/tfo` alone gives a working `tfo wrap`.
//!
//! The shim is built by a nested `cargo build --release` in its own target
//! directory (beside this build's), so it is optimised even in debug builds
//! and the outer build's lock is never waited on.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let shim = manifest.join("../fastopen-preload");
    let library = manifest.join("../fastopen");
    for watched in [shim.join("src"), shim.join("Cargo.toml"), library.join("src"), library.join("Cargo.toml")] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if !shim.join("Cargo.toml").exists() {
        // Built outside the tfokit workspace (a packaged tfo): no shim to embed;
        // `tfo wrap` says so and how to get one. Everything else works.
        println!(
            "cargo:warning=tfo wrap's shim is built from the tfokit workspace ({}); this tfo has none",
            shim.display()
        );
        std::fs::write(out.join("libfastopen_preload.so"), b"").expect("writing the empty shim into OUT_DIR");
        return;
    }
    // OUT_DIR is TARGET/PROFILE/build/tfo-HASH/out: the shim gets TARGET/preload-shim.
    let target = out.ancestors().nth(4).map(|t| t.join("preload-shim")).unwrap_or_else(|| out.join("preload-shim"));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .arg("build")
        .arg("--release")
        .arg("--quiet")
        .arg("--package=fastopen-preload")
        .arg("--manifest-path")
        .arg(shim.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    // What the outer build set for itself (clippy's wrapper, its flags, its jobserver) stays out.
    for var in
        ["RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_ENCODED_RUSTFLAGS", "CARGO_MAKEFLAGS", "CARGO_TARGET_DIR"]
    {
        build.env_remove(var);
    }
    if env::var_os("RUSTFLAGS").is_some() {
        build.env_remove("RUSTFLAGS");
    }
    let status = build.status().expect("running cargo to build the preload shim");
    assert!(status.success(), "building the preload shim (crates/fastopen-preload) failed");
    let built = target.join("release/libfastopen_preload.so");
    std::fs::copy(&built, out.join("libfastopen_preload.so")).expect("copying the preload shim into OUT_DIR");
}
