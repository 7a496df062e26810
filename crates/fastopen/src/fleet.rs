//! Verdicts on a fleet behind one address (`tfo probe --fleet`): from rounds
//! of "ask for a fresh cookie, then send data in the SYN with it", how many
//! distinct cookies the address gives, how much SYN data it accepts, and why
//! backends disagree. A cookie is SipHash(key, client ‖ server address as the
//! server sees it), so backends disagree when their keys differ, or when each
//! sees its own address (DNAT) even with one key; given the key, each cookie
//! can be traced to the address it was made for. Pure functions, tested on
//! fixed inputs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::key::FastOpenKey;

/// One round of a fleet probe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FleetRound {
    /// The cookie a fresh cookie request got (`None`: none came back).
    pub cookie: Option<Vec<u8>>,
    /// Whether the next connection's SYN data, with that cookie, was accepted.
    pub data_accepted: bool,
    /// The cookie cached after that connection: a server that refuses a
    /// cookie sends its own in the SYN-ACK, so behind a balancer this is
    /// often another backend's.
    pub cookie_after: Option<Vec<u8>>,
}

/// What the rounds say about the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum FleetVerdict {
    /// One cookie, and every SYN's data accepted.
    Healthy,
    /// One cookie, but some SYN data refused: a key rotation in progress, a
    /// backend whose TFO queue is full or off, or one with another key that
    /// gives no cookies.
    CookiesRefused,
    /// Several cookies, cause unknown: different keys, or DNAT (give the key).
    BackendsDisagree,
    /// Several cookies, and some are not made with the given key: backends
    /// have different keys.
    DifferentKeys,
    /// Several cookies, all made with the given key for different server
    /// addresses: a DNAT balancer, each backend seeing its own address.
    Dnat,
    /// Several cookies for the same address, made with the given primary
    /// and backup keys: a rotation under way, some backends on the new key
    /// and some on the old.
    MidRotation,
    /// No cookie came back at all.
    NoCookie,
}

impl FleetVerdict {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FleetVerdict::Healthy => "healthy",
            FleetVerdict::CookiesRefused => "cookies_refused",
            FleetVerdict::BackendsDisagree => "backends_disagree",
            FleetVerdict::DifferentKeys => "different_keys",
            FleetVerdict::Dnat => "dnat",
            FleetVerdict::MidRotation => "mid_rotation",
            FleetVerdict::NoCookie => "no_cookie",
        }
    }

    /// What it means and what to do.
    pub fn explain(self) -> &'static str {
        match self {
            FleetVerdict::Healthy => "one cookie for the whole address, and every SYN's data accepted: TFO works across the fleet",
            FleetVerdict::CookiesRefused => "one cookie, but some SYN data was refused: a key rotation in progress, or a backend with TFO off, a full TFO queue, or another key",
            FleetVerdict::BackendsDisagree => "the address gives several cookies, so a client's cookie fails on other backends (silent fallback): the backends have different keys, or each sees its own address behind DNAT; --key-file tells which",
            FleetVerdict::DifferentKeys => "the backends have different keys: share one key (or one --key-secret) across the fleet",
            FleetVerdict::Dnat => "one key, but each backend sees its own address (DNAT), so each makes its own cookie: TFO across the fleet needs every backend to see the same address (a VIP they own: direct server return, anycast)",
            FleetVerdict::MidRotation => "the backends are mid-rotation: some make cookies with the new key and some with the old, so a cookie made with the new key is refused by a backend without it (the old one still works where it is the backup): finish the rotation everywhere, and roll a new key out as backup first, then as primary",
            FleetVerdict::NoCookie => "no cookie came back: TFO is off at this address, or the path strips the option (see `tfo probe` without --fleet)",
        }
    }
}

