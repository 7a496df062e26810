//! What `tfo probe` is pointed at: targets as users write them (a name, an
//! IP, with or without a port), from the command line or a file, and every
//! address each one resolves to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;

/// A server to probe, as typed: `example.com`, `example.com:8443`,
/// `192.0.2.1:80`, `[2001:db8::1]:443`, `2001:db8::1` or a bare port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The text as the user wrote it (reports quote it).
    pub(crate) text: String,
    pub(crate) host: Host,
    /// `None`: the default port of the protocol (`--tls` 443, `--http` 80).
    pub(crate) port: Option<u16>,
    /// The interface of a link-local IPv6 address (`%lo`), 0 for none.
    pub(crate) scope: u32,
}

/// A target's host part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Which address families to probe (`-4`, `-6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Any,
    V4,
    V6,
}

impl Family {
    fn admits(self, addr: &SocketAddr) -> bool {
        match self {
            Family::Any => true,
            Family::V4 => addr.is_ipv4(),
            Family::V6 => addr.is_ipv6(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::Any => "any",
            Family::V4 => "IPv4 (-4)",
            Family::V6 => "IPv6 (-6)",
        }
    }
}

impl Target {
    /// Parses one target. A bare port means 127.0.0.1:PORT, as elsewhere in tfo.
    pub(crate) fn parse(text: &str) -> Result<Target, String> {
        let text = text.trim();
        let target = |host, port| Ok(Target { text: text.to_string(), host, port, scope: 0 });
        if text.is_empty() {
            return Err("an empty target; give a host name or an address".into());
        }
        if let Ok(port) = text.parse::<u16>() {
            return target(Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), Some(checked_port(text, port)?));
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return target(Host::Ip(addr.ip()), Some(checked_port(text, addr.port())?));
        }
        if let Ok(ip) = text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return target(Host::Ip(ip), None);
        }
        if let Some(scoped) = scoped_ipv6(text)? {
            return Ok(Target {
                text: text.to_string(),
                host: Host::Ip(IpAddr::V6(*scoped.ip())),
                port: Some(scoped.port()),
                scope: scoped.scope_id(),
            });
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{}: not a port (1 to 65535), nor a host", crate::out::shorten(text)));
        }
        if text.contains("://") {
            return Err(format!("{text:?} is a URL; give HOST or HOST:PORT (and --tls for https)"));
        }
        let (name, port) = match text.rsplit_once(':') {
            Some((name, port)) => {
                let port = port.parse::<u16>().map_err(|_| format!("{text:?}: {port:?} is not a port (1 to 65535)"))?;
                (name, Some(checked_port(text, port)?))
            }
            None => (text, None),
        };
        check_name(name).map_err(|why| format!("{} is not a target: {why}", crate::out::shorten(text)))?;
        target(Host::Name(name.to_ascii_lowercase()), port)
    }

    /// The name to present in TLS (SNI) and HTTP `Host`, if the target is a name.
    pub(crate) fn name(&self) -> Option<&str> {
        match &self.host {
            Host::Name(name) => Some(name),
            Host::Ip(_) => None,
        }
    }

    /// Every address of the target in `family`, in the resolver's order,
    /// without repeats. `default_port` fills a missing port.
    pub(crate) fn resolve(&self, default_port: Option<u16>, family: Family) -> Result<Vec<SocketAddr>, String> {
        let Some(port) = self.port.or(default_port) else {
            return Err(self.no_port());
        };
        let all: Vec<SocketAddr> = match &self.host {
            Host::Ip(IpAddr::V6(ip)) if self.scope != 0 => {
                vec![SocketAddr::V6(std::net::SocketAddrV6::new(*ip, port, 0, self.scope))]
            }
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Name(name) => {
                (name.as_str(), port).to_socket_addrs().map_err(|e| format!("cannot resolve {name:?}: {e}"))?.collect()
            }
        };
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for addr in all.into_iter().filter(|a| family.admits(a)) {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            return Err(format!("{:?} has no {} address", self.text, family.name()));
        }
        Ok(addrs)
    }
}

impl Target {
    /// Whether the target names its port (else --http, --tls or a default must).
    pub(crate) fn has_port(&self) -> bool {
        self.port.is_some()
    }

    /// "has no port", with the form to write (IPv6 in brackets).
    pub(crate) fn no_port(&self) -> String {
        let host = match &self.host {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => self.text.clone(),
        };
        format!(
            "{} has no port; write {host}:PORT (or use --http or --tls for 80 or 443)",
            crate::out::shorten(&self.text)
        )
    }
}

