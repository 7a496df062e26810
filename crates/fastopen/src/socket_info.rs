//! Reading a socket's `TCP_INFO`: the one kernel read that the client, the
//! listener and the confirmation wait share (the parsing is `tcp_info.rs`'s).

use std::os::fd::AsFd;

use crate::{sys, tcp_info, Error, Result};

/// Reads and parses `TCP_INFO` of any TCP socket (a std, tokio or socket2 one).
pub fn read_tcp_info(socket: &impl AsFd) -> Result<tcp_info::TcpInfo> {
    let (buf, len) = sys::tcp_info_bytes(socket.as_fd()).map_err(Error::io("reading TCP_INFO"))?;
    tcp_info::TcpInfo::parse(&buf[..len])
        .map_err(|_| Error::Proc { path: "getsockopt(TCP_INFO)", problem: "shorter than 8 bytes" })
}
