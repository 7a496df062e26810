//! hyper-util's client with the TFO connector: each new connection carries
//! the request in the SYN once a cookie is cached, and each response says so.
//!
//! Run: `cargo run -p fastopen --features hyper --example hyper_client [URL]`
//! (default http://127.0.0.1:8080/, the axum_server example).

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url: hyper::Uri = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8080/".into()).parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0) // a new connection per request, to show TFO each time
            .build::<_, Empty<bytes::Bytes>>(fastopen::hyper::Connector::new());
        for _ in 0..3 {
            let response = client.get(url.clone()).await?;
            let outcome = response.extensions().get::<fastopen::hyper::ConnectionOutcome>().cloned();
            let body = response.into_body().collect().await?.to_bytes();
            print!("{}", String::from_utf8_lossy(&body));
            match outcome.as_ref().and_then(|o| o.get()) {
                Some(o) => println!("  client: {o}"),
                None => println!("  client: outcome unknown"),
            }
        }
        Ok(())
    })
}
