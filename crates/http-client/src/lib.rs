//! Every outbound HTTPS client of o365-sync (Graph, the identity platform, JWKS) starts from
//! [`builder`], so the TLS trust — the platform's root certificates, verified the way reqwest
//! does by default — is built once per process. Built per client it read every file under
//! `/etc/ssl/certs` each time (735 opens before user-api's first poll), which showed in cold
//! starts.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

static TLS: OnceLock<Option<rustls::ClientConfig>> = OnceLock::new();

/// A client builder sharing the process's TLS configuration (reqwest's own default if the
/// shared one cannot be built).
pub fn builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match TLS.get_or_init(shared_tls) {
        Some(tls) => builder.tls_backend_preconfigured(tls.clone()),
        None => builder,
    }
}

fn shared_tls() -> Option<rustls::ClientConfig> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).ok()?;
    Some(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn clients_build_from_the_shared_configuration() {
        assert!(super::builder().build().is_ok());
        assert!(super::TLS.get().is_some_and(Option::is_some));
        assert!(super::builder().build().is_ok());
    }
}
