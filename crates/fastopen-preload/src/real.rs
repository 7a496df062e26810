//! libc's own functions behind the ones the shim replaces, found with
//! `dlsym(RTLD_NEXT)` once, when the library loads (dlsym may allocate: it
//! must not run inside a hook).

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{
    c_int, c_uint, c_void, fd_set, nfds_t, pollfd, sigset_t, size_t, sockaddr, socklen_t, ssize_t, timespec, timeval,
};

macro_rules! real_fns {
    ($($name:ident : fn($($arg:ty),*) -> $ret:ty;)*) => {
        /// Addresses of libc's functions, 0 until resolved.
        #[allow(non_upper_case_globals)]
        mod slot {
            use std::sync::atomic::AtomicUsize;
            $(pub(super) static $name: AtomicUsize = AtomicUsize::new(0);)*
        }

        /// Resolves every function (at load; again lazily if a hook runs first).
        pub(crate) fn resolve() {
            $(lookup(&slot::$name, concat!(stringify!($name), "\0"));)*
        }

        $(
            /// libc's function of this name.
            pub(crate) fn $name() -> unsafe extern "C" fn($($arg),*) -> $ret {
                let mut addr = slot::$name.load(Ordering::Acquire);
                if addr == 0 {
                    addr = lookup(&slot::$name, concat!(stringify!($name), "\0"));
                }
                // SAFETY: `addr` is the non-zero address dlsym returned for the
                // symbol of this name, whose C signature is the one declared here.
                unsafe { std::mem::transmute::<usize, unsafe extern "C" fn($($arg),*) -> $ret>(addr) }
            }
        )*
    };
}

fn lookup(slot: &AtomicUsize, name: &str) -> usize {
    let name = CStr::from_bytes_with_nul(name.as_bytes()).expect("names end with NUL");
    // SAFETY: RTLD_NEXT with a NUL-terminated name is dlsym's documented use.
    let addr = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    if addr == 0 {
        // Without libc's function the program cannot go on; say which.
        let msg = b"tfo wrap: the preload shim found no libc function to forward to (is this glibc?)\n";
        // SAFETY: writes a static buffer of its own length to stderr.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        // SAFETY: abort is always safe to call.
        unsafe { libc::abort() };
    }
    slot.store(addr, Ordering::Release);
    addr
}

type Msghdr = libc::msghdr;
type Mmsghdr = libc::mmsghdr;
type Iovec = libc::iovec;
type EpollEvent = libc::epoll_event;

real_fns! {
    socket: fn(c_int, c_int, c_int) -> c_int;
    connect: fn(c_int, *const sockaddr, socklen_t) -> c_int;
    listen: fn(c_int, c_int) -> c_int;
    accept: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    accept4: fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int;
    setsockopt: fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int;
    getpeername: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    sendto: fn(c_int, *const c_void, size_t, c_int, *const sockaddr, socklen_t) -> ssize_t;
    sendmsg: fn(c_int, *const Msghdr, c_int) -> ssize_t;
    send: fn(c_int, *const c_void, size_t, c_int) -> ssize_t;
    close: fn(c_int) -> c_int;
    close_range: fn(c_uint, c_uint, c_int) -> c_int;
    dup: fn(c_int) -> c_int;
    dup2: fn(c_int, c_int) -> c_int;
    dup3: fn(c_int, c_int, c_int) -> c_int;
    read: fn(c_int, *mut c_void, size_t) -> ssize_t;
    readv: fn(c_int, *const Iovec, c_int) -> ssize_t;
    recv: fn(c_int, *mut c_void, size_t, c_int) -> ssize_t;
    recvfrom: fn(c_int, *mut c_void, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t;
    recvmsg: fn(c_int, *mut Msghdr, c_int) -> ssize_t;
    recvmmsg: fn(c_int, *mut Mmsghdr, c_uint, c_int, *mut timespec) -> c_int;
    __read_chk: fn(c_int, *mut c_void, size_t, size_t) -> ssize_t;
    __recv_chk: fn(c_int, *mut c_void, size_t, size_t, c_int) -> ssize_t;
    __recvfrom_chk: fn(c_int, *mut c_void, size_t, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t;
    poll: fn(*mut pollfd, nfds_t, c_int) -> c_int;
    ppoll: fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t) -> c_int;
    __poll_chk: fn(*mut pollfd, nfds_t, c_int, size_t) -> c_int;
    __ppoll_chk: fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t, size_t) -> c_int;
    select: fn(c_int, *mut fd_set, *mut fd_set, *mut fd_set, *mut timeval) -> c_int;
    pselect: fn(c_int, *mut fd_set, *mut fd_set, *mut fd_set, *const timespec, *const sigset_t) -> c_int;
    epoll_ctl: fn(c_int, c_int, c_int, *mut EpollEvent) -> c_int;
    epoll_wait: fn(c_int, *mut EpollEvent, c_int, c_int) -> c_int;
    epoll_pwait: fn(c_int, *mut EpollEvent, c_int, c_int, *const sigset_t) -> c_int;
    epoll_pwait2: fn(c_int, *mut EpollEvent, c_int, *const timespec, *const sigset_t) -> c_int;
    fdopen: fn(c_int, *const libc::c_char) -> *mut libc::FILE;
}

/// libc's `fcntl`, which is variadic (its third argument's type depends on the command).
pub(crate) fn fcntl() -> unsafe extern "C" fn(c_int, c_int, ...) -> c_int {
    static SLOT: AtomicUsize = AtomicUsize::new(0);
    let mut addr = SLOT.load(Ordering::Acquire);
    if addr == 0 {
        addr = lookup(&SLOT, "fcntl\0");
    }
    // SAFETY: the non-zero address dlsym returned for `fcntl`, declared with its C signature.
    unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(c_int, c_int, ...) -> c_int>(addr) }
}
