//! Netlink shared by `sock_diag` and `tcp_metrics`: the framing (pure, in
//! `wire.rs`) and one request/answer exchange over a socket.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys;

mod wire;
pub(crate) use wire::*;

/// Sends `request` on `fd` and hands each answer message (type, body) to
/// `on_message` until `NLMSG_DONE` or an acknowledgement; an error answer is
/// returned as one, and an answer that stalls for 5 s as a timeout.
pub(crate) fn exchange(
    fd: &OwnedFd,
    request: &[u8],
    what: &'static str,
    mut on_message: impl FnMut(u16, &[u8]),
) -> Result<()> {
    sys::netlink_send(fd.as_fd(), request).map_err(Error::io(what))?;
    // Answers to this request carry its sequence number; the rest of an
    // earlier dump that timed out does not, and is skipped.
    let seq = u32_ne(request, 8).unwrap_or(0);
    let mut buf = vec![0u8; 64 << 10];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let n = match left.is_zero() {
            true => 0,
            false => sys::netlink_recv(fd.as_fd(), &mut buf, Some(left)).map_err(Error::io(what))?,
        };
        if n == 0 {
            return Err(Error::Io { what, source: std::io::ErrorKind::TimedOut.into() });
        }
        for (kind, _, body) in messages_with_seq(&buf[..n]).filter(|(_, s, _)| *s == seq) {
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => match error_code(body) {
                    0 => return Ok(()),
                    errno => return Err(Error::Io { what, source: std::io::Error::from_raw_os_error(errno) }),
                },
                _ => on_message(kind, body),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_of_an_earlier_dump_is_not_taken_for_this_answer() {
        let (ours, kernel) = std::os::unix::net::UnixDatagram::pair().unwrap();
        // Left over from a dump (seq 1) that timed out, then this request's (seq 2) answer.
        let mut stale = request(20, 0, 1, b"old!");
        stale.extend(request(NLMSG_DONE, 0, 1, b""));
        kernel.send(&stale).unwrap();
        let mut answer = request(20, 0, 2, b"new!");
        answer.extend(request(NLMSG_DONE, 0, 2, b""));
        kernel.send(&answer).unwrap();
        let mut seen = Vec::new();
        exchange(&OwnedFd::from(ours), &request(20, 0, 2, b""), "test", |_, body| seen.push(body.to_vec())).unwrap();
        assert_eq!(seen, [b"new!".to_vec()]);
    }
}
