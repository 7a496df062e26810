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
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    for attempt in 0..100u32 {
        let candidate = dir.join(format!(".{name}.{}.{nanos}.{attempt}.tmp", std::process::id()));
        match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&candidate) {
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
