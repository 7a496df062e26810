//! The early-data rule for HTTP (feature `tower`): which methods are safe to
//! run from the SYN, and a tower layer that applies the rule per request.
//!
//! Plain hyper: build the service per connection, with its [`Handshake`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use fastopen::{EarlyData, EarlyDataPolicy, Handshake, ListenerBuilder};
//! use hyper_util::service::TowerToHyperService;
//! use tower::ServiceBuilder;
//!
//! let listener = ListenerBuilder::new("127.0.0.1:8080".parse()?).bind_tokio()?;
//! let rule = EarlyData::new(EarlyDataPolicy::Wait);
//! loop {
//!     let (stream, _peer, _outcome) = listener.accept().await?;
//!     let service = ServiceBuilder::new()
//!         .layer(rule.layer(Handshake::of(&stream)?))
//!         .service_fn(|request: http::Request<hyper::body::Incoming>| async move {
//!             // Runs once per request, never for a replayed SYN's POST.
//!             let early = request.headers().contains_key("early-data");
//!             let body = http_body_util::Full::new(bytes::Bytes::from(format!("early={early}")));
//!             Ok::<_, std::convert::Infallible>(http::Response::new(body))
//!         });
//!     tokio::spawn(
//!         hyper::server::conn::http1::Builder::new()
//!             .serve_connection(hyper_util::rt::TokioIo::new(stream), TowerToHyperService::new(service)),
//!     );
//! }
//! # }
//! ```
//!
//! axum: the [`early_data`](crate::early_data()) middleware finds the
//! handshake in `ConnectInfo<TfoConnectInfo>`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode};

use super::{Admission, EarlyDataPolicy, Handshake};
use crate::confirm::Confirmation;
use crate::tcp_info::HandshakeState;

/// The early-data rule of a service: a policy for unsafe requests, while safe
/// methods (GET, HEAD, OPTIONS, and those marked idempotent) always run at
/// once. A request that runs before its handshake is confirmed carries
/// `Early-Data: 1` (RFC 8470 §5.1), which handlers and upstreams can read.
#[derive(Debug, Clone)]
pub struct EarlyData {
    policy: EarlyDataPolicy,
    idempotent: Vec<Method>,
    timeout: Duration,
}

impl EarlyData {
    /// Unsafe requests get `policy`; the wait for confirmation lasts at most 10 s.
    pub fn new(policy: EarlyDataPolicy) -> EarlyData {
        EarlyData { policy, idempotent: Vec::new(), timeout: Duration::from_secs(10) }
    }

    /// Marks a method safe to run from early data (e.g. PUT, when your PUTs are idempotent).
    pub fn idempotent(mut self, method: Method) -> EarlyData {
        self.idempotent.push(method);
        self
    }

    /// The longest wait for confirmation under [`EarlyDataPolicy::Wait`].
    pub fn timeout(mut self, timeout: Duration) -> EarlyData {
        self.timeout = timeout;
        self
    }

    /// The policy for unsafe requests.
    pub fn policy(&self) -> EarlyDataPolicy {
        self.policy
    }

    /// Whether `method` runs from early data whatever the policy.
    pub fn is_safe(&self, method: &Method) -> bool {
        [Method::GET, Method::HEAD, Method::OPTIONS].contains(method) || self.idempotent.contains(method)
    }

    /// The rule's answer for one request with `method` on the connection
    /// whose handshake is `handshake`: safe methods never wait.
    pub async fn admit(&self, method: &Method, handshake: &Handshake) -> Admission {
        if self.is_safe(method) {
            return match handshake.state() {
                Ok(HandshakeState::Confirmed) => Admission::Confirmed,
                _ => Admission::Early,
            };
        }
        handshake.admit(self.policy, self.timeout).await.unwrap_or(Admission::NeverConfirmed(Confirmation::Failed))
    }

    /// Applies the rule to `request`: `Ok` with the request (marked
    /// `Early-Data: 1` if it runs early) when it may run, or `Err` with the
    /// `425 Too Early` response to send instead.
    pub async fn check<B, R: Default>(
        &self,
        mut request: Request<B>,
        handshake: &Handshake,
    ) -> Result<Request<B>, Response<R>> {
        match self.admit(request.method(), handshake).await {
            Admission::Confirmed => Ok(request),
            Admission::Early => {
                request.headers_mut().insert("early-data", HeaderValue::from_static("1"));
                Ok(request)
            }
            // Never confirmed: a replay or a vanished client; nobody reads the answer.
            Admission::TooEarly | Admission::NeverConfirmed(_) => {
                let mut response = Response::new(R::default());
                *response.status_mut() = StatusCode::TOO_EARLY;
                Err(response)
            }
        }
    }

    /// A tower layer applying this rule to the requests of the connection
    /// whose handshake is `handshake` (make one per accepted connection).
    pub fn layer(&self, handshake: Handshake) -> EarlyDataLayer {
        EarlyDataLayer { rule: Arc::new(self.clone()), handshake }
    }
}

/// A tower [`Layer`](tower_layer::Layer) wrapping a connection's service in
/// [`EarlyDataService`]; made by [`EarlyData::layer`].
#[derive(Debug, Clone)]
pub struct EarlyDataLayer {
    rule: Arc<EarlyData>,
    handshake: Handshake,
}

impl<S> tower_layer::Layer<S> for EarlyDataLayer {
    type Service = EarlyDataService<S>;

    fn layer(&self, inner: S) -> EarlyDataService<S> {
        EarlyDataService { inner, rule: self.rule.clone(), handshake: self.handshake.clone() }
    }
}

/// A service that runs each request of one connection under an
/// [`EarlyData`] rule: at once, after confirmation, or answered `425 Too Early`
/// (with an empty body of the inner service's body type) without running it.
#[derive(Debug, Clone)]
pub struct EarlyDataService<S> {
    inner: S,
    rule: Arc<EarlyData>,
    handshake: Handshake,
}

impl<S, B, R> tower_service::Service<Request<B>> for EarlyDataService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service polled ready goes with this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (rule, handshake) = (self.rule.clone(), self.handshake.clone());
        Box::pin(async move {
            match rule.check(request, &handshake).await {
                Ok(request) => inner.call(request).await,
                Err(too_early) => Ok(too_early),
            }
        })
    }
}