impl fmt::Display for FleetVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One distinct cookie, how often it came, and the server address and key it
/// was made for (with the given keys), if one of the candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenCookie {
    /// The cookie's bytes.
    pub cookie: Vec<u8>,
    /// How many times it was seen (a round sees one or two cookies).
    pub rounds: usize,
    /// The candidate address the key makes this cookie for (`None`: none, or no key given).
    pub made_for: Option<IpAddr>,
    /// Which of the given keys made it: 0 the primary, 1 the backup.
    pub made_with: Option<usize>,
}

/// The fleet's diagnosis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetDiagnosis {
    /// The verdict.
    pub verdict: FleetVerdict,
    /// The distinct cookies, most frequent first.
    pub cookies: Vec<SeenCookie>,
    /// Rounds whose SYN data was accepted.
    pub accepted: usize,
    /// Rounds in all.
    pub rounds: usize,
}

/// The keys to trace cookies with: the server's keys, the client's address
/// as the servers see it, and the server addresses to try (the probed one first).
#[derive(Debug, Clone)]
pub struct CookieOrigins<'a> {
    /// The keys (primary and backup).
    pub keys: &'a [FastOpenKey],
    /// The client's address.
    pub client: IpAddr,
    /// Server addresses a backend may see.
    pub candidates: &'a [IpAddr],
}

impl CookieOrigins<'_> {
    /// The candidate address and the key (its index) that make `cookie`.
    fn origin(&self, cookie: &[u8]) -> Option<(IpAddr, usize)> {
        self.candidates.iter().find_map(|&server| {
            let key = self.keys.iter().position(|k| k.cookie(self.client, server).is_some_and(|c| c[..] == *cookie))?;
            Some((server, key))
        })
    }
}

