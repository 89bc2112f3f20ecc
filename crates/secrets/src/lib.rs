//! Adapters of the domain's [`SecretStore`] port.
//!
//! Secret formats (JSON in `SecretString`):
//! - an app credential: `{"client_id": "…", "client_secret": "…"}` or
//!   `{"client_id": "…", "certificate_pem": "…", "private_key_pem": "…"}`;
//! - the consent-state signing key: `{"state_signing_key": "…"}` (at least 32 characters).

mod local;
mod secrets_manager;

pub use local::LocalSecretStore;
pub use secrets_manager::{SecretIds, SecretsManagerStore};

use serde::Deserialize;

use o365_domain::DomainError;
use o365_domain::secret::{AppCredential, ClientCredential, Sensitive};

/// The shortest signing key we accept (HMAC-SHA256 wants at least its output size).
pub const MIN_SIGNING_KEY_BYTES: usize = 32;

#[derive(Deserialize)]
struct AppCredentialDocument {
    client_id: String,
    client_secret: Option<String>,
    certificate_pem: Option<String>,
    private_key_pem: Option<String>,
}

#[derive(Deserialize)]
struct SigningKeyDocument {
    state_signing_key: String,
}

fn misconfigured(what: &str, why: &str) -> DomainError {
    // Operators see which secret is wrong; the value itself is never printed.
    tracing::error!(secret = what, problem = why, "secret is misconfigured");
    DomainError::Unavailable(format!("the {what} secret is misconfigured: {why}"))
}

/// Parses an app-credential secret document.
pub fn parse_app_credential(what: &str, json: &str) -> Result<AppCredential, DomainError> {
    let doc: AppCredentialDocument = serde_json::from_str(json)
        .map_err(|_| misconfigured(what, "not a JSON object with client_id and a credential"))?;
    if doc.client_id.trim().is_empty() {
        return Err(misconfigured(what, "client_id is empty"));
    }
    let credential = match (doc.client_secret, doc.certificate_pem, doc.private_key_pem) {
        // A certificate wins: Microsoft recommends it over secrets.
        (_, Some(certificate_pem), Some(key)) => ClientCredential::Certificate {
            certificate_pem,
            private_key_pem: Sensitive::new(key),
        },
        (Some(secret), None, None) if !secret.is_empty() => {
            ClientCredential::Secret(Sensitive::new(secret))
        }
        _ => {
            return Err(misconfigured(
                what,
                "needs client_secret, or certificate_pem with private_key_pem",
            ));
        }
    };
    Ok(AppCredential {
        client_id: doc.client_id.trim().to_owned(),
        credential,
    })
}

/// Parses the signing-key secret document.
pub fn parse_signing_key(json: &str) -> Result<Sensitive<Vec<u8>>, DomainError> {
    let doc: SigningKeyDocument = serde_json::from_str(json).map_err(|_| {
        misconfigured(
            "state signing key",
            "not a JSON object with state_signing_key",
        )
    })?;
    if doc.state_signing_key.len() < MIN_SIGNING_KEY_BYTES {
        return Err(misconfigured(
            "state signing key",
            "shorter than 32 characters",
        ));
    }
    Ok(Sensitive::new(doc.state_signing_key.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_credentials_are_preferred() {
        let c = parse_app_credential("app", r#"{"client_id":"abc","client_secret":"s","certificate_pem":"C","private_key_pem":"K"}"#).unwrap();
        assert!(matches!(c.credential, ClientCredential::Certificate { .. }));
    }

    #[test]
    fn broken_documents_say_what_is_wrong_without_the_value() {
        let err = parse_app_credential("default app", r#"{"client_id":"abc","client_secret":""}"#)
            .unwrap_err();
        assert!(err.to_string().contains("default app"));
        let err = parse_signing_key(r#"{"state_signing_key":"short-secret-value"}"#).unwrap_err();
        assert!(!err.to_string().contains("short-secret-value"));
    }
}
