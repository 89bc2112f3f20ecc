//! Every outbound HTTPS client of o365-sync starts here. Trust is Mozilla's root certificates
//! compiled into the binary (`webpki-root-certs`), built into one rustls configuration per
//! process: no client reads the platform's certificate files at start. Loading them (the bundle
//! and every file of `/etc/ssl/certs`, once per client) was most of our functions' init time
//! (735 files before user-api's first poll). The AWS SDK gets the roots AWS endpoints chain to
//! ([`aws_root_certificates_pem`]).

use std::sync::{Arc, OnceLock};

use base64::Engine;
use rustls::crypto::CryptoProvider;

static TLS: OnceLock<rustls::ClientConfig> = OnceLock::new();

/// A client builder sharing the process's TLS configuration.
pub fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(TLS.get_or_init(shared_tls).clone())
}

fn shared_tls() -> rustls::ClientConfig {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The roots AWS service endpoints chain to (Amazon Trust Services' four, and the Starfield
/// roots that cross-sign them), found in Mozilla's list by the subject names they carry.
const AWS_ROOT_NAMES: [&[u8]; 3] = [
    b"Amazon Root CA ",
    b"Starfield Services Root Certificate Authority - G2",
    b"Starfield Class 2 Certification Authority",
];

/// The AWS SDK's trust store, as PEM (the form its TLS context takes): only the roots AWS
/// endpoints chain to. The SDK talks to AWS alone, so trusting the other hundred-odd roots adds
/// nothing but risk, and turning them to PEM and back was a fifth of each function's init.
pub fn aws_root_certificates_pem() -> impl Iterator<Item = Vec<u8>> {
    // A byte-by-byte scan of every certificate for each name was a tenth of user-api's init.
    let names = AWS_ROOT_NAMES.map(memchr::memmem::Finder::new);
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .filter(move |der| names.iter().any(|name| name.find(der).is_some()))
        .map(|der| pem(der.as_ref()))
}

fn pem(der: &[u8]) -> Vec<u8> {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem.into_bytes()
}

#[cfg(test)]
mod tests {
    #[test]
    fn clients_build_from_the_shared_configuration() {
        assert!(super::builder().build().is_ok());
        assert!(super::TLS.get().is_some());
        assert!(super::builder().build().is_ok());
        // Amazon Root CA 1 to 4 and the Starfield roots: what AWS endpoints chain to.
        let pems: Vec<_> = super::aws_root_certificates_pem().collect();
        assert!((5..=6).contains(&pems.len()), "{}", pems.len());
        assert!(pems[0].starts_with(b"-----BEGIN CERTIFICATE-----\n"));
    }
}
