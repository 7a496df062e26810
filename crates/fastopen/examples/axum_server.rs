//! An axum service on a TFO listener, with no glue: each response says
//! whether the request's connection carried it in the SYN.
//!
//! Run: `cargo run -p fastopen --features axum --example axum_server [ADDR]`,
//! then `curl --tcp-fastopen http://127.0.0.1:8080/` twice (the second rides
//! in the SYN). Server TFO must be on: `sysctl -w net.ipv4.tcp_fastopen=3`.

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use fastopen::{ListenerBuilder, ServerTfo, TfoConnectInfo};

async fn hello(ConnectInfo(info): ConnectInfo<TfoConnectInfo>) -> String {
    format!("hello {}: {}\n", info.peer, info.outcome)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into()).parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = ListenerBuilder::new(addr).bind_tokio()?;
        let tfo = listener.tfo()?;
        if tfo.state != ServerTfo::On {
            eprintln!("warning: {}; serving plain TCP", tfo.state);
        }
        println!("listening on http://{}/", listener.local_addr()?);
        let app = Router::new().route("/", get(hello));
        axum::serve(listener, app.into_make_service_with_connect_info::<TfoConnectInfo>()).await?;
        Ok(())
    })
}
