//! The one way the CLI creates a file the user named for output (`--write`,
//! `--write-delivered`, `--plot`, `--report`). tfo often runs as root, so:
//!
//! - **A symlink is followed only where the kernel's `protected_symlinks`
//!   rule would follow it**: in a sticky, world-writable directory (`/tmp`) a
//!   link is refused unless it belongs to the caller or to the directory's
//!   owner. A link planted by another user cannot make root overwrite a file.
//! - **Nothing is lost before the end**: [`OutputFile::create`] writes a new
//!   file beside the target (created exclusively, never an existing one) and
//!   [`OutputFile::commit`] renames it into place; a run that fails, or is
//!   dropped, leaves the old file as it was and no temporary behind.
//! - [`OutputFile::in_place`] is for files read while they are written (a
//!   report followed with `tail -f`): the same symlink rule, written directly.
//! - [`same_file`] tells two names of one file apart (hard links too).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

/// A file being written for the user.
#[derive(Debug)]
pub(crate) struct OutputFile {
    /// The file the output ends up in (a symlink's target, if one was allowed).
    target: PathBuf,
    /// The new file, renamed to `target` by `commit`; `None` when written in place.
    tmp: Option<PathBuf>,
    file: Option<File>,
}

/// Where a symlink at `path` may be followed, by the protected_symlinks rule.
fn check_symlink(path: &Path) -> anyhow::Result<()> {
    let Ok(link) = fs::symlink_metadata(path) else { return Ok(()) };
    if !link.file_type().is_symlink() {
        if link.is_dir() {
            bail!("{} is a directory: give a file name", path.display());
        }
        return Ok(());
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir_meta = fs::metadata(dir).with_context(|| format!("checking {}", dir.display()))?;
    let sticky_world_writable = dir_meta.mode() & 0o1002 == 0o1002;
    let me = nix::unistd::geteuid().as_raw();
    if sticky_world_writable && link.uid() != me && link.uid() != dir_meta.uid() {
        bail!(
            "{} is a symlink owned by another user (uid {}) in the shared directory {}: refusing to write through it (remove it, or name another file)",
            path.display(),
            link.uid(),
            dir.display()
        );
    }
    Ok(())
}

impl OutputFile {
    /// Starts the output for `path`: checks it, and creates the new file beside it.
    pub(crate) fn create(path: &Path) -> anyhow::Result<OutputFile> {
        check_symlink(path)?;
        let target = if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        } else {
            path.to_path_buf()
        };
        let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "output".into());
        static N: AtomicU32 = AtomicU32::new(0);
        for _ in 0..100 {
            let tmp = dir.join(format!(".{name}.tfo-{}-{}.tmp", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
            match File::options().write(true).create_new(true).open(&tmp) {
                Ok(file) => return Ok(OutputFile { target, tmp: Some(tmp), file: Some(file) }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating a new file beside {}", target.display())),
            }
        }
        bail!("could not create a new file beside {}", target.display())
    }

    /// Opens `path` to be written as the run goes (truncated now), by the same symlink rule.
    pub(crate) fn in_place(path: &Path) -> anyhow::Result<OutputFile> {
        check_symlink(path)?;
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(OutputFile { target: path.to_path_buf(), tmp: None, file: Some(file) })
    }

    /// The file to write to.
    pub(crate) fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("an output file is open until it is committed")
    }

    /// Takes the file out (for a writer that owns it); `commit` still puts it in place.
    pub(crate) fn take_file(&mut self) -> File {
        self.file.take().expect("an output file is taken once")
    }

    /// Puts the output in place (everything written to it must be flushed by now).
    pub(crate) fn commit(mut self) -> anyhow::Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.flush()?;
        }
        if let Some(tmp) = self.tmp.take() {
            fs::rename(&tmp, &self.target).with_context(|| format!("putting {} in place", self.target.display()))?;
        }
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp); // not committed: the old file stays as it was
        }
    }
}

/// Whether `a` and `b` name one existing file (the same path, a symlink or a hard link).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tfo-output-{name}-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_old_file_stays_until_the_commit_and_no_temporary_is_left() {
        let d = dir("commit");
        let path = d.join("out.pcap");
        fs::write(&path, "keep me").unwrap();
        let mut out = OutputFile::create(&path).unwrap();
        out.file().write_all(b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "keep me", "nothing lost before the end");
        drop(out);
        assert_eq!(fs::read_to_string(&path).unwrap(), "keep me", "a dropped output changes nothing");
        let mut out = OutputFile::create(&path).unwrap();
        out.file().write_all(b"new").unwrap();
        out.commit().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1, "no temporary left");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_symlink_of_mine_is_followed_and_kept() {
        let d = dir("link");
        let real = d.join("real.svg");
        fs::write(&real, "old").unwrap();
        let link = d.join("link.svg");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut out = OutputFile::create(&link).unwrap();
        out.file().write_all(b"new").unwrap();
        out.commit().unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn hard_links_are_the_same_file() {
        let d = dir("same");
        let a = d.join("a");
        fs::write(&a, "x").unwrap();
        let b = d.join("b");
        fs::hard_link(&a, &b).unwrap();
        assert!(same_file(&a, &b));
        assert!(!same_file(&a, &d.join("c")));
        assert!(OutputFile::create(&d).is_err(), "a directory is not an output file");
        fs::remove_dir_all(&d).unwrap();
    }
}
