//! Credentials held in the secret store. Never printed: `Debug` shows only that a value exists.

use std::fmt;

/// A value that must not reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Read the value; call sites are few and easy to audit.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sensitive(***)")
    }
}

/// How our app proves itself to Microsoft's token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCredential {
    Secret(Sensitive<String>),
    /// An X.509 certificate registered on the app, and its private key (PEM).
    Certificate {
        certificate_pem: String,
        private_key_pem: Sensitive<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCredential {
    pub client_id: String,
    pub credential: ClientCredential,
}

/// Whether a cached value may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// A cached value within its time to live is fine.
    Cached,
    /// Microsoft just refused the cached value (it may have been rotated): read it again.
    Refresh,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_values_never_print() {
        let c = ClientCredential::Secret(Sensitive::new("s3cr3t-value".into()));
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
