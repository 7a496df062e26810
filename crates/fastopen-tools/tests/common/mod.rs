//! What the engine tests share: the server engine on a thread of its own.

use std::sync::Arc;

use fastopen::ListenerBuilder;
use fastopen_tools::echo::{serve, Budget, Limits, Protocol, Service};

/// Serves `connections` connections with `limits` on 127.0.0.1 (TFO on) on
/// a thread; its address and the thread, which ends after them.
pub(crate) fn server(
    protocol: Protocol,
    limits: Limits,
    connections: u64,
) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listener = rt.block_on(async { ListenerBuilder::new("127.0.0.1:0".parse().unwrap()).bind_tokio() }).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let service = Service { protocol, tls: None, limits, log_confirmation: true };
        rt.block_on(serve(
            Arc::new(listener),
            &service,
            &Budget::new(Some(connections)),
            std::future::pending(),
            |_| {},
            Arc::new(|_| {}),
        ));
    });
    (addr, handle)
}
