//! Key files: where a server's TFO keys live on disk, read and replaced safely.
//!
//! A key file holds one key, or `primary,backup`, in either text form of
//! [`FastOpenKey::parse`]. It is a secret, so:
//! - errors name the file and what is wrong, never its content;
//! - a key anyone could guess (all zeros, one byte or a short pattern
//!   repeated) is refused: cookies made with it could be forged;
//! - [`KeyFile::read`] reports a file that group or others can read
//!   ([`KeyFile::exposed_mode`]), for the caller to warn about;
//! - [`write()`] replaces the file atomically with mode 0600: a new file with a
//!   unique name is created (never an existing one, so no unrelated
//!   `NAME.tmp` is touched) in the same directory as the real file, then
//!   renamed over it. A symlink is followed, so the file it points to is
//!   replaced and the link stays (as Kubernetes-style `..data` links expect).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::key::{BadKey, FastOpenKey};

/// What went wrong with a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("{action} key file {}", path.display())]
    Io {
        /// "reading", "writing", ...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file holds a key anyone could guess (all bytes equal, all zeros
    /// included, or a short pattern repeated): cookies made with it can be forged.
    #[error(
        "key file {} holds a key anyone could guess (all bytes equal, or a pattern of up to 4 bytes repeated): cookies made with it can be forged; put a random key there",
        path.display()
    )]
    Degenerate {
        /// The file.
        path: PathBuf,
    },
    /// The secret file's secret is one byte, or a pattern of up to 4 bytes, repeated.
    #[error("secret file {} holds a secret anyone could guess (a pattern of up to 4 bytes repeated); put random bytes there", path.display())]
    DegenerateSecret {
        /// The file.
        path: PathBuf,
    },
    /// The file does not hold a key (its content is not repeated).
    #[error("key file {} does not hold a valid key", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: BadKey,
    },
}

/// The most bytes a key file or a secret file may hold.
pub const KEY_FILE_LIMIT: u64 = 4096;

/// Reads a small file someone named: a regular file only (a FIFO, a device
/// such as `/dev/zero` or a directory is refused before any read, so nothing
/// blocks or reads without end), at most `limit` bytes (a longer file is an
/// error of kind `InvalidData`: nothing is cut silently). Symlinks are followed.
/// The library reads key and secret files with it; a caller may read its own
/// small files (target lists, CA files) the same way.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, a device or a directory is not read)",
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {limit} bytes, the most read")));
    }
    Ok(bytes)
}

/// The keys read from a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyFile {
    /// The primary key: new cookies are made with it.
    pub primary: FastOpenKey,
    /// The backup key: cookies made with it are still accepted.
    pub backup: Option<FastOpenKey>,
    /// The file's permission bits when group or others may read it (e.g.
    /// `0o644`); `None` when only the owner can.
    pub exposed_mode: Option<u32>,
}

impl KeyFile {
    /// Reads and parses a key file (following symlinks).
    pub fn read(path: &Path) -> Result<KeyFile, KeyFileError> {
        let io_err = |action| move |source| KeyFileError::Io { action, path: path.to_path_buf(), source };
        let mode = fs::metadata(path).map_err(io_err("reading"))?.permissions().mode() & 0o777;
        let bytes = read_bounded(path, KEY_FILE_LIMIT).map_err(io_err("reading"))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| KeyFileError::Invalid { path: path.to_path_buf(), source: BadKey("it is not text") })?;
        let (primary, backup) = FastOpenKey::parse_pair(&text)
            .map_err(|source| KeyFileError::Invalid { path: path.to_path_buf(), source })?;
        if primary.is_degenerate() || backup.is_some_and(|b| b.is_degenerate()) {
            return Err(KeyFileError::Degenerate { path: path.to_path_buf() });
        }
        Ok(KeyFile { primary, backup, exposed_mode: (mode & 0o077 != 0).then_some(mode) })
    }
}

/// A shared secret read from a file (for a key schedule): its bytes, with
/// surrounding whitespace (a trailing newline) removed.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecretFile {
    /// The secret.
    pub bytes: Vec<u8>,
    /// As [`KeyFile::exposed_mode`].
    pub exposed_mode: Option<u32>,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile").field("len", &self.bytes.len()).field("exposed_mode", &self.exposed_mode).finish()
    }
}

