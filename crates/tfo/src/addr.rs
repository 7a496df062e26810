//! Parsing the addresses users type: `8000`, `127.0.0.1:8000`, `[::1]:8000`, `localhost:8000`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Parses a listen or connect address. A bare port means 127.0.0.1:PORT.
/// Host names are resolved (the first address wins).
pub(crate) fn parse(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Err(format!("{text:?} has no port; write {}", SocketAddr::new(ip, 8000)));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => text
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host:?} has no address")),
        _ => Err(format!(
            "{text:?} is not an address; use PORT, IP:PORT or [IPv6]:PORT (e.g. 8000, 127.0.0.1:8000, [::1]:8000)"
        )),
    }
}

/// Parses a server address to connect to: as [`parse`], and port 0 (which no
/// server listens on) is refused.
pub(crate) fn parse_peer(text: &str) -> Result<SocketAddr, String> {
    let addr = parse(text)?;
    if addr.port() == 0 {
        return Err(format!("{text:?}: port 0 is not a server's port; give the port it listens on"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("8000").unwrap(), "127.0.0.1:8000".parse().unwrap());
        assert_eq!(parse("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(parse("localhost:80").unwrap().port(), 80);
        assert!(parse("127.0.0.1").unwrap_err().contains("no port"));
        assert!(parse("127.0.0.1:99999").is_err());
        assert!(parse("nonsense").unwrap_err().contains("not an address"));
        assert!(parse("").is_err());
        assert!(parse(":80").is_err());
        assert!(parse_peer("127.0.0.1:0").unwrap_err().contains("port 0"));
        assert!(parse_peer("0").is_err());
        assert_eq!(parse("0").unwrap().port(), 0, "a server may listen on any free port");
    }
}
