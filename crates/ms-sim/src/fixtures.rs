//! A test certificate and its private key (RSA 2048, self-signed, generated once with
//! `openssl req -x509`). Register the certificate on a simulated app and sign client
//! assertions with the key. Never use them outside tests.

pub const CLIENT_CERT_PEM: &str = include_str!("../tests/fixtures/client.cert.pem");
pub const CLIENT_KEY_PEM: &str = include_str!("../tests/fixtures/client.key.pem");
/// A second pair that is registered nowhere by default.
pub const OTHER_CERT_PEM: &str = include_str!("../tests/fixtures/other.cert.pem");
pub const OTHER_KEY_PEM: &str = include_str!("../tests/fixtures/other.key.pem");
