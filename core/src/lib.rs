//! Pure domain logic shared by llmgw's binaries, with no I/O: validation of
//! names and URLs, the rule language for targets, client-key hashing, and the
//! routing table that a data plane builds from a discovery snapshot.

pub mod body;
pub mod defaults;
pub mod endpoint;
pub mod keys;
pub mod limits;
pub mod outlier;
pub mod price;
pub mod proxy;
pub mod quota;
pub mod routing;
pub mod rules;
pub mod serving;
pub mod table;
pub mod tokens;
pub mod upstream;
pub mod validate;

pub use table::{RoutingTable, SnapshotError};
pub use validate::{Protocol, Strategy, ValidationError};

/// An error with its causes (`source()`, where hyper keeps them) on one
/// line, joined by `": "`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_chain_names_every_cause() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(super::error_chain(&e), "client error: connection refused");
    }
}