impl SecretFile {
    /// Reads a secret file (following symlinks).
    pub fn read(path: &Path) -> Result<SecretFile, KeyFileError> {
        let io_err = |source| KeyFileError::Io { action: "reading", path: path.to_path_buf(), source };
        let mode = fs::metadata(path).map_err(io_err)?.permissions().mode() & 0o777;
        let bytes = read_bounded(path, KEY_FILE_LIMIT).map_err(io_err)?;
        let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
        let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
        let secret = &bytes[start..end];
        if !secret.is_empty() && crate::key::is_degenerate(secret) {
            return Err(KeyFileError::DegenerateSecret { path: path.to_path_buf() });
        }
        Ok(SecretFile { bytes: secret.to_vec(), exposed_mode: (mode & 0o077 != 0).then_some(mode) })
    }
}

/// Replaces the key file at `path` with `primary` (and `backup`), mode 0600,
/// atomically (see the module docs). Returns the file actually written (the
/// target of a symlink).
pub fn write(path: &Path, primary: &FastOpenKey, backup: Option<&FastOpenKey>) -> Result<PathBuf, KeyFileError> {
    let target = resolve(path).map_err(|source| KeyFileError::Io { action: "resolving", path: path.into(), source })?;
    let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "key".into());
    let mut text = primary.to_string();
    if let Some(b) = backup {
        text.push(',');
        text.push_str(&b.to_string());
    }
    text.push('\n');
    let (tmp_path, mut tmp) = create_unique(dir, &name).map_err(|source| KeyFileError::Io {
        action: "creating a new file beside",
        path: target.clone(),
        source,
    })?;
    let written =
        tmp.write_all(text.as_bytes()).and_then(|()| tmp.sync_all()).and_then(|()| fs::rename(&tmp_path, &target));
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp_path);
        return Err(KeyFileError::Io { action: "writing", path: target, source });
    }
    Ok(target)
}

/// What [`rotate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rotated {
    /// The file written (the target of a symlink).
    pub written: PathBuf,
    /// The primary key before the rotation, now the backup.
    pub old_primary: FastOpenKey,
}

/// Rotates the key file at `path`: `new_primary` becomes the primary and the
/// old primary the backup, safely against everything else touching the file:
/// - the path is resolved once and its directory held open; the file is
///   opened, locked and replaced through that directory (`/proc/self/fd/N/NAME`),
///   so a symlink swapped into the path meanwhile cannot redirect the write;
///   the name itself is opened without following a symlink;
/// - an exclusive `flock` on the file serializes rotations: one that waited
///   for the lock finds the file replaced and starts again on the new one, so
///   no rotation's key is lost;
/// - the new file keeps the old one's owner, group and mode (a server running
///   as another user or group can still read it), less any access for others:
///   a key everyone can read is a leak, and a rotation does not carry it on.
pub fn rotate(path: &Path, new_primary: &FastOpenKey) -> Result<Rotated, KeyFileError> {
    if new_primary.is_degenerate() {
        return Err(KeyFileError::Degenerate { path: path.into() });
    }
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyFileError::Io { action, path, source }
    };
    let target = resolve(path).map_err(io("resolving", path))?;
    let dir_path = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir_path)
        .map_err(io("opening the directory of", &target))?;
    use std::os::fd::AsRawFd;
    let in_dir = |n: &str| PathBuf::from(format!("/proc/self/fd/{}/{n}", dir.as_raw_fd()));
    for _ in 0..100 {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(in_dir(&name))
            .map_err(io("opening", &target))?;
        let meta = file.metadata().map_err(io("reading", &target))?;
        if !meta.is_file() {
            let source = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
            return Err(KeyFileError::Io { action: "reading", path: target, source });
        }
        file.lock().map_err(io("locking", &target))?;
        // Another rotation may have replaced the file while we waited: start again on the new one.
        use std::os::unix::fs::MetadataExt;
        let now = fs::symlink_metadata(in_dir(&name)).map_err(io("reading", &target))?;
        if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
            continue;
        }
        let mut bytes = Vec::new();
        (&file).take(KEY_FILE_LIMIT + 1).read_to_end(&mut bytes).map_err(io("reading", &target))?;
        if bytes.len() as u64 > KEY_FILE_LIMIT {
            let source = io::Error::new(io::ErrorKind::InvalidData, format!("larger than {KEY_FILE_LIMIT} bytes"));
            return Err(KeyFileError::Io { action: "reading", path: target, source });
        }
        let invalid = |source| KeyFileError::Invalid { path: target.clone(), source };
        let text = String::from_utf8(bytes).map_err(|_| invalid(BadKey("it is not text")))?;
        let (old_primary, old_backup) = FastOpenKey::parse_pair(&text).map_err(invalid)?;
        if old_primary.is_degenerate() || old_backup.is_some_and(|b| b.is_degenerate()) {
            return Err(KeyFileError::Degenerate { path: target });
        }
        let text = format!("{new_primary},{old_primary}\n");
        let (tmp_name, mut tmp) = create_unique_with(&name, |candidate| {
            fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(in_dir(candidate))
        })
        .map_err(io("creating a new file beside", &target))?;
        let written = std::os::unix::fs::fchown(&tmp, Some(meta.uid()), Some(meta.gid()))
            .and_then(|()| tmp.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7770)))
            .and_then(|()| tmp.write_all(text.as_bytes()))
            .and_then(|()| tmp.sync_all())
            .and_then(|()| fs::rename(in_dir(&tmp_name), in_dir(&name)))
            .and_then(|()| dir.sync_all());
        if let Err(source) = written {
            let _ = fs::remove_file(in_dir(&tmp_name));
            return Err(KeyFileError::Io { action: "writing", path: target, source });
        }
        return Ok(Rotated { written: target, old_primary });
    }
    let source = io::Error::other("the file kept being replaced while waiting for its lock");
    Err(KeyFileError::Io { action: "rotating", path: target, source })
}

