//! The lab: network namespaces that tfokit creates for itself, so that TFO can
//! be tried, tested and measured without touching the host's network settings.
//!
//! - [`netns`]: a private namespace for the calling thread (loopback only),
//!   and named namespaces (`ip netns`) removed on drop.
//! - [`sched`]: the link's decisions (loss, middleboxes, rate, delay, jitter,
//!   no overtaking), pure, on a clock passed in.
//! - [`link`]: the userspace link between two TUN devices: the I/O loop
//!   around the scheduler, counters, capture, failure reporting.
//! - [`middlebox`]: the named policies (strip-tfo, drop-syn-data, drop-tfo-syn,
//!   replay-syn-data).
//! - [`topology`]: [`Lab`], a client and a server namespace joined by the link.
//! - [`fleet`]: [`Fleet`], a client, a load balancer (iptables, DNAT or VIP)
//!   and N backend namespaces, with a replaying network between backends.
//! - [`parse`]: `100ms`, `1%`, `100mbit`.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod fleet;
pub mod link;
pub mod middlebox;
pub mod netns;
pub mod parse;
pub mod path;
pub mod sched;
pub mod stats;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topology;

pub use fleet::{BalancerMode, Fleet, FleetConfig};
pub use link::{CapturePoint, CapturedPacket, DirectionConfig, LinkCounters, PathConfig};
pub use middlebox::Middlebox;
pub use topology::{Lab, LabConfig, LabError};
