//! App-only tokens: client-credentials grant with a secret or a certificate assertion.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use o365_domain::connection::AppRegistration;
use o365_domain::failure::FailureCode;
use o365_domain::ids::TenantId;
use o365_domain::microsoft::MicrosoftError;
use o365_domain::secret::{AppCredential, ClientCredential, Freshness, Sensitive};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::GraphClient;
use crate::errors::{TokenRefusal, classify_token_error};

pub(crate) const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

struct CachedToken {
    token: Sensitive<String>,
    renew_at: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

/// One slot per (tenant, app); the slot's lock makes concurrent callers share one fetch.
#[derive(Default)]
pub(crate) struct TokenCache {
    slots: std::sync::Mutex<HashMap<(TenantId, AppRegistration), Slot>>,
}

impl TokenCache {
    fn slot(&self, tenant: TenantId, app: AppRegistration) -> Slot {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((tenant, app))
            .or_default()
            .clone()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct TokenClaims {
    tid: Option<String>,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

enum TokenFailure {
    Refused(TokenRefusal),
    Transient(String),
}

fn unavailable(message: impl Into<String>) -> MicrosoftError {
    MicrosoftError::Unavailable {
        message: message.into(),
    }
}

/// DER bytes of the first certificate in a PEM document.
fn certificate_der(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + pem[start..].find("-----END CERTIFICATE-----")?;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

/// The signed client assertion for a certificate credential.
pub(crate) fn client_assertion(
    token_url: &str,
    client_id: &str,
    certificate_pem: &str,
    private_key_pem: &str,
) -> Result<String, MicrosoftError> {
    let der = certificate_der(certificate_pem).ok_or_else(|| {
        MicrosoftError::refused(
            FailureCode::InvalidCredential,
            "certificate",
            "the configured certificate is not a PEM certificate",
        )
    })?;
    let key = EncodingKey::from_rsa_pem(private_key_pem.as_bytes()).map_err(|_| {
        MicrosoftError::refused(
            FailureCode::InvalidCredential,
            "certificate",
            "the configured private key is not an RSA key in PEM form",
        )
    })?;
    let mut header = Header::new(Algorithm::PS256);
    header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der)));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = AssertionClaims {
        aud: token_url,
        iss: client_id,
        sub: client_id,
        jti: uuid::Uuid::new_v4().to_string(),
        nbf: now,
        iat: now,
        exp: now + 600,
    };
    jsonwebtoken::encode(&header, &claims, &key).map_err(|_| {
        MicrosoftError::refused(
            FailureCode::InvalidCredential,
            "certificate",
            "the client assertion could not be signed with the configured key",
        )
    })
}

/// The `tid` claim of an access token (read, not verified: we are the client).
pub(crate) fn token_tenant(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<TokenClaims>(&bytes).ok()?.tid
}

impl GraphClient {
    /// A token for `tenant` with `app`'s credential: cached until shortly before it expires.
    pub(crate) async fn token(
        &self,
        tenant: &TenantId,
        app: AppRegistration,
        renew: bool,
    ) -> Result<Sensitive<String>, MicrosoftError> {
        let slot = self.inner.tokens.slot(*tenant, app);
        let mut cached = slot.lock().await;
        if !renew
            && let Some(c) = cached.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.fetch_token(tenant, app).await?;
        let margin = self.inner.cfg.token_refresh_margin.min(lifetime / 2);
        *cached = Some(CachedToken {
            token: token.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(token)
    }

    /// Drops a cached token (e.g. Graph no longer accepts it).
    pub fn forget_token(&self, tenant: &TenantId, app: AppRegistration) {
        let slot = self.inner.tokens.slot(*tenant, app);
        if let Ok(mut c) = slot.try_lock() {
            *c = None;
        }
    }

    async fn fetch_token(
        &self,
        tenant: &TenantId,
        app: AppRegistration,
    ) -> Result<(Sensitive<String>, Duration), MicrosoftError> {
        let secrets = &self.inner.secrets;
        let credential = secrets
            .app_credential(app, Freshness::Cached)
            .await
            .map_err(|e| unavailable(format!("cannot read the app credential: {e}")))?;
        let first = self.request_token(tenant, &credential).await;
        let result = match first {
            Err(TokenFailure::Refused(TokenRefusal::BadCredential(_))) => {
                // The credential may have been rotated since we cached it: read it again, once.
                tracing::warn!(tenant = %tenant, app = app.as_str(), "credential refused; reading it again");
                let fresh = secrets
                    .app_credential(app, Freshness::Refresh)
                    .await
                    .map_err(|e| unavailable(format!("cannot read the app credential: {e}")))?;
                self.request_token(tenant, &fresh).await
            }
            other => other,
        };
        let (token, lifetime) = match result {
            Ok(t) => t,
            Err(TokenFailure::Refused(TokenRefusal::BadCredential(e)))
            | Err(TokenFailure::Refused(TokenRefusal::Final(e))) => {
                if let MicrosoftError::Refused { microsoft_code, .. } = &e {
                    tracing::warn!(tenant = %tenant, app = app.as_str(), microsoft_code, "token refused");
                }
                return Err(e);
            }
            Err(TokenFailure::Transient(why)) => return Err(unavailable(why)),
        };
        let tid = token_tenant(token.expose());
        if tid.as_deref().map(str::to_ascii_lowercase) != Some(tenant.to_string()) {
            tracing::warn!(tenant = %tenant, token_tenant = tid.as_deref().unwrap_or("none"), "token issued for another tenant");
            return Err(MicrosoftError::refused(
                FailureCode::TenantMismatch,
                "tid",
                format!(
                    "The token was issued for tenant '{}', not for tenant '{tenant}'.",
                    tid.unwrap_or_default()
                ),
            ));
        }
        Ok((token, lifetime))
    }

    /// One token request, retried on 5xx and transport failures.
    async fn request_token(
        &self,
        tenant: &TenantId,
        credential: &AppCredential,
    ) -> Result<(Sensitive<String>, Duration), TokenFailure> {
        let cfg = &self.inner.cfg;
        let url = format!(
            "{}/{tenant}/oauth2/v2.0/token",
            cfg.authority_url.trim_end_matches('/')
        );
        let mut attempt = 0u32;
        loop {
            let mut form: Vec<(&str, String)> = vec![
                ("client_id", credential.client_id.clone()),
                ("scope", GRAPH_SCOPE.to_owned()),
                ("grant_type", "client_credentials".to_owned()),
            ];
            match &credential.credential {
                ClientCredential::Secret(s) => form.push(("client_secret", s.expose().clone())),
                ClientCredential::Certificate {
                    certificate_pem,
                    private_key_pem,
                } => {
                    let assertion = client_assertion(
                        &url,
                        &credential.client_id,
                        certificate_pem,
                        private_key_pem.expose(),
                    )
                    .map_err(|e| TokenFailure::Refused(TokenRefusal::Final(e)))?;
                    form.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
                    form.push(("client_assertion", assertion));
                }
            }
            self.inner
                .stats
                .token_requests
                .fetch_add(1, Ordering::Relaxed);
            let outcome: Result<std::convert::Infallible, String> =
                match self.inner.http.post(&url).form(&form).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        match resp.text().await {
                            Ok(body) if (200..300).contains(&status) => {
                                match serde_json::from_str::<TokenResponse>(&body) {
                                    Ok(t) => {
                                        let secs = match t.expires_in {
                                            Some(serde_json::Value::Number(n)) => n.as_u64(),
                                            Some(serde_json::Value::String(s)) => s.parse().ok(),
                                            _ => None,
                                        }
                                        .unwrap_or(3599);
                                        return Ok((
                                            Sensitive::new(t.access_token),
                                            Duration::from_secs(secs),
                                        ));
                                    }
                                    Err(_) => Err("the token answer is not valid JSON".to_owned()),
                                }
                            }
                            Ok(body) => match classify_token_error(status, &body) {
                                Some(r) => return Err(TokenFailure::Refused(r)),
                                None => Err(format!("the token endpoint answered {status}")),
                            },
                            Err(_) => Err("the token answer was cut short".to_owned()),
                        }
                    }
                    Err(e) => Err(format!("token request failed: {}", crate::without_url(&e))),
                };
            let Err(why) = outcome;
            attempt += 1;
            tracing::warn!(tenant = %tenant, attempt, problem = why, "token request failed");
            if attempt >= cfg.max_transient_attempts {
                return Err(TokenFailure::Transient(why));
            }
            tokio::time::sleep(self.backoff(attempt - 1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_claim_is_read_without_verification() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"tid":"72f988bf-86f1-41af-91ab-2d7cd011db47"}"#);
        let token = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        assert_eq!(
            token_tenant(&token).as_deref(),
            Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
        );
        assert_eq!(token_tenant("garbage"), None);
    }
}
