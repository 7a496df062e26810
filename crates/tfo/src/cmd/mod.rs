//! One module per subcommand, each owning its clap `Args` (whose doc comments
//! are the `--help`) and a `run` that returns the exit code.

pub(crate) mod bench;
pub(crate) mod demo;
mod demo_replay;
pub(crate) mod doctor;
pub(crate) mod install;
pub(crate) mod key;
pub(crate) mod lab;
pub(crate) mod load;
pub(crate) mod probe;
pub(crate) mod proxy;
pub(crate) mod send;
pub(crate) mod serve;
pub(crate) mod trace;
pub(crate) mod watch;
mod watch_metrics;
pub(crate) mod wrap;
