//! Bearer JWT verification. API Gateway's authorizer checks the token too; we check it again
//! (signature, issuer, audience, expiry) so the function is safe however it is reached.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use o365_jwks::{JwksCache, KeyError};
use serde_json::Value;

use o365_domain::ids::{Email, OrgId};

use crate::problem::ApiError;

/// Where verification keys come from.
pub enum KeySource {
    /// The identity provider's JWKS, fetched and cached; refetched when a token names an unknown key.
    Jwks { url: String, cache: JwksCache },
    /// One public key (PEM), for the embedded run.
    StaticRsaPem(DecodingKey),
    /// None: a function that serves no bearer-authenticated route (the consent callback)
    /// refuses every token rather than being configured with keys it never uses.
    None,
}

impl KeySource {
    /// Keys cached for an hour; a token naming an unknown key refetches at most every 30 s, so
    /// made-up key ids cannot turn our API into a flood against the identity provider.
    pub fn jwks(url: impl Into<String>) -> Self {
        Self::jwks_with(url, Duration::from_secs(3600), Duration::from_secs(30))
    }

    pub fn jwks_with(url: impl Into<String>, ttl: Duration, min_refetch: Duration) -> Self {
        KeySource::Jwks {
            url: url.into(),
            cache: JwksCache::new(
                o365_http_client::builder()
                    .build()
                    .expect("the HTTP client builds (rustls)"),
                ttl,
                min_refetch,
            ),
        }
    }

    pub fn rsa_public_pem(pem: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(KeySource::StaticRsaPem(DecodingKey::from_rsa_pem(pem)?))
    }
}

pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    pub org_claim: String,
    pub email_claim: String,
}

pub struct Authenticator {
    keys: KeySource,
    config: AuthConfig,
}

/// The org and email a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub org: OrgId,
    pub email: Email,
}

impl Authenticator {
    pub fn new(keys: KeySource, config: AuthConfig) -> Arc<Self> {
        Arc::new(Self { keys, config })
    }

    /// For a function without bearer-authenticated routes: every token is refused.
    pub fn refusing_all() -> Arc<Self> {
        Self::new(
            KeySource::None,
            AuthConfig {
                issuer: String::new(),
                audience: String::new(),
                org_claim: String::new(),
                email_claim: String::new(),
            },
        )
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, ApiError> {
        match &self.keys {
            KeySource::None => Err(ApiError::unauthenticated(
                "this function serves no bearer-authenticated route",
            )),
            KeySource::StaticRsaPem(key) => Ok(key.clone()),
            KeySource::Jwks { url, cache } => cache.key(url, kid).await.map_err(|e| match e {
                KeyError::Unavailable(_) => ApiError::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Temporarily unavailable",
                    "cannot verify tokens right now",
                ),
                other => ApiError::unauthenticated(other.to_string()),
            }),
        }
    }

    pub async fn verify(&self, authorization: Option<&str>) -> Result<Identity, ApiError> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthenticated("send a bearer token in the Authorization header")
            })?;
        let header = decode_header(token)
            .map_err(|_| ApiError::unauthenticated("the bearer token is not a JWT"))?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256
        ) {
            return Err(ApiError::unauthenticated(
                "the token's algorithm is not accepted",
            ));
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        // A token not valid yet is refused like an expired one.
        validation.validate_nbf = true;
        validation.leeway = 30;
        let claims = decode::<Value>(token, &key, &validation)
            .map_err(|e| {
                ApiError::unauthenticated(format!("the token is not valid: {}", reason(&e)))
            })?
            .claims;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let org = text(&self.config.org_claim)
            .and_then(|o| OrgId::parse(&o).ok())
            .ok_or_else(|| {
                ApiError::unauthenticated(format!(
                    "the token has no valid '{}' claim",
                    self.config.org_claim
                ))
            })?;
        let email = text(&self.config.email_claim)
            .and_then(|e| Email::parse(&e).ok())
            .ok_or_else(|| {
                ApiError::unauthenticated(format!(
                    "the token has no valid '{}' claim",
                    self.config.email_claim
                ))
            })?;
        Ok(Identity { org, email })
    }
}

fn reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        ExpiredSignature => "it has expired",
        InvalidAudience => "it is for another audience",
        InvalidIssuer => "it is from another issuer",
        InvalidSignature => "its signature does not verify",
        ImmatureSignature => "it is not valid yet",
        _ => "it cannot be verified",
    }
}
