//! The web dashboard, served on the same port as gRPC and gRPC-web.
//!
//! [`DashboardLayer`] sits outside the gRPC-web layer: a `GET` or `HEAD`
//! whose content type is not `application/grpc*` is a page request and is
//! answered from the built dashboard folder (`dashboard/dist`); everything
//! else goes on to tonic-web and the gRPC services unchanged (tonic-web
//! would answer an HTTP/1.1 page request with 400).
//!
//! - Files come from [`ServeDir`] (content types by extension, ranges,
//!   conditional requests, and the `.br`/`.gz` files the build writes beside
//!   each asset).
//! - A path that names no file and does not look like one (no `.` in its
//!   last segment, not under `/assets/`) gets `index.html`: the single-page
//!   app routes it in the browser.
//! - Vite's hashed files under `/assets/` are cached for a year and marked
//!   immutable; everything else (`index.html` above all) is `no-cache`, so a
//!   new build is picked up at once.
//! - When the folder has no `index.html`, `/` answers with a short
//!   plain-text note on how to build it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt};
use tower_http::services::{ServeDir, ServeFile};

/// Where the dashboard is looked for when no folder is configured.
pub const DEFAULT_DIR: &str = "dashboard/dist";

const HASHED_CACHE: &str = "public, max-age=31536000, immutable";
const NO_CACHE: &str = "no-cache";
/// The dashboard loads nothing from elsewhere, runs no inline script or
/// style, and talks only to its own origin (React sets element styles
/// through the DOM, which `style-src` does not restrict).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
                   object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Wraps the gRPC stack so that page requests are served from `dir`.
#[derive(Debug, Clone)]
pub struct DashboardLayer {
    dir: Arc<PathBuf>,
}

impl DashboardLayer {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir: Arc::new(dir) }
    }

    /// Whether the folder holds a built dashboard.
    pub fn is_built(&self) -> bool {
        is_built(&self.dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl<S> Layer<S> for DashboardLayer {
    type Service = Dashboard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Dashboard {
            inner,
            dir: self.dir.clone(),
        }
    }
}

/// See [`DashboardLayer`].
#[derive(Debug, Clone)]
pub struct Dashboard<S> {
    inner: S,
    dir: Arc<PathBuf>,
}

impl<S, ResBody> Service<Request<Body>> for Dashboard<S>
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
        if is_page_request(&req) {
            let dir = self.dir.clone();
            return Box::pin(async move { Ok(serve(&dir, req).await) });
        }
        // The clone that was not polled ready stays behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let future = inner.call(req);
        Box::pin(async move { future.await.map(|r| r.map(Body::new)) })
    }
}

/// A `GET` or `HEAD` that is not gRPC or gRPC-web.
fn is_page_request<B>(req: &Request<B>) -> bool {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return false;
    }
    !req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/grpc")
        })
}

fn is_built(dir: &Path) -> bool {
    dir.join("index.html").is_file()
}

async fn serve(dir: &Path, req: Request<Body>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if !is_built(dir) {
        return not_built(&path, dir);
    }
    let serve_dir = ServeDir::new(dir)
        .append_index_html_on_directories(true)
        .precompressed_br()
        .precompressed_gzip();
    let mut res = match serve_dir.oneshot(bare(&req)).await {
        Ok(r) => r.map(Body::new),
        Err(never) => match never {},
    };
    if res.status() == StatusCode::NOT_FOUND && is_app_route(&path) {
        let index = ServeFile::new(dir.join("index.html"))
            .precompressed_br()
            .precompressed_gzip();
        res = match index.oneshot(bare(&req)).await {
            Ok(r) => r.map(Body::new),
            Err(never) => match never {},
        };
    }
    let cache = if path.starts_with("/assets/") && res.status().is_success() {
        HASHED_CACHE
    } else {
        NO_CACHE
    };
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    // The same URL may be sent brotli, gzip or plain.
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    res
}

/// The same request without its body (static files read none).
fn bare(req: &Request<Body>) -> Request<Body> {
    let mut out = Request::new(Body::empty());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    out
}

