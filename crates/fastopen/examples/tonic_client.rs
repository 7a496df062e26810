//! A tonic channel over the TFO connector: the HTTP/2 preface of each new
//! connection rides in the SYN once a cookie is cached, and each response
//! says whether it did.
//!
//! It calls the standard gRPC health check (`grpc.health.v1.Health/Check`,
//! an empty request) on the server given, with raw bytes for messages so that
//! no code generation is needed; real services use their generated client over
//! the same `Channel`.
//!
//! Run: `cargo run -p fastopen --features hyper --example tonic_client http://127.0.0.1:50051`

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        for _ in 0..2 {
            // A new channel, so a new connection: the second carries its preface in the SYN.
            let channel = tonic::transport::Endpoint::from_shared(url.clone())?
                .connect_with_connector(fastopen::hyper::Connector::new())
                .await?;
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await?;
            let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
            let response = grpc.unary(tonic::Request::new(Vec::new()), path, RawCodec).await?;
            let outcome = response.extensions().get::<fastopen::hyper::ConnectionOutcome>().cloned();
            println!("health: {} bytes", response.get_ref().len());
            match outcome.as_ref().and_then(|o| o.get()) {
                Some(o) => println!("  client: {o}"),
                None => println!("  client: outcome unknown"),
            }
        }
        Ok(())
    })
}

/// Messages as raw bytes.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0u8; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}
