//! A provider's outbound proxy URL (`llmgw provider add|update --proxy`):
//! `http://`, `https://` or `socks5://`, a host and a port (80, 443 and
//! 1080 by default), and optional credentials (`user:pass@`), which are
//! secrets. The control plane checks writes and the data plane checks
//! snapshots with the same [`ProxyUrl::parse`].
//!
//! A proxy shows itself as `scheme://host:port`, with `****@` before the
//! host when it has credentials ([`ProxyUrl::shown`], also its `Debug`);
//! only [`ProxyUrl::full`] and [`ProxyUrl::credentials`] expose them.
//! Errors name the field and the problem, never the value.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::validate::{limits, ValidationError};

const F: &str = "proxy";

/// How the proxy is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyScheme {
    /// HTTP CONNECT over plain TCP to the proxy.
    Http,
    /// HTTP CONNECT over TLS to the proxy.
    Https,
    /// SOCKS5, with username/password authentication when given.
    Socks5,
}

impl ProxyScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Https => "https",
            ProxyScheme::Socks5 => "socks5",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            ProxyScheme::Http => 80,
            ProxyScheme::Https => 443,
            ProxyScheme::Socks5 => 1080,
        }
    }
}

/// A proxy's username and password, percent-decoded.
#[derive(Clone)]
pub struct ProxyCredentials {
    pub username: SecretString,
    pub password: SecretString,
}

