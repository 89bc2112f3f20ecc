//! The simulator's signing keys. Graph access tokens are always signed with the first key; ID
//! tokens with the "current" key of a ring of three that the control API publishes and rotates
//! (relying parties must refetch the JWKS on an unknown `kid`). A fourth key is never
//! published, for the `UnknownKey` tamper.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::Value;
use sha1::Digest as _;
use uuid::Uuid;

use crate::SimHandle;
use crate::model::IdTokenTamper;

const RING_PEMS: [(&str, &str); 3] = [
    (
        include_str!("keys/sim-signing.key.pem"),
        include_str!("keys/sim-signing.pub.pem"),
    ),
    (
        include_str!("keys/sim-signing-2.key.pem"),
        include_str!("keys/sim-signing-2.pub.pem"),
    ),
    (
        include_str!("keys/sim-signing-3.key.pem"),
        include_str!("keys/sim-signing-3.pub.pem"),
    ),
];
const UNPUBLISHED_PEM: (&str, &str) = (
    include_str!("keys/sim-unpublished.key.pem"),
    include_str!("keys/sim-unpublished.pub.pem"),
);

pub(crate) struct SigningKey {
    pub enc: EncodingKey,
    pub dec: DecodingKey,
    /// base64url SHA-1 of the public key PEM (also the JWK's `x5t`).
    pub kid: String,
    pub pub_pem: &'static str,
    /// JWK modulus and exponent, base64url big-endian.
    pub n: String,
    pub e: String,
}

impl SigningKey {
    fn load((key, public): (&str, &'static str)) -> SigningKey {
        // The keys are part of the crate; failing to parse one is a build defect.
        let enc = EncodingKey::from_rsa_pem(key.as_bytes()).expect("embedded signing key");
        let dec = DecodingKey::from_rsa_pem(public.as_bytes()).expect("embedded public key");
        let rsa = RsaPublicKey::from_public_key_pem(public).expect("embedded public key (SPKI)");
        SigningKey {
            enc,
            dec,
            kid: URL_SAFE_NO_PAD.encode(&sha1::Sha1::digest(public.as_bytes())[..]),
            pub_pem: public,
            n: URL_SAFE_NO_PAD.encode(rsa.n().to_bytes_be()),
            e: URL_SAFE_NO_PAD.encode(rsa.e().to_bytes_be()),
        }
    }

    /// JWK as Microsoft's `discovery/v2.0/keys` lists it.
    pub fn jwk(&self, issuer: &str) -> Value {
        serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": self.n,
            "e": self.e,
            "issuer": issuer,
        })
    }

    /// RS256 with `typ`, `alg` and `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.kid = Some(self.kid.clone());
        // Signing a JSON value with an embedded RSA key cannot fail.
        jsonwebtoken::encode(&header, claims, &self.enc).expect("RS256 signing")
    }
}

pub(crate) struct Keys {
    pub ring: Vec<SigningKey>,
    pub unpublished: SigningKey,
}

impl Keys {
    pub fn load() -> Keys {
        Keys {
            ring: RING_PEMS.into_iter().map(SigningKey::load).collect(),
            unpublished: SigningKey::load(UNPUBLISHED_PEM),
        }
    }

    /// The key of Graph access tokens (never rotated: only Graph validates them).
    pub fn access(&self) -> &SigningKey {
        &self.ring[0]
    }
}

/// Published ring keys in publication order, and the one that signs ID tokens.
#[derive(Clone, Debug)]
pub(crate) struct RingState {
    pub current: usize,
    pub published: Vec<usize>,
}

impl Default for RingState {
    fn default() -> Self {
        RingState {
            current: 0,
            published: vec![0],
        }
    }
}

impl RingState {
    fn next(&self) -> usize {
        (self.current + 1) % RING_PEMS.len()
    }

    fn pos(&self, k: usize) -> Option<usize> {
        self.published.iter().position(|p| *p == k)
    }

    pub fn publish_next(&mut self) -> usize {
        let next = self.next();
        if self.pos(next).is_none() {
            self.published.push(next);
        }
        next
    }

