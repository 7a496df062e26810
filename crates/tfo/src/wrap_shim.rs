//! The preload shim `tfo wrap` hands to programs: built by `build.rs` from
//! crates/fastopen-preload, embedded in this binary, and written once per
//! user to a private directory (`$XDG_RUNTIME_DIR/tfokit`, else
//! `/tmp/tfokit-UID`, mode 0700, owned by the user, checked before use) under
//! a name that carries a hash of its bytes, so that each `tfo` build uses its
//! own shim and concurrent wraps share it. A file, not a memfd: children that
//! close inherited descriptors (Python's subprocess does) must still find it.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The shim's bytes.
static SHIM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libfastopen_preload.so"));

/// The directory for the shim: private to this user.
fn private_dir() -> anyhow::Result<PathBuf> {
    let uid = nix::unistd::geteuid().as_raw();
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && d.is_dir())
        .map(|d| d.join("tfokit"))
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/tfokit-{uid}")));
    match fs::DirBuilder::new().mode(0o700).create(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", base.display())),
    }
    let meta = fs::symlink_metadata(&base).with_context(|| format!("checking {}", base.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        bail!(
            "{} is not a directory of yours that only you can write (owner {}, mode {:o}): remove it and try again",
            base.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    Ok(base)
}

/// The shim's path, written there if it is not yet.
pub(crate) fn install() -> anyhow::Result<PathBuf> {
    if SHIM.is_empty() {
        anyhow::bail!(
            "this tfo was built without tfo wrap's shim (outside the tfokit source tree): install it from there with `cargo install --path crates/tfo`, or use `tfo proxy`"
        );
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    SHIM.hash(&mut hasher);
    let dir = private_dir()?;
    let path = dir.join(format!("libfastopen_preload-{:016x}.so", hasher.finish()));
    if fs::metadata(&path).is_ok_and(|m| m.len() == SHIM.len() as u64) {
        return Ok(path);
    }
    write_atomically(&dir, &path).with_context(|| format!("writing the preload shim to {}", path.display()))?;
    Ok(path)
}

fn write_atomically(dir: &Path, path: &Path) -> std::io::Result<()> {
    let tmp = dir.join(format!(".shim-{}.tmp", std::process::id()));
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o700).open(&tmp)?;
    file.write_all(SHIM)?;
    file.sync_all()?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o500))?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_shim_is_a_shared_object_with_the_hooks() {
        let shim = super::SHIM;
        assert_eq!(&shim[..4], b"\x7fELF");
        for hook in ["connect", "getpeername", "epoll_wait", "close_range", "accept4"] {
            let name = format!("\0{hook}\0");
            assert!(shim.windows(name.len()).any(|w| w == name.as_bytes()), "{hook} is not exported");
        }
    }
}
