//! The engines behind the `tfo` CLI, as a library: no clap, no printing,
//! typed errors. The CLI parses, calls these, and renders what they return.
//!
//! - [`bench`](mod@bench): `tfo bench`'s runs across a lab: plain, warm and cold TFO
//!   (and TLS early data) interleaved, timed and counted; the link's
//!   accuracy and throughput.
//! - [`echo`]: the server of `tfo serve` and of the lab (`tfo bench`, `tfo
//!   demo`): raw echo or HTTP/1.1 over TFO, TLS optional, with limits and an
//!   early-data (replay) policy; one [`echo::ConnectionLog`] per connection.
//! - [`connection`]: what both share: a connection's log, limits and
//!   early-data policy, how it ends, the writes and HTTP answers.
//! - [`tls_serve`]: TLS 1.3 and 1.2 for it, 0-RTT accepted and judged by the
//!   same policy as data in the SYN.
//! - [`workers`]: one single-threaded runtime per core, each on its own
//!   listener of one SO_REUSEPORT group.
//! - [`linelog`]: log lines off the workers, batched, written by one thread;
//!   a stalled reader costs counted lines, never service.
//! - [`load`]: the load generator of `tfo load`: a new connection per
//!   request, TFO or plain, closed or open loop, HTTP(S) or echo, each reply
//!   checked, each TFO and TLS outcome counted.
//! - [`failure`]: why a request got no correct reply (one vocabulary for
//!   load and probe).
//! - [`fields`]: the report fields client engines share (a connection's
//!   TFO outcome, the TLS part), as `--json` names them.
//! - [`lab_server`]: that server on a thread inside a lab namespace, and
//!   HTTP requests of a given size for it.
//! - [`latency`]: the one latency series (hdrhistogram) and its percentiles.
//! - [`exchange`]: one request and its reply over a blocking TFO (or plain)
//!   connection: read while writing, one deadline, a bounded reply,
//!   cancellable (`tfo send`, `probe`, `bench`, `demo`).
//! - [`probe`]: `tfo probe`'s three connections to an address and the
//!   verdict; many probes paced politely; the fleet behind one address.
//! - [`watch`]: `tfo watch`'s collection: every TCP connection's TFO
//!   outcome once, with its process; the cookie cache.
//! - [`proxy`]: `tfo proxy`'s relay: the client's first bytes into the
//!   upstream's SYN, both ways with half-close, an idle timeout.
//! - [`greeting`]: a server that speaks first: a read-first connect, its
//!   greeting, the time to it in round trips.
//! - [`tls_client`]: TLS over TFO, blocking client: the ClientHello (and
//!   early data) as the SYN's data, trust, session tickets kept.
// No printing: what an engine has to say goes back to its caller.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod bench;
pub mod connection;
pub mod echo;
pub mod exchange;
pub mod failure;
pub mod fields;
pub mod greeting;
pub mod lab_server;
pub mod latency;
pub mod linelog;
pub mod load;
pub mod probe;
pub mod proxy;
pub mod tls_client;
pub mod tls_serve;
pub mod watch;
pub mod workers;

#[cfg(test)]
mod test_support;
