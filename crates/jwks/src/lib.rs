//! Verification keys of a token issuer, from its JSON Web Key Set.
//!
//! Keys rotate, so a token naming a key id the cache does not hold makes the set be fetched
//! again; but at most once per `min_refetch` per set, so made-up key ids cannot turn a
//! verifier into a flood against the issuer. Used for our platform's bearer tokens and for
//! Microsoft's ID tokens (one set per tenant).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use tokio::sync::RwLock;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key with that id, even after a (rate-limited) refetch.
    #[error("the token was signed by an unknown key")]
    Unknown,
    /// The key exists but cannot verify (e.g. not an RSA/EC key jsonwebtoken reads).
    #[error("the token's key is unusable")]
    Unusable,
    /// The issuer's key set could not be fetched.
    #[error("the key set could not be fetched: {0}")]
    Unavailable(String),
}

struct Entry {
    fetched_at: Instant,
    set: JwkSet,
}

pub struct JwksCache {
    http: reqwest::Client,
    ttl: Duration,
    min_refetch: Duration,
    sets: RwLock<HashMap<String, Entry>>,
}

impl JwksCache {
    pub fn new(http: reqwest::Client, ttl: Duration, min_refetch: Duration) -> Self {
        Self {
            http,
            ttl,
            min_refetch,
            sets: RwLock::new(HashMap::new()),
        }
    }

    /// The key `kid` of the set at `url` (`None`: the set's first key).
    pub async fn key(&self, url: &str, kid: Option<&str>) -> Result<DecodingKey, KeyError> {
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None => set.keys.first().cloned(),
        };
        if let Some(entry) = self.sets.read().await.get(url)
            && entry.fetched_at.elapsed() < self.ttl
        {
            match find(&entry.set) {
                Some(jwk) => return DecodingKey::from_jwk(&jwk).map_err(|_| KeyError::Unusable),
                None if entry.fetched_at.elapsed() < self.min_refetch => {
                    return Err(KeyError::Unknown);
                }
                None => {}
            }
        }
        // Unknown key id or stale cache: the issuer may have rotated its keys.
        let set = self.fetch(url).await?;
        let jwk = find(&set);
        self.sets.write().await.insert(
            url.to_owned(),
            Entry {
                fetched_at: Instant::now(),
                set,
            },
        );
        DecodingKey::from_jwk(&jwk.ok_or(KeyError::Unknown)?).map_err(|_| KeyError::Unusable)
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, KeyError> {
        let unavailable = |e: reqwest::Error| {
            let why = e.without_url().to_string();
            tracing::error!(error = %why, "cannot fetch a JWKS");
            KeyError::Unavailable(why)
        };
        self.http
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)
    }
}
