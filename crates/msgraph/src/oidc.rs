//! Verifying Microsoft's ID token. Multi-tenant: the issuer names the tenant, so the token's own
//! `tid` picks the tenant's OpenID configuration (→ `jwks_uri`), and after the signature checks
//! out the issuer must be exactly `{authority}/{tid}/v2.0`. Only RS256 is accepted: `none`, HMAC
//! (e.g. keyed with the public key) and anything else are refused before a key is looked up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use o365_domain::failure::FailureCode;
use o365_domain::ids::TenantId;
use o365_domain::microsoft::{MicrosoftError, SignedInAccount};
use o365_jwks::{JwksCache, KeyError};
use serde::Deserialize;
use tokio::sync::RwLock;

/// Microsoft allows for clock skew of up to five minutes.
const LEEWAY_SECS: u64 = 300;
const DISCOVERY_TTL: Duration = Duration::from_secs(24 * 3600);
const KEY_MIN_REFETCH: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct UnverifiedTenant {
    tid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    tid: String,
    oid: Option<String>,
    nonce: Option<String>,
    preferred_username: Option<String>,
    wids: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

pub(crate) struct IdTokenVerifier {
    authority: String,
    http: reqwest::Client,
    keys: JwksCache,
    discovery: RwLock<HashMap<TenantId, (Instant, Discovery)>>,
}

fn invalid(reason: impl Into<String>) -> MicrosoftError {
    MicrosoftError::refused(FailureCode::InvalidIdToken, "id_token", reason)
}

fn unavailable(message: impl Into<String>) -> MicrosoftError {
    MicrosoftError::Unavailable {
        message: message.into(),
    }
}

impl IdTokenVerifier {
    pub(crate) fn new(authority: &str, http: reqwest::Client) -> Self {
        Self {
            authority: authority.trim_end_matches('/').to_owned(),
            // Keys cached for a day; an unknown `kid` refetches at most every 10 s per tenant
            // (the token comes from Microsoft's token endpoint, not from the browser, so this
            // bounds only Microsoft's own rotations and a misbehaving network).
            keys: JwksCache::new(http.clone(), DISCOVERY_TTL, KEY_MIN_REFETCH),
            http,
            discovery: RwLock::new(HashMap::new()),
        }
    }

    fn expected_issuer(&self, tenant: &TenantId) -> String {
        format!("{}/{tenant}/v2.0", self.authority)
    }

    /// Verifies `id_token` for our `client_id` and the `nonce` we sent.
    pub(crate) async fn verify(
        &self,
        id_token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<SignedInAccount, MicrosoftError> {
        let header =
            decode_header(id_token).map_err(|_| invalid("the ID token is not a signed JWT"))?;
        if header.alg != Algorithm::RS256 {
            return Err(invalid(format!(
                "the ID token is signed with {:?}; only RS256 is accepted",
                header.alg
            )));
        }
        let tenant = unverified_tenant(id_token)?;
        let jwks_uri = self.jwks_uri(&tenant).await?;
        let key = self
            .keys
            .key(&jwks_uri, header.kid.as_deref())
            .await
            .map_err(|e| match e {
                KeyError::Unavailable(why) => unavailable(format!("Microsoft's keys: {why}")),
                other => invalid(format!("the ID token's key: {other}")),
            })?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[client_id]);
        validation.set_issuer(&[self.expected_issuer(&tenant)]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let claims = decode::<Claims>(id_token, &key, &validation)
            .map_err(|e| invalid(reason(&e)))?
            .claims;
        if TenantId::parse(&claims.tid).ok() != Some(tenant) {
            return Err(invalid("the ID token's tenant does not match its issuer"));
        }
        if claims.nonce.as_deref() != Some(nonce) {
            return Err(invalid(
                "the ID token's nonce is not the one we sent (a replayed or foreign sign-in)",
            ));
        }
        let object_id = claims
            .oid
            .filter(|o| !o.is_empty())
            .ok_or_else(|| invalid("the ID token has no object id (oid)"))?;
        Ok(SignedInAccount {
            tenant,
            object_id,
            preferred_username: claims.preferred_username,
            directory_roles: claims.wids,
        })
    }

    /// The tenant's `jwks_uri`, from its OpenID configuration (cached).
    async fn jwks_uri(&self, tenant: &TenantId) -> Result<String, MicrosoftError> {
        if let Some((at, d)) = self.discovery.read().await.get(tenant)
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(d.jwks_uri.clone());
        }
        let url = format!(
            "{}/{tenant}/v2.0/.well-known/openid-configuration",
            self.authority
        );
        let doc: Discovery = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| unavailable(format!("OpenID configuration: {}", e.without_url())))?
            .json()
            .await
            .map_err(|e| unavailable(format!("OpenID configuration: {}", e.without_url())))?;
        if doc.issuer != self.expected_issuer(tenant) {
            return Err(invalid(format!(
                "the tenant's OpenID configuration names issuer '{}'",
                doc.issuer
            )));
        }
        let uri = doc.jwks_uri.clone();
        self.discovery
            .write()
            .await
            .insert(*tenant, (Instant::now(), doc));
        Ok(uri)
    }
}

/// The `tid` claim, read before verification only to choose whose keys verify the token.
fn unverified_tenant(token: &str) -> Result<TenantId, MicrosoftError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| invalid("the ID token is not a JWT"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| invalid("the ID token's payload is not base64url"))?;
    let claims: UnverifiedTenant = serde_json::from_slice(&bytes)
        .map_err(|_| invalid("the ID token's payload is not JSON"))?;
    claims
        .tid
        .as_deref()
        .and_then(|t| TenantId::parse(t).ok())
        .ok_or_else(|| invalid("the ID token names no tenant (tid)"))
}

fn reason(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        ExpiredSignature => "the ID token has expired",
        ImmatureSignature => "the ID token is not valid yet",
        InvalidAudience => "the ID token was issued to another application",
        InvalidIssuer => "the ID token's issuer is not its tenant's",
        InvalidSignature => "the ID token's signature does not verify",
        MissingRequiredClaim(_) => "the ID token lacks a required claim",
        InvalidAlgorithm => "the ID token's algorithm is not accepted",
        _ => "the ID token cannot be verified",
    }
    .to_owned()
}
