//! Keys without coordination (feature `key-schedule`): every server of a
//! fleet derives the key of each time period from one shared secret, so hosts
//! with the same secret and a sane clock agree without talking to each other
//! (the approach of tofurkey).
//!
//! The key of period `n` (periods of `rotate` since the Unix epoch) is
//! HKDF-SHA256 (RFC 5869) of the secret, with the salt
//! `"tfokit tcp fast open key"` and the period number (8 bytes, big-endian)
//! as info, cut to 16 bytes. The primary key is this period's. The backup is
//! the previous period's in the first half of a period and the next one's in the
//! second half, so a host whose clock is a little ahead or behind (by less than
//! half a period) still accepts the cookies of its neighbours.

use std::time::{Duration, SystemTime};

use crate::key::FastOpenKey;

/// The HKDF salt: names what the keys are for.
const SALT: &[u8] = b"tfokit tcp fast open key";

/// A secret that is too short, or a period that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadSchedule {
    /// The secret holds fewer than 16 bytes.
    #[error("the key secret holds {0} bytes; at least 16 are needed (e.g. `head -c 32 /dev/urandom | base64`)")]
    ShortSecret(usize),
    /// The rotation period is under one second.
    #[error("the rotation period must be at least 1 s")]
    ShortPeriod,
}

/// Derives the keys of each period from a secret.
#[derive(Clone)]
pub struct KeySchedule {
    secret: Vec<u8>,
    period: Duration,
}

impl std::fmt::Debug for KeySchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("KeySchedule").field("period", &self.period).finish_non_exhaustive()
    }
}

/// The keys of one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledKeys {
    /// The period number (time since the epoch / the rotation period).
    pub period: u64,
    /// This period's key: new cookies are made with it.
    pub primary: FastOpenKey,
    /// The neighbour period whose key is the backup (`period - 1` or `period + 1`).
    pub backup_period: u64,
    /// That period's key: its cookies are still accepted.
    pub backup: FastOpenKey,
    /// When (since the epoch) these keys change: the next half-period boundary.
    pub next_change: Duration,
}

impl KeySchedule {
    /// A schedule from `secret` (at least 16 bytes) rotating every `period`.
    pub fn new(secret: &[u8], period: Duration) -> Result<KeySchedule, BadSchedule> {
        if secret.len() < 16 {
            return Err(BadSchedule::ShortSecret(secret.len()));
        }
        if period < Duration::from_secs(1) {
            return Err(BadSchedule::ShortPeriod);
        }
        Ok(KeySchedule { secret: secret.to_vec(), period })
    }

    /// The rotation period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The key of period `n`.
    pub fn key_for(&self, n: u64) -> FastOpenKey {
        let mut key = [0u8; 16];
        hkdf::Hkdf::<sha2::Sha256>::new(Some(SALT), &self.secret)
            .expand(&n.to_be_bytes(), &mut key)
            .expect("16 bytes is a valid HKDF-SHA256 output length");
        FastOpenKey(key)
    }

    /// The keys at `since_epoch` (time since the Unix epoch).
    pub fn at(&self, since_epoch: Duration) -> ScheduledKeys {
        let period_ns = self.period.as_nanos();
        let now_ns = since_epoch.as_nanos();
        let period = (now_ns / period_ns) as u64;
        let into = now_ns % period_ns;
        let second_half = into * 2 >= period_ns;
        let backup_period = if second_half { period + 1 } else { period.saturating_sub(1) };
        let next_change_ns = period as u128 * period_ns + if second_half { period_ns } else { period_ns.div_ceil(2) };
        ScheduledKeys {
            period,
            primary: self.key_for(period),
            backup_period,
            backup: self.key_for(backup_period),
            // Whole seconds and the rest: u64 nanoseconds end in the year 2554.
            next_change: Duration::new(
                u64::try_from(next_change_ns / 1_000_000_000).unwrap_or(u64::MAX),
                (next_change_ns % 1_000_000_000) as u32,
            ),
        }
    }

    /// The keys now, by the system clock.
    pub fn now(&self) -> ScheduledKeys {
        self.at(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_same_secret_gives_the_same_keys_and_another_does_not() {
        let a = KeySchedule::new(b"0123456789abcdef-shared", HOUR).unwrap();
        let b = KeySchedule::new(b"0123456789abcdef-shared", HOUR).unwrap();
        let other = KeySchedule::new(b"0123456789abcdef-other!", HOUR).unwrap();
        let t = Duration::from_secs(1_790_000_000);
        assert_eq!(a.at(t), b.at(t));
        assert_ne!(a.at(t).primary, other.at(t).primary);
        assert_ne!(a.key_for(1), a.key_for(2));
    }

    #[test]
    fn hosts_on_either_side_of_a_boundary_accept_each_others_cookies() {
        let s = KeySchedule::new(&[7u8; 32], HOUR).unwrap();
        let boundary = Duration::from_secs(1_790_002_800); // a multiple of 3600
        let behind = s.at(boundary - Duration::from_secs(2)); // second half of n - 1
        let ahead = s.at(boundary + Duration::from_secs(2)); // first half of n
        assert_eq!(ahead.period, behind.period + 1);
        assert_eq!((behind.backup, ahead.backup), (ahead.primary, behind.primary));
        assert_eq!(behind.next_change, boundary);
        assert_eq!(ahead.next_change, boundary + HOUR / 2);
        // Far times: the next change is after the moment asked, not capped in 2554.
        let far = Duration::from_secs(253_402_300_799);
        assert!(s.at(far).next_change > far);
        // In the first half, the backup is the previous period's key.
        assert_eq!(ahead.backup_period, ahead.period - 1);
    }

    #[test]
    fn short_secrets_and_periods_are_refused_and_the_secret_is_never_printed() {
        assert_eq!(KeySchedule::new(b"short", HOUR).unwrap_err(), BadSchedule::ShortSecret(5));
        assert_eq!(KeySchedule::new(&[1; 16], Duration::from_millis(10)).unwrap_err(), BadSchedule::ShortPeriod);
        let s = KeySchedule::new(b"very secret text, 32 bytes long!", HOUR).unwrap();
        assert!(!format!("{s:?}").contains("secret text"));
    }

    /// RFC 5869 test case 1 through the same calls (guards the KDF's wiring).
    #[test]
    fn hkdf_matches_rfc_5869() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let mut okm = [0u8; 42];
        hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), &ikm).expand(&info, &mut okm).unwrap();
        assert_eq!(okm[..8], [0x3c, 0xb2, 0x5f, 0x25, 0xfa, 0xac, 0xd5, 0x7a]);
    }
}