/// A parsed, valid proxy URL.
#[derive(Clone)]
pub struct ProxyUrl {
    pub scheme: ProxyScheme,
    /// As the `url` crate writes it: lower case, an IPv6 address in brackets.
    pub host: String,
    pub port: u16,
    pub credentials: Option<ProxyCredentials>,
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

impl PartialEq for ProxyUrl {
    fn eq(&self, other: &Self) -> bool {
        // Compared in place (the pool lookup of every attempt does this):
        // no copy of a secret.
        fn creds(c: &Option<ProxyCredentials>) -> Option<(&str, &str)> {
            c.as_ref()
                .map(|c| (c.username.expose_secret(), c.password.expose_secret()))
        }
        self.scheme == other.scheme
            && self.host == other.host
            && self.port == other.port
            && creds(&self.credentials) == creds(&other.credentials)
    }
}

impl Eq for ProxyUrl {}

impl ProxyUrl {
    /// Checks a proxy URL: one of the three schemes, a host, an optional
    /// port, optional credentials, and nothing else (no path, query or
    /// fragment; no whitespace or control character).
    pub fn parse(value: &str) -> Result<ProxyUrl, ValidationError> {
        let bad = |msg: &str| ValidationError(format!("{F} {msg}"));
        if value.is_empty() {
            return Err(bad("must not be empty"));
        }
        crate::validate::length(F, value, limits::BASE_URL)?;
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("contains whitespace or a control character"));
        }
        let Some((scheme, rest)) = value.split_once("://") else {
            return Err(bad("must start with http://, https:// or socks5://"));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => ProxyScheme::Http,
            "https" => ProxyScheme::Https,
            "socks5" => ProxyScheme::Socks5,
            _ => return Err(bad("must use http, https or socks5")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host_part = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host_part.is_empty() || host_part.starts_with(':') {
            return Err(bad("has an empty host"));
        }
        if authority.starts_with('@') {
            return Err(bad("has an empty user info ('@' before the host)"));
        }
        // The url crate knows default ports only for special schemes.
        let as_http = format!("http://{rest}");
        let url =
            url::Url::parse(&as_http).map_err(|e| bad(&format!("is not a valid URL: {e}")))?;
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => return Err(bad("has an empty host")),
        };
        if !matches!(url.path(), "" | "/") {
            return Err(bad("must not have a path"));
        }
        if url.query().is_some() {
            return Err(bad("must not have a query string ('?...')"));
        }
        if url.fragment().is_some() {
            return Err(bad("must not have a fragment ('#...')"));
        }
        let port = authority
            .rsplit_once(':')
            .filter(|(_, p)| !p.contains(']') && !p.contains('@'))
            .map(|(_, p)| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("has a port that is not a number from 1 to 65535"))
            })
            .transpose()?
            .unwrap_or(scheme.default_port());
        let credentials = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            // Percent-decoding through a form parse: the `url` crate leaves
            // `+` and `&` as typed in a userinfo, and a form would read them
            // as a space and a separator.
            let decode = |s: &str| {
                let s = s.replace('+', "%2B").replace('&', "%26");
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            let username = decode(url.username());
            let password = decode(url.password().unwrap_or_default());
            if username.is_empty() {
                return Err(bad("has a password but no username"));
            }
            if username.len() > 255 || password.len() > 255 {
                return Err(bad("has a username or password longer than 255 bytes"));
            }
            Some(ProxyCredentials {
                username: SecretString::from(username),
                password: SecretString::from(password),
            })
        };
        Ok(ProxyUrl {
            scheme,
            host,
            port,
            credentials,
        })
    }

    /// `scheme://host:port`: where to connect, with no credentials.
    pub fn address(&self) -> String {
        format!("{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }

    /// As reads, logs and errors show it: `scheme://host:port`, with
    /// `****@` before the host when it has credentials.
    pub fn shown(&self) -> String {
        let mask = if self.credentials.is_some() {
            "****@"
        } else {
            ""
        };
        format!(
            "{}://{mask}{}:{}",
            self.scheme.as_str(),
            self.host,
            self.port
        )
    }

    /// The normalized URL with its credentials (percent-encoded), as it is
    /// stored sealed and sent in snapshots.
    pub fn full(&self) -> SecretString {
        let Some(c) = &self.credentials else {
            return SecretString::from(self.address());
        };
        let enc = |s: &str| -> String {
            url::form_urlencoded::byte_serialize(s.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        };
        SecretString::from(format!(
            "{}://{}:{}@{}:{}",
            self.scheme.as_str(),
            enc(c.username.expose_secret()),
            enc(c.password.expose_secret()),
            self.host,
            self.port
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> ProxyUrl {
        ProxyUrl::parse(s).unwrap()
    }

    #[test]
    fn schemes_hosts_ports_and_credentials() {
        let p = ok("http://proxy.example:3128");
        assert_eq!(
            (p.scheme, p.host.as_str(), p.port),
            (ProxyScheme::Http, "proxy.example", 3128)
        );
        assert!(p.credentials.is_none());
        assert_eq!(p.shown(), "http://proxy.example:3128");
        assert_eq!(
            ok("HTTPS://Proxy.Example").address(),
            "https://proxy.example:443"
        );
        assert_eq!(ok("socks5://127.0.0.1").port, 1080);
        assert_eq!(ok("http://10.0.0.1/").port, 80);
        assert_eq!(ok("socks5://[::1]:9050").host, "[::1]");
        let p = ok("socks5://al%40ice:p%3Ass+w@127.0.0.1:1080");
        let c = p.credentials.as_ref().unwrap();
        assert_eq!(c.username.expose_secret(), "al@ice");
        assert_eq!(c.password.expose_secret(), "p:ss+w");
        assert_eq!(p.shown(), "socks5://****@127.0.0.1:1080");
        assert_eq!(format!("{p:?}"), "socks5://****@127.0.0.1:1080");
        // The full form reads back as the same proxy.
        assert_eq!(ok(p.full().expose_secret()), p);
        // `&` and `=` as typed, and `%26` for `&`, are the password's own.
        for (typed, password) in [
            ("pa&ss=x", "pa&ss=x"),
            ("pa%26ss", "pa&ss"),
            ("a&b&c", "a&b&c"),
        ] {
            let p = ok(&format!("http://u&v:{typed}@h:1"));
            let c = p.credentials.as_ref().unwrap();
            assert_eq!(c.username.expose_secret(), "u&v");
            assert_eq!(c.password.expose_secret(), password, "{typed}");
            assert_eq!(ok(p.full().expose_secret()), p);
        }
        let q = ok("http://user:@h:1");
        assert_eq!(q.credentials.as_ref().unwrap().password.expose_secret(), "");
        assert_ne!(q, ok("http://user:x@h:1"));
    }

    #[test]
    fn refusals_name_the_field_and_never_the_value() {
        for bad in [
            "",
            "proxy.example:3128",
            "ftp://h",
            "socks4://h",
            "http://",
            "http://:80",
            "http://@h",
            "http://:secretpw@h",
            "http://h/path",
            "http://h?q=secretpw",
            "http://h#secretpw",
            "http://h:0",
            "http://h:99999",
            "http://h:x",
            "http://h secretpw",
            "http://h\n",
        ] {
            let e = ProxyUrl::parse(bad).expect_err(bad).0;
            assert!(e.starts_with("proxy "), "{bad}: {e}");
            assert!(!e.contains("secretpw"), "{bad}: {e}");
        }
    }
}