/// The file a path names, through any symlinks (the path itself if it does not exist yet).
fn resolve(path: &Path) -> io::Result<PathBuf> {
    match fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(path).is_err() => Ok(path.to_path_buf()),
        Err(e) => Err(e),
    }
}

/// Creates `.NAME.PID.N.tmp` in `dir` with `O_EXCL` and mode 0600.
fn create_unique(dir: &Path, name: &str) -> io::Result<(PathBuf, fs::File)> {
    let (tmp_name, file) = create_unique_with(name, |candidate| {
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.join(candidate))
    })?;
    Ok((dir.join(tmp_name), file))
}

/// Tries `.NAME.PID.NANOS.N.tmp` names with `create` (which must fail with
/// `AlreadyExists` on a taken one) until one is free; returns its name.
fn create_unique_with(name: &str, create: impl Fn(&str) -> io::Result<fs::File>) -> io::Result<(String, fs::File)> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    for attempt in 0..100u32 {
        let candidate = format!(".{name}.{}.{nanos}.{attempt}.tmp", std::process::id());
        match create(&candidate) {
            Ok(f) => return Ok((candidate, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key that is not degenerate.
    fn k(n: u8) -> FastOpenKey {
        FastOpenKey(std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(n)))
    }

    #[test]
    fn a_guessable_key_or_secret_is_refused() {
        let dir = std::env::temp_dir().join(format!("fastopen-keyfile-weak-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("zero.key");
        fs::write(&path, "00000000000000000000000000000000\n").unwrap();
        assert!(matches!(KeyFile::read(&path), Err(KeyFileError::Degenerate { .. })));
        fs::write(&path, format!("{},{}\n", k(1), FastOpenKey([7; 16]))).unwrap();
        assert!(matches!(KeyFile::read(&path), Err(KeyFileError::Degenerate { .. })), "a weak backup too");
        fs::write(&path, format!("{}\n", k(1))).unwrap();
        assert!(KeyFile::read(&path).is_ok());
        fs::write(&path, "abcdabcdabcdabcdabcdabcdabcdabcd\n").unwrap();
        assert!(matches!(SecretFile::read(&path), Err(KeyFileError::DegenerateSecret { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }

    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fastopen-keyfile-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn written_0600_atomically_without_touching_neighbours() {
        let dir = scratch("mode");
        let path = dir.join("tfo.key");
        fs::write(&path, "00112233445566778899aabbccddeeff\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(KeyFile::read(&path).unwrap().exposed_mode, Some(0o644));
        let unrelated = dir.join("tfo.tmp");
        fs::write(&unrelated, "mine").unwrap();
        write(&path, &k(1), Some(&k(2))).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&unrelated).unwrap(), "mine");
        let read = KeyFile::read(&path).unwrap();
        assert_eq!((read.primary, read.backup, read.exposed_mode), (k(1), Some(k(2)), None));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2, "no temporary file left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_is_followed_and_kept() {
        let dir = scratch("link");
        fs::create_dir_all(dir.join("data")).unwrap();
        let real = dir.join("data/key");
        fs::write(&real, "00112233445566778899aabbccddeeff").unwrap();
        let link = dir.join("tfo.key");
        std::os::unix::fs::symlink("data/key", &link).unwrap();
        let written = write(&link, &k(3), None).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
        assert_eq!(written, fs::canonicalize(&real).unwrap());
        assert_eq!(KeyFile::read(&link).unwrap().primary, k(3));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_keeps_owner_and_mode_and_loses_no_key_under_concurrency() {
        use std::os::unix::fs::MetadataExt;
        let dir = scratch("rotate-concurrent");
        let path = dir.join("tfo.key");
        fs::write(&path, format!("{}\n", k(1))).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let owner = (65534, 65534); // nobody (root runs the tests; elsewhere the chown is skipped)
        let chowned = std::os::unix::fs::chown(&path, Some(owner.0), Some(owner.1)).is_ok();
        let keys: Vec<FastOpenKey> =
            (0..20u8).map(|i| FastOpenKey(std::array::from_fn(|j| i.wrapping_mul(31) ^ j as u8 ^ 0x5a))).collect();
        let olds: Vec<FastOpenKey> = std::thread::scope(|s| {
            let handles: Vec<_> = keys
                .iter()
                .map(|key| {
                    let path = &path;
                    s.spawn(move || rotate(path, key).unwrap().old_primary)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o640, "mode kept");
        if chowned {
            assert_eq!((meta.uid(), meta.gid()), owner, "owner kept");
        }
        // Twenty rotations, one after the other: the last primary's backup is
        // the one before; every key was primary once (none lost).
        let last = KeyFile::read(&path).unwrap();
        assert!(keys.contains(&last.primary));
        // Each rotation replaced a different primary: k(1), then each new key
        // but the last. A lost update shows as one old primary seen twice.
        let mut seen: Vec<FastOpenKey> = olds.clone();
        seen.push(last.primary);
        seen.sort_by_key(|k| k.0);
        seen.dedup();
        assert_eq!(seen.len(), 21, "every key was primary once, in a chain");
        assert!(keys.contains(&last.backup.unwrap()), "the backup is a rotated key, not a lost-update leftover");
        let leftovers: Vec<_> =
            fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name() != "tfo.key").collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn rotation_writes_through_the_directory_it_resolved_not_a_swapped_path() {
        let dir = scratch("rotate-swap");
        let real = dir.join("real");
        fs::create_dir_all(&real).unwrap();
        fs::write(real.join("tfo.key"), format!("{}\n", k(1))).unwrap();
        // The name itself a symlink to a file elsewhere: it is not followed.
        let victim = dir.join("victim");
        fs::write(&victim, "precious").unwrap();
        let rotated = rotate(&real.join("tfo.key"), &k(2)).unwrap();
        assert_eq!(rotated.old_primary, k(1));
        fs::remove_file(real.join("tfo.key")).unwrap();
        std::os::unix::fs::symlink(&victim, real.join("tfo.key")).unwrap();
        // Resolving follows the link to the victim itself, which is no key file.
        assert!(rotate(&real.join("tfo.key"), &k(3)).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn a_broken_key_file_error_names_the_file_not_the_secret() {
        let dir = scratch("broken");
        let path = dir.join("tfo.key");
        fs::write(&path, "0011223344556677SECRET99aabbccdd").unwrap();
        let err = KeyFile::read(&path).unwrap_err();
        let text = format!("{err} {:?}", std::error::Error::source(&err).map(|s| s.to_string()));
        assert!(text.contains("tfo.key") && !text.contains("SECRET") && !text.contains("00112233"), "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
