//! Connection guards on the control plane's one port (gRPC, gRPC-web and
//! the dashboard), from `llmgw-listener`: [`guard`] admits each accepted
//! connection through the caps and wraps it so it idles out;
//! [`ConnLayer::requests`] (outermost) counts each request as in flight
//! until its response is sent, and [`ConnLayer::bodies`] (inside tonic-web,
//! so that its error reaches the client as it is) reads request bodies
//! under the body timeout. The interceptors mark a
//! connection authenticated when a request's token passes.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::BodyExt;
use llmgw_listener::{BoxError, Gate, GuardedIo, Limits, SlowBody, TimedBody, TrackedBody};
use llmgw_proto::v1::{discovery_server, logs_server};
use tokio::net::TcpStream;
use tonic::body::Body;
use tower::{Layer, Service};

/// Admits an accepted connection, or closes it at once beyond a cap (the
/// port may speak TLS or HTTP/2, so there is no answer to give).
pub fn guard(gate: &Gate, stream: TcpStream) -> Option<GuardedIo<TcpStream>> {
    match gate.admit() {
        Ok(conn) => Some(GuardedIo::new(stream, conn)),
        Err(_) => None,
    }
}

/// Marks the request's connection as having sent a valid token.
pub fn authenticated<T>(req: &tonic::Request<T>) {
    if let Some(conn) = llmgw_listener::conn_of(req.extensions()) {
        conn.authenticated();
    }
}

/// Whether the client's half of this RPC is a long-lived stream that idles
/// by design (a data plane's snapshot stream and log shipping): the body
/// timeout does not apply to it.
fn streams_from_client(path: &str) -> bool {
    let Some((service, _)) = path.trim_start_matches('/').split_once('/') else {
        return false;
    };
    service == discovery_server::SERVICE_NAME || service == logs_server::SERVICE_NAME
}

#[derive(Clone, Debug)]
pub struct ConnLayer {
    /// `Some`: time request bodies; `None`: count requests in flight.
    limits: Option<Arc<Limits>>,
}

impl ConnLayer {
    /// Counts each request as in flight until its response is sent.
    pub fn requests() -> Self {
        ConnLayer { limits: None }
    }

    /// Reads request bodies under the body timeout and minimum rate.
    pub fn bodies(limits: Limits) -> Self {
        ConnLayer {
            limits: Some(Arc::new(limits)),
        }
    }
}

impl<S> Layer<S> for ConnLayer {
    type Service = ConnService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnService {
            inner,
            limits: self.limits.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ConnService<S> {
    inner: S,
    limits: Option<Arc<Limits>>,
}

impl<S, ResBody> Service<Request<Body>> for ConnService<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let guard = match self.limits {
            None => llmgw_listener::conn_of(req.extensions()).map(|c| c.request()),
            Some(_) => None,
        };
        let req = match &self.limits {
            Some(limits) if !streams_from_client(req.uri().path()) => req.map(|b| {
                Body::new(TimedBody::new(b, limits).map_err(|e| {
                    // tonic answers a Status error as that status.
                    match e.downcast::<SlowBody>() {
                        Ok(slow) => {
                            Box::new(tonic::Status::deadline_exceeded(slow.to_string())) as BoxError
                        }
                        Err(e) => e,
                    }
                }))
            }),
            _ => req,
        };
        // The clone that was not polled ready stays behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let future = inner.call(req);
        Box::pin(async move {
            let resp = future.await?;
            Ok(match guard {
                Some(guard) => resp.map(|b| Body::new(TrackedBody::new(Body::new(b), guard))),
                None => resp.map(Body::new),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_data_plane_streams_are_exempt() {
        assert!(streams_from_client("/llmgw.v1.Discovery/StreamSnapshots"));
        assert!(streams_from_client("/llmgw.v1.Logs/Ship"));
        assert!(!streams_from_client("/llmgw.v1.Admin/ListProviders"));
        assert!(!streams_from_client("/"));
        assert!(!streams_from_client("/index.html"));
    }
}
