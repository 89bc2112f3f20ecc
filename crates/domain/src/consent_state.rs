//! The `state` parameter of both round trips (sign-in, admin consent): what we sent out, signed,
//! so the callback can trust it. Microsoft echoes it back untouched; `tenant` in the same
//! redirect can be forged, this cannot.
//!
//! Format: `base64url(json payload) "." base64url(HMAC-SHA256(key, payload part))`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::connection::AppRegistration;
use crate::consent::{ConsentRequest, LegKind};
use crate::ids::{Email, OrgId};

/// Longest `state` we look at; anything longer is not ours.
pub const MAX_STATE_LEN: usize = 2048;

#[derive(Serialize, Deserialize)]
struct Payload {
    n: String,
    o: OrgId,
    u: Email,
    a: AppRegistration,
    e: i64,
    l: LegKind,
}

pub fn sign(request: &ConsentRequest, key: &[u8]) -> String {
    let payload = Payload {
        n: request.nonce.clone(),
        o: request.org.clone(),
        u: request.initiated_by.clone(),
        a: request.app,
        e: request.expires_at.unix_timestamp(),
        l: request.leg.kind(),
    };
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap_or_default());
    let mac = URL_SAFE_NO_PAD.encode(mac(key, body.as_bytes()));
    format!("{body}.{mac}")
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Why a state was refused. The callback says only "invalid or expired" to the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRejection {
    Malformed,
    BadSignature,
    Expired,
}

/// What a verified state claims; still to be matched against the stored, single-use request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedClaims {
    pub nonce: String,
    pub org: OrgId,
    pub initiated_by: Email,
    pub app: AppRegistration,
    pub expires_at: OffsetDateTime,
    pub leg: LegKind,
}

pub fn verify(
    state: &str,
    key: &[u8],
    now: OffsetDateTime,
) -> Result<SignedClaims, StateRejection> {
    if state.len() > MAX_STATE_LEN {
        return Err(StateRejection::Malformed);
    }
    let (body, sig) = state.split_once('.').ok_or(StateRejection::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| StateRejection::Malformed)?;
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(body.as_bytes());
    // Constant-time comparison.
    m.verify_slice(&sig)
        .map_err(|_| StateRejection::BadSignature)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| StateRejection::Malformed)?;
    let p: Payload = serde_json::from_slice(&bytes).map_err(|_| StateRejection::Malformed)?;
    let expires_at =
        OffsetDateTime::from_unix_timestamp(p.e).map_err(|_| StateRejection::Malformed)?;
    if now >= expires_at {
        return Err(StateRejection::Expired);
    }
    Ok(SignedClaims {
        nonce: p.n,
        org: p.o,
        initiated_by: p.u,
        app: p.a,
        expires_at,
        leg: p.l,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn request() -> ConsentRequest {
        ConsentRequest {
            nonce: "abc".into(),
            org: OrgId::parse("acme").unwrap(),
            initiated_by: Email::parse("root@contoso.com").unwrap(),
            app: AppRegistration::Default,
            expires_at: OffsetDateTime::now_utc() + Duration::minutes(15),
            leg: crate::consent::ConsentLeg::SignIn {
                pkce_verifier: "v".into(),
                oidc_nonce: "n".into(),
            },
        }
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_state_verifies_and_carries_its_claims() {
        let state = sign(&request(), KEY);
        let claims = verify(&state, KEY, OffsetDateTime::now_utc()).unwrap();
        assert_eq!(claims.nonce, "abc");
        assert_eq!(claims.org.as_str(), "acme");
        assert_eq!(claims.leg, LegKind::SignIn);
    }

    #[test]
    fn forged_tampered_and_expired_states_are_refused() {
        let state = sign(&request(), KEY);
        assert_eq!(
            verify(
                &state,
                b"another-key-another-key-another!!",
                OffsetDateTime::now_utc()
            ),
            Err(StateRejection::BadSignature)
        );
        let (body, sig) = state.split_once('.').unwrap();
        let mut other = request();
        other.org = OrgId::parse("evil").unwrap();
        let (evil_body, _) = sign(&other, b"attacker-key-attacker-key-attack")
            .split_once('.')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        assert_eq!(
            verify(
                &format!("{evil_body}.{sig}"),
                KEY,
                OffsetDateTime::now_utc()
            ),
            Err(StateRejection::BadSignature)
        );
        assert_eq!(
            verify(body, KEY, OffsetDateTime::now_utc()),
            Err(StateRejection::Malformed)
        );
        assert_eq!(
            verify("", KEY, OffsetDateTime::now_utc()),
            Err(StateRejection::Malformed)
        );
        let later = OffsetDateTime::now_utc() + Duration::minutes(16);
        assert_eq!(verify(&state, KEY, later), Err(StateRejection::Expired));
    }
}
