//! Key files and secrets as the commands that take them (`serve`, `probe`,
//! `key`) read them: a warning when others can read them, the schedule a
//! secret derives.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use fastopen::keyfile::SecretFile;
use fastopen::KeySchedule;

/// Warns that a key file or secret (`what`) is readable by group or others.
pub(crate) fn warn_if_exposed(who: &str, what: &str, path: &Path, exposed_mode: Option<u32>) {
    if let Some(mode) = exposed_mode {
        errln!(
            "{who}: warning: {what} {} is readable by group or others (mode {mode:03o}); anyone who reads it can forge cookies: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
}

/// Reads the secret (warning when others can read it) and makes the schedule.
pub(crate) fn load_schedule(path: &Path, rotate: Duration) -> anyhow::Result<KeySchedule> {
    let secret = SecretFile::read(path)?;
    warn_if_exposed("tfo", "key secret", path, secret.exposed_mode);
    KeySchedule::new(&secret.bytes, rotate).with_context(|| format!("key secret {}", path.display()))
}