/// A path the single-page app routes itself: not an asset, and its last
/// segment has no file extension.
fn is_app_route(path: &str) -> bool {
    if path.starts_with("/assets/") {
        return false;
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    !last.contains('.')
}

fn not_built(path: &str, dir: &Path) -> Response<Body> {
    let status = if path == "/" {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let text = format!(
        "llmgw control plane: gRPC and gRPC-web are served here, but the web dashboard is not \
         built ({} has no index.html).\n\nBuild it with:\n\n    cd dashboard && npm ci && npm \
         run build\n\nor start the gateway with ./scripts/run.sh, which builds it. Point the \
         control plane at another folder with --dashboard-dir (LLMGW_DASHBOARD_DIR).\n",
        dir.display()
    );
    let mut res = Response::new(Body::new(text));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_requests() {
        let get = |ct: Option<&str>| {
            let mut b = Request::builder().method(Method::GET).uri("/logs");
            if let Some(ct) = ct {
                b = b.header(header::CONTENT_TYPE, ct);
            }
            b.body(()).unwrap_or_default()
        };
        assert!(is_page_request(&get(None)));
        assert!(is_page_request(&get(Some("text/html"))));
        assert!(!is_page_request(&get(Some("application/grpc-web+proto"))));
        assert!(!is_page_request(&get(Some("application/grpc"))));
        let post = Request::builder()
            .method(Method::POST)
            .uri("/")
            .body(())
            .unwrap_or_default();
        assert!(!is_page_request(&post));
    }

    use http_body_util::BodyExt as _;

    /// The gRPC side: answers 418 so that a test sees it was reached.
    fn grpc_stub() -> impl Service<
        Request<Body>,
        Response = Response<Body>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        tower::service_fn(|_req: Request<Body>| async {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::IM_A_TEAPOT;
            Ok(r)
        })
    }

    async fn call(
        dir: &Path,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
    ) -> (StatusCode, http::HeaderMap, String) {
        let svc = DashboardLayer::new(dir.to_path_buf()).layer(grpc_stub());
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        let req = b.body(Body::empty()).unwrap();
        let res = svc.oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn serves_files_with_spa_fallback_and_cache_headers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("index.html"), "<!doctype html>app").unwrap();
        std::fs::write(dir.path().join("assets/app-1a2b.js"), "console.log(1)").unwrap();

        let (st, h, body) = call(dir.path(), Method::GET, "/", None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(body, "<!doctype html>app");
        assert!(h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert_eq!(h[header::CACHE_CONTROL], NO_CACHE);
        assert!(h.contains_key(header::CONTENT_SECURITY_POLICY));

        let (st, h, body) = call(dir.path(), Method::GET, "/logs/0190?model=x", None).await;
        assert_eq!((st, body.as_str()), (StatusCode::OK, "<!doctype html>app"));
        assert_eq!(h[header::CACHE_CONTROL], NO_CACHE);

        let (st, h, body) = call(dir.path(), Method::GET, "/assets/app-1a2b.js", None).await;
        assert_eq!((st, body.as_str()), (StatusCode::OK, "console.log(1)"));
        assert!(h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("javascript"));
        assert_eq!(h[header::CACHE_CONTROL], HASHED_CACHE);

        let (st, _, _) = call(dir.path(), Method::HEAD, "/providers", None).await;
        assert_eq!(st, StatusCode::OK);
        for missing in ["/assets/gone.js", "/favicon.ico", "/../Cargo.toml"] {
            let (st, h, _) = call(dir.path(), Method::GET, missing, None).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{missing}");
            assert_eq!(h[header::CACHE_CONTROL], NO_CACHE);
        }
    }

    #[tokio::test]
    async fn grpc_and_other_methods_reach_the_services() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "app").unwrap();
        for ct in [
            "application/grpc",
            "application/grpc-web+proto",
            "application/grpc-web-text",
        ] {
            let (st, _, _) = call(
                dir.path(),
                Method::POST,
                "/llmgw.v1.Admin/ListModels",
                Some(ct),
            )
            .await;
            assert_eq!(st, StatusCode::IM_A_TEAPOT, "{ct}");
        }
        let (st, _, _) = call(dir.path(), Method::GET, "/", Some("application/grpc-web")).await;
        assert_eq!(st, StatusCode::IM_A_TEAPOT);
        let (st, _, _) = call(dir.path(), Method::POST, "/", None).await;
        assert_eq!(st, StatusCode::IM_A_TEAPOT);
    }

    #[tokio::test]
    async fn says_how_to_build_when_not_built() {
        let dir = tempfile::tempdir().unwrap();
        let (st, h, body) = call(dir.path(), Method::GET, "/", None).await;
        assert_eq!(st, StatusCode::OK);
        assert!(h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert!(body.contains("npm run build"), "{body}");
        let (st, _, _) = call(dir.path(), Method::GET, "/logs", None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }

    #[test]
    fn app_routes() {
        assert!(is_app_route("/"));
        assert!(is_app_route("/logs"));
        assert!(is_app_route("/logs/0190-abc"));
        assert!(!is_app_route("/favicon.ico"));
        assert!(!is_app_route("/assets/index-abc.js"));
        assert!(!is_app_route("/assets/missing"));
    }
}
