//! TLS over TFO, the blocking client of `tfo probe --tls` and `tfo send`:
//! the ClientHello (and, on a resumed session, the request as TLS 1.3 early
//! data) is the data that rides in the SYN, then the handshake (and an HTTPS
//! request) runs on the connection under one deadline. rustls does the TLS;
//! what is ours is putting its first flight into `Connector::connect`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastopen::{ClientOutcome, Connector};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The largest `--ca` file read (a system bundle is about 220 KiB).
const CA_FILE_LIMIT: u64 = 8 << 20;
/// The longest a finished exchange waits for session tickets after the answer.
const TICKET_WAIT: Duration = Duration::from_secs(1);
/// Servers whose session tickets are kept, with early data on.
const SESSIONS_KEPT: usize = 256;

/// How `tfo probe` talks TLS: one configuration for every connection.
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    /// The system's store was asked for and had no CA certificate.
    trusts_nothing: bool,
    /// Ends a connect's wait when cancelled.
    token: Option<fastopen::Cancel>,
}

/// Why a TLS client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsClientError {
    /// The `--ca` file could not be read.
    #[error("cannot read the CA file {path}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The `--ca` file is not PEM, or holds no usable CA certificate.
    #[error("{path} {why}")]
    CaContent {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Which certificates to trust.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The system's CA store (/etc/ssl/certs and friends).
    System,
    /// Only the CAs in this PEM file (`--ca`).
    CaFile(&'a Path),
    /// Any certificate (`--insecure`): TFO and the handshake are still probed.
    Anything,
}

impl<'a> Trust<'a> {
    /// From `--ca FILE` and `--insecure` (clap keeps them apart): the file
    /// if given, else anything if insecure, else the system's store.
    pub fn from_flags(ca: Option<&'a Path>, insecure: bool) -> Trust<'a> {
        match (ca, insecure) {
            (Some(path), _) => Trust::CaFile(path),
            (None, true) => Trust::Anything,
            (None, false) => Trust::System,
        }
    }
}

impl TlsClient {
    /// A client trusting `trust`. Each connection makes a full handshake (no
    /// resumption), so the three connections of a probe compare like with like.
    pub fn new(trust: Trust<'_>, alpn_http: bool) -> Result<TlsClient, TlsClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let mut trusts_nothing = false;
        let mut config = match trust {
            Trust::Anything => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
            Trust::System => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                // Still probe: TFO's verdict stands, and each certificate
                // check fails with a reason that says what to do.
                trusts_nothing = added == 0;
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::CaFile(path) => {
                let mut roots = RootCertStore::empty();
                let pem = fastopen::keyfile::read_bounded(path, CA_FILE_LIMIT)
                    .map_err(|source| TlsClientError::CaFile { path: path.to_path_buf(), source })?;
                let bad = |why: String| TlsClientError::CaContent { path: path.to_path_buf(), why };
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| bad(format!("is not a PEM certificate file: {e}")))?;
                    roots.add(cert).map_err(|e| bad(format!("holds a certificate not usable as a CA: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(bad("holds no certificate (it must be PEM: -----BEGIN CERTIFICATE-----)".into()));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        config.resumption = Resumption::disabled();
        if alpn_http {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        Ok(TlsClient { config: Arc::new(config), trusts_nothing, token: None })
    }

    /// Whether the system's store had no CA certificate, so no server's
    /// certificate will be trusted (install ca-certificates, or give a CA).
    pub fn trusts_nothing(&self) -> bool {
        self.trusts_nothing
    }

    /// The same client, whose connects end when `token` is cancelled.
    pub fn cancel_on(self, token: Option<fastopen::Cancel>) -> TlsClient {
        TlsClient { token, ..self }
    }

    /// The same client, resuming sessions (tickets kept in memory per server
    /// name) and sending early data on a resumed session when the ticket
    /// allows it (TLS 1.3 0-RTT). Early data can be replayed: only for
    /// requests that are safe to run twice.
    pub fn with_early_data(self) -> TlsClient {
        let mut config = Arc::unwrap_or_clone(self.config);
        config.resumption = Resumption::in_memory_sessions(SESSIONS_KEPT);
        config.enable_early_data = true;
        TlsClient { config: Arc::new(config), ..self }
    }

    /// The rustls configuration (for `tfo load`'s async connections).
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// One connection to `addr`: the ClientHello in the SYN when TFO can carry
    /// it, the handshake, then `request` if any, until the first byte of its
    /// answer. Fails only when no connection was made; what happened after is
    /// in the result.
    pub fn exchange(
        &self,
        connector: &Connector,
        addr: SocketAddr,
        server_name: ServerName<'static>,
        request: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<TlsExchange, fastopen::Error> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut conn = ClientConnection::new(self.config.clone(), server_name)
            .map_err(|e| fastopen::Error::Io { what: "starting TLS", source: io::Error::other(e) })?;
        let mut hello = Vec::new();
        let write_tls = |conn: &mut ClientConnection, hello: &mut Vec<u8>| -> Result<(), fastopen::Error> {
            while conn.wants_write() {
                conn.write_tls(hello)
                    .map_err(|source| fastopen::Error::Io { what: "writing the ClientHello", source })?;
            }
            Ok(())
        };
        write_tls(&mut conn, &mut hello)?;
        let client_hello_bytes = hello.len();
        // Early data: with a ticket that allows the whole request, it goes
        // right after the ClientHello, in the same first flight (the SYN's data).
        let early_data_sent = match (request, conn.early_data()) {
            (Some(request), Some(mut early)) if early.bytes_left() >= request.len() => {
                early
                    .write_all(request)
                    .map_err(|source| fastopen::Error::Io { what: "writing early data", source })?;
                true
            }
            _ => false,
        };
        write_tls(&mut conn, &mut hello)?;
        let (stream, outcome) =
            connector.clone().connect_timeout(Some(timeout)).cancel_on(self.token.clone()).connect(addr, &hello)?;
        // rustls writes a flight in several records: without this, Nagle holds
        // the last one for the server's delayed ACK (40 ms) and the timing lies.
        stream.set_nodelay(true).map_err(|source| fastopen::Error::Io { what: "setting TCP_NODELAY", source })?;
        let mut wire = Deadlined { stream: &stream, deadline, start, first_byte: None };
        let mut done = TlsExchange {
            outcome,
            client_hello_bytes,
            first_flight_bytes: hello.len(),
            early_data_sent,
            resumed: false,
            early_data: None,
            first_byte: None,
            handshake: None,
            answered: None,
            version: None,
            http_status: None,
            error: None,
        };
        let result = finish(&mut conn, &mut wire, request, self.config.enable_early_data, &mut done);
        done.first_byte = wire.first_byte;
        done.resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        if self.config.enable_early_data && request.is_some() && !conn.is_handshaking() {
            done.early_data = Some(match (early_data_sent, conn.is_early_data_accepted()) {
                (true, true) => "accepted",
                (true, false) => "rejected",
                (false, _) if done.resumed => "server_allows_none",
                (false, _) => "no_ticket",
            });
        }
        if let Err(e) = result {
            done.error = Some(explain(&e));
        }
        Ok(done)
    }
}

/// The handshake, then the request and the first bytes of its answer.
fn finish(
    conn: &mut ClientConnection,
    wire: &mut Deadlined<'_>,
    request: Option<&[u8]>,
    keep_tickets: bool,
    done: &mut TlsExchange,
) -> io::Result<()> {
    while conn.is_handshaking() {
        conn.complete_io(wire)?;
    }
    done.handshake = Some(wire.start.elapsed());
    done.version = conn.protocol_version().map(crate::tls_serve::version_name);
    let Some(request) = request else { return Ok(()) };
    let sent_early = done.early_data_sent && conn.is_early_data_accepted();
    let mut tls = rustls::Stream::new(conn, wire);
    if !sent_early {
        // No early data, or the server refused it: the request goes now.
        tls.write_all(request)?;
    }
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        match tls.read(&mut chunk)? {
            0 => break,
            n => head.extend_from_slice(&chunk[..n]),
        }
    }
    done.answered = Some(tls.sock.start.elapsed());
    done.http_status = fastopen_wire::http::status_code(&head);
    if done.http_status.is_none() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the answer to the HTTPS request is not HTTP/1.x"));
    }
    if keep_tickets {
        // Session tickets may come after the answer (a server that answered
        // early data sends them once our Finished is in): read them, so the
        // next connection can resume; not timed, and never an error.
        tls.sock.deadline = tls.sock.deadline.min(Instant::now() + TICKET_WAIT);
        while matches!(tls.read(&mut chunk), Ok(1..)) {}
    }
    Ok(())
}

/// What one TLS connection did.
#[derive(Debug)]
pub struct TlsExchange {
    pub outcome: ClientOutcome,
    /// The ClientHello.
    pub client_hello_bytes: usize,
    /// The first flight: the ClientHello and any early data (what TFO could
    /// put in the SYN).
    pub first_flight_bytes: usize,
    /// The request went as TLS 1.3 early data, in the first flight.
    pub early_data_sent: bool,
    /// The handshake resumed a session.
    pub resumed: bool,
    /// With early data on and a request: `accepted`, `rejected` (sent again
    /// after the handshake), `no_ticket`, `server_allows_none`.
    pub early_data: Option<&'static str>,
    /// From the start of the connect to the first byte from the server.
    pub first_byte: Option<Duration>,
    /// From the start of the connect to the end of the handshake.
    pub handshake: Option<Duration>,
    /// From the start of the connect to the answer's status line (with a request).
    pub answered: Option<Duration>,
    pub version: Option<&'static str>,
    pub http_status: Option<u16>,
    /// Why TLS (or the request over it) did not complete.
    pub error: Option<String>,
}

/// The name a server is asked for (SNI): the target's name, or its address.
pub fn server_name(name: Option<&str>, addr: SocketAddr) -> Result<ServerName<'static>, String> {
    match name {
        Some(name) => {
            ServerName::try_from(name.to_string()).map_err(|e| format!("{name:?} cannot be sent as SNI: {e}"))
        }
        None => Ok(ServerName::IpAddress(addr.ip().into())),
    }
}

/// One line on why TLS failed, and what to do when the certificate is the cause.
fn explain(e: &io::Error) -> String {
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(
            why @ (CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }),
        )) => format!(
            "the server's certificate is not for the name asked ({why}): probe it by its name, or give the name with --sni NAME"
        ),
        Some(rustls::Error::InvalidCertificate(why)) => format!(
            "the server's certificate is not trusted ({why}): give its CA with --ca FILE, or --insecure to probe anyway"
        ),
        Some(other) => format!("TLS failed: {other}"),
        None if e.kind() == io::ErrorKind::TimedOut => "no complete TLS answer within the timeout".into(),
        None if e.kind() == io::ErrorKind::UnexpectedEof => "the server closed the connection during TLS".into(),
        None => format!("TLS failed: {e}"),
    }
}

/// The TCP stream under rustls: every read and write ends by the deadline,
/// and the first byte from the server is timed.
struct Deadlined<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
    start: Instant,
    first_byte: Option<Duration>,
}

impl Deadlined<'_> {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }
}

/// A blocking socket's timeout shows as WouldBlock: it is our deadline.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::ErrorKind::TimedOut.into()
    } else {
        e
    }
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        let n = self.stream.read(buf).map_err(timed_out)?;
        if n > 0 {
            self.first_byte.get_or_insert_with(|| self.start.elapsed());
        }
        Ok(n)
    }
}

impl Write for Deadlined<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        self.stream.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `--insecure`: accepts any certificate, but still checks the handshake's
/// signatures with it (so the handshake itself is real).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_for_sni() {
        let addr: SocketAddr = "192.0.2.1:443".parse().unwrap();
        assert!(matches!(server_name(None, addr), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name(Some("example.com"), addr), Ok(ServerName::DnsName(_))));
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("tfo-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = TlsClient::new(Trust::CaFile(&path), false).unwrap_err();
        assert!(format!("{err:#}").contains("no certificate"), "{err:#}");
        let err = TlsClient::new(Trust::CaFile(&dir.join("absent.pem")), false).unwrap_err();
        assert!(format!("{err:#}").contains("cannot read"), "{err:#}");
        assert!(TlsClient::new(Trust::Anything, true).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
