//! Connecting to the control plane's admin API, with the admin token sent
//! on every call, and turning gRPC failures into plain messages.

use std::error::Error as StdError;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use llmgw_proto::v1::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::args::GlobalOpts;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call may take, unless the command says otherwise.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest answer accepted from the control plane.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

pub type AdminApi = AdminClient<InterceptedService<Channel, BearerAuth>>;

/// Adds `authorization: Bearer <token>` to every call. The value is marked
/// sensitive, and this type has no `Debug`, so the token cannot be printed.
#[derive(Clone)]
pub struct BearerAuth {
    value: MetadataValue<Ascii>,
}

impl BearerAuth {
    pub fn new(token: &str) -> Result<Self> {
        let mut value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            anyhow!("the admin token holds characters that cannot be sent in a header")
        })?;
        value.set_sensitive(true);
        Ok(Self { value })
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut()
            .insert("authorization", self.value.clone());
        Ok(req)
    }
}

/// The admin token: `--token` / `LLMGW_ADMIN_TOKEN` when given, else the
/// trimmed content of the token file.
pub fn resolve_token(token: Option<&str>, token_file: &Path) -> Result<String> {
    if let Some(t) = token.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    let text = std::fs::read_to_string(token_file).map_err(|e| {
        anyhow!(
            "no admin token: give --token or set LLMGW_ADMIN_TOKEN, or put the token in \
             {} (--token-file / LLMGW_ADMIN_TOKEN_FILE); reading {} failed: {e}",
            token_file.display(),
            token_file.display()
        )
    })?;
    let t = text.trim();
    if t.is_empty() {
        bail!(
            "no admin token: the token file {} is empty (give --token or set LLMGW_ADMIN_TOKEN)",
            token_file.display()
        );
    }
    Ok(t.to_string())
}

/// A connected admin client.
pub struct Client {
    api: AdminApi,
    server: String,
}

impl Client {
    /// Resolves the token, then connects (eagerly, so an unreachable server
    /// is reported as such).
    pub async fn connect(g: &GlobalOpts) -> Result<Self> {
        Self::connect_with_timeout(g, CALL_TIMEOUT).await
    }

    /// [`Client::connect`] whose calls may take up to `call_timeout` (a
    /// model test waits for each target in turn).
    pub async fn connect_with_timeout(g: &GlobalOpts, call_timeout: Duration) -> Result<Self> {
        let token = resolve_token(g.token.as_deref(), &g.token_file)?;
        let auth = BearerAuth::new(&token)?;
        let server = g.server.trim().to_string();
        let endpoint = endpoint(&server, g.tls_ca.as_deref())?.timeout(call_timeout);
        let channel = endpoint.connect().await.map_err(|e| {
            anyhow!(
                "cannot reach control plane at {server}: {}",
                error_chain(&e)
            )
        })?;
        Ok(Self {
            // Request logs with bodies can be larger than tonic's 4 MiB default.
            api: AdminClient::with_interceptor(channel, auth)
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            server,
        })
    }

    /// The gRPC client (cheap to clone: it shares the connection).
    pub fn api(&self) -> AdminApi {
        self.api.clone()
    }

    /// A failed call as a plain message: the server's message, or "cannot
    /// reach control plane" when the call never got an answer.
    pub fn fail(&self, status: Status) -> anyhow::Error {
        status_error(&self.server, &status)
    }
}

fn endpoint(server: &str, tls_ca: Option<&Path>) -> Result<Endpoint> {
    let tls = if server.starts_with("https://") {
        true
    } else if server.starts_with("http://") {
        false
    } else {
        bail!("--server must be an http:// or https:// URL, got `{server}`");
    };
    let mut endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|e| anyhow!("invalid --server URL `{server}`: {}", error_chain(&e)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    if tls {
        let config = match tls_ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read --tls-ca file {}", path.display()))?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    bail!("--tls-ca file {} holds no PEM certificate", path.display());
                }
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
            }
            None => ClientTlsConfig::new().with_enabled_roots(),
        };
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| anyhow!("TLS setup failed: {}", error_chain(&e)))?;
    } else if tls_ca.is_some() {
        bail!("--tls-ca needs an https:// server URL, got `{server}`");
    }
    Ok(endpoint)
}

fn status_error(server: &str, status: &Status) -> anyhow::Error {
    // A status with a source was made on this side: the transport failed.
    if status.code() == Code::Unavailable && StdError::source(status).is_some() {
        return anyhow!(
            "cannot reach control plane at {server}: {}",
            error_chain(status)
        );
    }
    let msg = status.message().trim();
    if msg.is_empty() {
        anyhow!("{}", status.code().description())
    } else {
        anyhow!("{msg}")
    }
}

/// An error and its causes as one line, skipping repeats.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        // Status's own Display is verbose; its message is what matters.
        let text = match err.downcast_ref::<Status>() {
            Some(s) => s.message().to_string(),
            None => text,
        };
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    if parts.is_empty() {
        "unknown error".to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_flag_or_file() {
        let dir = std::env::temp_dir().join(format!("llmgw-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("admin-token");
        std::fs::write(&file, "  tok-from-file\n").unwrap();
        assert_eq!(resolve_token(Some("given"), &file).unwrap(), "given");
        assert_eq!(resolve_token(None, &file).unwrap(), "tok-from-file");
        assert_eq!(resolve_token(Some(""), &file).unwrap(), "tok-from-file");
        std::fs::write(&file, " \n").unwrap();
        assert!(resolve_token(None, &file).is_err());
        let missing = dir.join("missing");
        let err = resolve_token(None, &missing).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn auth_header_is_sensitive() {
        let mut auth = BearerAuth::new("s3cret").unwrap();
        let req = auth.call(Request::new(())).unwrap();
        let v = req.metadata().get("authorization").unwrap();
        assert!(v.is_sensitive());
        assert_eq!(v.to_str().unwrap(), "Bearer s3cret");
        assert!(!format!("{v:?}").contains("s3cret"));
        assert!(BearerAuth::new("bad\ntoken").is_err());
    }

    #[test]
    fn server_url_checks() {
        assert!(endpoint("127.0.0.1:9090", None).is_err());
        assert!(endpoint("http://127.0.0.1:9090", None).is_ok());
        assert!(endpoint("http://127.0.0.1:9090", Some(Path::new("/nonexistent"))).is_err());
    }

    #[test]
    fn status_messages() {
        let e = status_error("http://x", &Status::not_found("provider foo not found"));
        assert_eq!(e.to_string(), "provider foo not found");
        let e = status_error("http://x", &Status::new(Code::Internal, ""));
        assert!(!e.to_string().is_empty());
    }
}