/// `[fe80::1%lo]:80` or `[fe80::1%2]:80`: a link-local address with its
/// interface (by name or index). `None` when `text` is not of that form.
fn scoped_ipv6(text: &str) -> Result<Option<std::net::SocketAddrV6>, String> {
    let Some(rest) = text.strip_prefix('[') else { return Ok(None) };
    let Some((inside, port)) = rest.rsplit_once("]:") else { return Ok(None) };
    let Some((addr, zone)) = inside.split_once('%') else { return Ok(None) };
    let Ok(ip) = addr.parse::<std::net::Ipv6Addr>() else { return Ok(None) };
    let port = port.parse::<u16>().map_err(|_| format!("{text:?}: {port:?} is not a port (1 to 65535)"))?;
    let port = checked_port(text, port)?;
    let scope = match zone.parse::<u32>() {
        Ok(index) => index,
        Err(_) => nix::net::if_::if_nametoindex(zone).map_err(|_| format!("{text:?}: no interface named {zone:?}"))?,
    };
    Ok(Some(std::net::SocketAddrV6::new(ip, port, 0, scope)))
}

fn checked_port(text: &str, port: u16) -> Result<u16, String> {
    if port == 0 {
        return Err(format!("{text:?}: port 0 is not a server's port; give the port it listens on"));
    }
    Ok(port)
}

/// A DNS name: labels of letters, digits, `-` and `_`, at most 253 bytes.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("a host name has 1 to 253 characters");
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each part of a host name between dots has 1 to 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err("a host name has only letters, digits, '-', '_' and dots (write IPv6 as [ADDR]:PORT)");
        }
    }
    Ok(())
}

/// The largest targets file read (about a million lines).
pub(crate) const TARGETS_FILE_LIMIT: u64 = 32 << 20;

/// Reads targets from a file: one per line; blank lines and `#` comments are
/// skipped. Every bad line is reported (up to 10), none probed.
pub(crate) fn read_file(path: &Path) -> Result<Vec<Target>, String> {
    let bytes = fastopen::keyfile::read_bounded(path, TARGETS_FILE_LIMIT)
        .map_err(|e| format!("cannot read the targets file {}: {e}", path.display()))?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("the targets file {} is not UTF-8 text", path.display()))?;
    let mut targets = Vec::new();
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match Target::parse(line) {
            Ok(t) => targets.push(t),
            Err(why) => bad.push(format!("{}:{}: {why}", path.display(), n + 1)),
        }
    }
    if !bad.is_empty() {
        let more = bad.len().saturating_sub(10);
        bad.truncate(10);
        if more > 0 {
            bad.push(format!("... and {more} more"));
        }
        return Err(format!("bad targets; nothing was probed:\n  {}", bad.join("\n  ")));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let t = |s: &str| Target::parse(s).unwrap();
        assert_eq!(t("8000").host, Host::Ip(Ipv4Addr::LOCALHOST.into()));
        assert_eq!(t("[::1]:443").port, Some(443));
        assert_eq!(t("::1").port, None);
        assert_eq!(t("[::1]").host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(t("Example.COM:8443").host, Host::Name("example.com".into()));
        assert_eq!(t("example.com").port, None);
        assert_eq!(t("192.0.2.1").name(), None);
        for bad in ["", "0", "a:0", "a:99999", "a:b", "https://example.com/", "a b", "a..b", "ex\u{0}ample", ":80"] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Target::parse(&"a".repeat(64)).unwrap_err().contains("63"));
    }

    #[test]
    fn resolving() {
        let t = |s: &str| Target::parse(s).unwrap();
        assert_eq!(t("192.0.2.1").resolve(Some(443), Family::Any).unwrap(), ["192.0.2.1:443".parse().unwrap()]);
        assert!(t("192.0.2.1").resolve(None, Family::Any).unwrap_err().contains("no port"));
        assert!(t("192.0.2.1:80").resolve(None, Family::V6).unwrap_err().contains("no IPv6"));
        let local = t("localhost:80").resolve(None, Family::V4).unwrap();
        assert!(local.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()), "{local:?}");
    }

    #[test]
    fn files_report_every_bad_line() {
        let dir = std::env::temp_dir().join(format!("tfo-targets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t");
        std::fs::write(&path, "# servers\n127.0.0.1:80\n\nexample.com # a name\nbad host\n[::1]:443\nx:0\n").unwrap();
        let err = read_file(&path).unwrap_err();
        assert!(err.contains(":5:") && err.contains(":7:") && !err.contains(":2:"), "{err}");
        std::fs::write(&path, "127.0.0.1:80\nexample.com # a name\n").unwrap();
        assert_eq!(read_file(&path).unwrap().len(), 2);
        assert!(read_file(&dir.join("absent")).unwrap_err().contains("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