/// The verdict on `rounds`, tracing cookies with `origins` if given.
pub fn diagnose_fleet(rounds: &[FleetRound], origins: Option<&CookieOrigins<'_>>) -> FleetDiagnosis {
    let mut counts: BTreeMap<&[u8], usize> = BTreeMap::new();
    for round in rounds {
        let after = round.cookie_after.as_deref().filter(|after| Some(*after) != round.cookie.as_deref());
        for cookie in round.cookie.as_deref().into_iter().chain(after) {
            *counts.entry(cookie).or_default() += 1;
        }
    }
    let mut cookies: Vec<SeenCookie> = counts
        .into_iter()
        .map(|(cookie, n)| {
            let origin = origins.and_then(|o| o.origin(cookie));
            SeenCookie {
                cookie: cookie.to_vec(),
                rounds: n,
                made_for: origin.map(|o| o.0),
                made_with: origin.map(|o| o.1),
            }
        })
        .collect();
    cookies.sort_by_key(|c| std::cmp::Reverse(c.rounds));
    let accepted = rounds.iter().filter(|r| r.data_accepted).count();
    let verdict = match cookies.len() {
        0 => FleetVerdict::NoCookie,
        1 if accepted == rounds.len() => FleetVerdict::Healthy,
        1 => FleetVerdict::CookiesRefused,
        _ if origins.is_none() => FleetVerdict::BackendsDisagree,
        _ if cookies.iter().any(|c| c.made_for.is_none()) => FleetVerdict::DifferentKeys,
        _ if cookies.iter().all(|c| c.made_for == cookies[0].made_for) => FleetVerdict::MidRotation,
        _ => FleetVerdict::Dnat,
    };
    FleetDiagnosis { verdict, cookies, accepted, rounds: rounds.len() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(cookie: Option<[u8; 8]>, data_accepted: bool) -> FleetRound {
        FleetRound { cookie: cookie.map(|c| c.to_vec()), data_accepted, cookie_after: cookie.map(|c| c.to_vec()) }
    }

    #[test]
    fn each_verdict_from_its_rounds() {
        let key = FastOpenKey([7; 16]);
        let other = FastOpenKey([9; 16]);
        let client: IpAddr = "198.18.1.2".parse().unwrap();
        let (vip, b0, b1): (IpAddr, IpAddr, IpAddr) =
            ("198.19.0.1".parse().unwrap(), "198.18.16.2".parse().unwrap(), "198.18.17.2".parse().unwrap());
        let cookie = |k: &FastOpenKey, server| k.cookie(client, server);
        let origins = CookieOrigins { keys: &[key], client, candidates: &[vip, b0, b1] };

        let healthy = [round(cookie(&key, vip), true), round(cookie(&key, vip), true)];
        let d = diagnose_fleet(&healthy, Some(&origins));
        assert_eq!((d.verdict, d.cookies.len(), d.accepted), (FleetVerdict::Healthy, 1, 2));
        assert_eq!(d.cookies[0].made_for, Some(vip));

        let refused = [round(cookie(&key, vip), true), round(cookie(&key, vip), false)];
        assert_eq!(diagnose_fleet(&refused, None).verdict, FleetVerdict::CookiesRefused);

        let keys_differ = [round(cookie(&key, vip), false), round(cookie(&other, vip), false)];
        assert_eq!(diagnose_fleet(&keys_differ, None).verdict, FleetVerdict::BackendsDisagree);
        assert_eq!(diagnose_fleet(&keys_differ, Some(&origins)).verdict, FleetVerdict::DifferentKeys);

        let dnat = [round(cookie(&key, b0), false), round(cookie(&key, b1), false), round(cookie(&key, b0), false)];
        let d = diagnose_fleet(&dnat, Some(&origins));
        assert_eq!(d.verdict, FleetVerdict::Dnat);
        assert_eq!((d.cookies[0].rounds, d.cookies[0].made_for, d.cookies[1].made_for), (2, Some(b0), Some(b1)));

        // Round robin pins every cookie request to one backend; the refused
        // data SYN brings the other backend's cookie back.
        let pinned: Vec<FleetRound> = (0..3)
            .map(|_| FleetRound {
                cookie: cookie(&key, vip).map(|c| c.to_vec()),
                data_accepted: false,
                cookie_after: cookie(&other, vip).map(|c| c.to_vec()),
            })
            .collect();
        let d = diagnose_fleet(&pinned, Some(&origins));
        assert_eq!((d.verdict, d.cookies.len(), d.cookies[0].rounds), (FleetVerdict::DifferentKeys, 2, 3));

        // Mid-rotation: cookie requests pinned to a backend on the new key
        // (primary `key`, backup `other`), data refused by one still on the old
        // key, which answers with its own cookie; or the reverse, where the old
        // cookie is accepted through the backup and the new one comes back.
        let origins_rotating = CookieOrigins { keys: &[key, other], client, candidates: &[vip] };
        for (asked, accepted, after) in [(&key, false, &other), (&other, true, &key)] {
            let rounds: Vec<FleetRound> = (0..3)
                .map(|_| FleetRound {
                    cookie: cookie(asked, vip).map(|c| c.to_vec()),
                    data_accepted: accepted,
                    cookie_after: cookie(after, vip).map(|c| c.to_vec()),
                })
                .collect();
            let d = diagnose_fleet(&rounds, Some(&origins_rotating));
            assert_eq!(d.verdict, FleetVerdict::MidRotation, "{d:?}");
            let mut keys: Vec<Option<usize>> = d.cookies.iter().map(|c| c.made_with).collect();
            keys.sort();
            assert_eq!(keys, [Some(0), Some(1)]);
        }
        // Without the old key in the file, the old cookie cannot be traced: different keys.
        let rounds = [round(cookie(&key, vip), false), round(cookie(&other, vip), false)];
        assert_eq!(diagnose_fleet(&rounds, Some(&origins)).verdict, FleetVerdict::DifferentKeys);

        assert_eq!(diagnose_fleet(&[round(None, false)], None).verdict, FleetVerdict::NoCookie);
        assert_eq!(diagnose_fleet(&[], None).verdict, FleetVerdict::NoCookie);
    }
}