    pub fn rotate(&mut self) -> usize {
        let next = self.next();
        match (self.pos(next), self.pos(self.current)) {
            // Published before the current key (the ring wrapped): publish it afresh, last.
            (Some(p), Some(c)) if p < c => {
                self.published.remove(p);
                self.published.push(next);
            }
            (Some(_), _) => {}
            (None, _) => self.published.push(next),
        }
        self.current = next;
        next
    }

    /// Unpublish every key published before the current one.
    pub fn retire_old(&mut self) {
        if let Some(c) = self.pos(self.current) {
            self.published.drain(..c);
        }
    }
}

/// Sign ID-token claims with the current key, altered as `tamper` says.
pub(crate) fn sign_id_token(
    keys: &Keys,
    ring: &RingState,
    mut claims: Value,
    tamper: Option<IdTokenTamper>,
    base_url: &str,
) -> String {
    let key = &keys.ring[ring.current];
    let now = crate::util::now().unix_timestamp();
    match tamper {
        None => {}
        Some(IdTokenTamper::WrongAudience) => {
            claims["aud"] = Uuid::new_v4().to_string().into();
        }
        Some(IdTokenTamper::IssuerTenantMismatch) => {
            claims["iss"] = format!("{base_url}/{}/v2.0", Uuid::new_v4()).into();
        }
        Some(IdTokenTamper::WrongNonce) => {
            claims["nonce"] = format!("tampered-{}", Uuid::new_v4().simple()).into();
        }
        Some(IdTokenTamper::Expired) => {
            claims["iat"] = (now - 7200).into();
            claims["nbf"] = (now - 7200).into();
            claims["exp"] = (now - 3600).into();
        }
        Some(IdTokenTamper::MissingWids) => {
            if let Some(o) = claims.as_object_mut() {
                o.remove("wids");
            }
        }
        Some(IdTokenTamper::UnknownKey) => return keys.unpublished.sign(&claims),
        Some(IdTokenTamper::AlgNone) => {
            let header = serde_json::json!({"typ": "JWT", "alg": "none", "kid": key.kid});
            return format!("{}.{}.", b64_json(&header), b64_json(&claims));
        }
        Some(IdTokenTamper::Hs256WithPublicKey) => {
            let header = serde_json::json!({"typ": "JWT", "alg": "HS256", "kid": key.kid});
            let input = format!("{}.{}", b64_json(&header), b64_json(&claims));
            let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.pub_pem.as_bytes())
                .expect("any key length works for HMAC");
            m.update(input.as_bytes());
            return format!(
                "{input}.{}",
                URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
            );
        }
    }
    key.sign(&claims)
}

fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

impl SimHandle {
    /// Publish the next ID-token key in the JWKS without signing with it yet. Returns its kid.
    pub fn publish_next_signing_key(&self) -> String {
        let k = self.shared.lock().ring.publish_next();
        self.shared.keys.ring[k].kid.clone()
    }

    /// Sign ID tokens with the next key from now on (published first if it was not; the old
    /// key stays published). Returns the new kid.
    pub fn rotate_signing_key(&self) -> String {
        let k = self.shared.lock().ring.rotate();
        self.shared.keys.ring[k].kid.clone()
    }

    /// Remove the keys published before the current one from the JWKS.
    pub fn retire_old_signing_keys(&self) {
        self.shared.lock().ring.retire_old();
    }

    /// kid of the key that signs ID tokens now.
    pub fn current_signing_kid(&self) -> String {
        let k = self.shared.lock().ring.current;
        self.shared.keys.ring[k].kid.clone()
    }

    /// kids listed in the JWKS, in publication order.
    pub fn published_signing_kids(&self) -> Vec<String> {
        let st = self.shared.lock();
        st.ring
            .published
            .iter()
            .map(|k| self.shared.keys.ring[*k].kid.clone())
            .collect()
    }

    /// Alter every ID token issued from now on (None: issue them correctly again).
    pub fn set_id_token_tamper(&self, tamper: Option<IdTokenTamper>) {
        self.shared.lock().id_token_tamper = tamper;
    }

    /// Sign arbitrary claims as an ID token (RS256, `kid` of the current published key), for
    /// tests of a relying party's validation. No claim is added or checked.
    pub fn sign_id_token(&self, claims: &Value) -> String {
        let k = self.shared.lock().ring.current;
        self.shared.keys.ring[k].sign(claims)
    }
}
