//! The preload shim of `tfo wrap`: TCP Fast Open for a program that does not
//! ask for it. `tfo wrap` embeds this library and loads it into the program
//! with `LD_PRELOAD`; it is not meant to be used on its own.
//!
//! What it does, per socket (the settings come from `TFOKIT_WRAP`, see
//! [`fastopen::wrap::WrapConfig`]):
//! - **connect()** on a TCP socket sets `TCP_FASTOPEN_CONNECT` first. With a
//!   cookie cached the kernel defers the SYN to the first write, which then
//!   rides in it. A non-blocking connect still answers `EINPROGRESS`, and
//!   `getpeername()` answers with the peer while the SYN is deferred, so
//!   programs see what they would see without the shim.
//! - **A read before any write** (read, recv*, poll/select/epoll waiting for
//!   input, a read-only `fdopen`) on a deferred socket first starts the
//!   handshake with an empty send: a SYN with the cookie and no data. A
//!   program that reads first (a server that speaks first) never waits on a
//!   SYN that was never sent, and gets the greeting one round trip sooner.
//! - **listen()** on a TCP socket sets `TCP_FASTOPEN` with the queue length.
//! - **At each close** (and at exit for what is still open) one fixed-size
//!   record ([`fastopen::wrap::Record`]) goes to `tfo wrap` through an
//!   inherited pipe: `tcp_info`, the addresses, pid and process name.
//!
//! Rules the code keeps: nothing in a hook allocates or takes a lock (a hook
//! may run in a signal handler); libc's own functions are resolved once, at
//! load; `errno` is as libc left it; a program that sets TFO itself is left
//! alone. Every `unsafe` block of the workspace outside `fastopen::sys` is in
//! this crate, each with a SAFETY line.
#![allow(unsafe_code)]

mod fds;
pub mod hooks;
mod real;
mod report;
mod sys;

use std::sync::OnceLock;

use fastopen::wrap::{WrapConfig, CONFIG_ENV};

/// The settings, read once at load; `None` when `TFOKIT_WRAP` is missing or bad.
static CONFIG: OnceLock<Option<WrapConfig>> = OnceLock::new();

fn config() -> Option<&'static WrapConfig> {
    CONFIG.get_or_init(read_config).as_ref()
}

fn read_config() -> Option<WrapConfig> {
    let text = std::env::var(CONFIG_ENV).ok()?;
    WrapConfig::from_env(&text).ok()
}

/// Runs when the loader maps the library: resolves libc's functions, reads the
/// settings, and says hello to `tfo wrap` (so it knows the shim loaded).
extern "C" fn on_load() {
    real::resolve();
    let _ = real::fcntl();
    if let Some(config) = config() {
        report::open(config.report_fd);
        report::hello();
        // SAFETY: both handlers are plain functions without arguments that
        // neither allocate nor lock (they run around fork, as hooks may run
        // in signal handlers); registering them has no other precondition.
        unsafe { libc::pthread_atfork(Some(before_fork), None, Some(in_forked_child)) };
    }
}

/// Before fork(): every tracked socket is about to be shared with a child.
extern "C" fn before_fork() {
    fds::all_shared();
}

/// In fork()'s child: a new process id for its records.
extern "C" fn in_forked_child() {
    report::note_pid();
}

/// Runs at `exit()`: reports the connections still open.
extern "C" fn on_exit() {
    if config().is_some() {
        report::all_open();
    }
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

#[used]
#[link_section = ".fini_array"]
static ON_EXIT: extern "C" fn() = on_exit;
