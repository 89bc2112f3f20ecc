//! The service-account connection end to end: activate → the simulator's consent page → our
//! callback → the front-end redirect, and every failure an admin can meet on the way.

use std::sync::Arc;
use std::time::Duration;

use ms_sim::{ConsentDecision, ConsentOutcome, NonAdminConsent, PropagationFailure, SimConfig};
use o365_domain::connection::AppRegistration;
use o365_domain::ids::OrgId;
use o365_domain::page::PageRequest;
use o365_domain::ports::{AuditLog, OrgStore};
use o365_domain::secret::{AppCredential, ClientCredential, Sensitive};
use o365_e2e::api::{ApiHarness, FRONTEND, NoQueue, Reply};
use reqwest::StatusCode;
use serde_json::json;

const PRIMARY: &str = "globaladmin@contoso.com";

async fn harness(config: SimConfig) -> ApiHarness {
    ApiHarness::start(config, Arc::new(NoQueue)).await
}

/// Follows the consent URL as the admin's browser would, then Microsoft's redirect to us.
async fn consent(h: &ApiHarness, url: &str, as_user: &str, decision: ConsentDecision) -> Reply {
    match h
        .sim
        .browser_consent(url, as_user, decision)
        .await
        .expect("the consent page works")
    {
        ConsentOutcome::Redirect { location, .. } => {
            h.call("GET", &location, None, None, &[]).await
        }
        ConsentOutcome::Page { status, aadsts, .. } => {
            panic!("Microsoft kept the browser on a page: {status} AADSTS{aadsts:?}")
        }
    }
}

async fn integration(h: &ApiHarness, org: &str) -> serde_json::Value {
    let r = h
        .as_user(org, PRIMARY, "GET", "/v1/integration", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

fn expect_front_end(r: &Reply, outcome: &str) {
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    assert_eq!(
        r.location(),
        format!("{FRONTEND}/settings/connection?connection={outcome}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_admin_connects_once_and_the_grant_is_proven() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    let url = h.activate("acme").await;
    assert!(
        url.starts_with(&format!(
            "{}/organizations/v2.0/adminconsent?",
            h.sim.authority()
        )),
        "{url}"
    );
    assert!(url.contains(&format!("client_id={}", h.default_app.client_id)));
    assert!(url.contains("scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"));
    assert_eq!(
        integration(&h, "acme").await["connection"]["status"],
        "pending_consent"
    );

    let back = consent(&h, &url, PRIMARY, ConsentDecision::Accept).await;
    expect_front_end(&back, "connected");
    let view = integration(&h, "acme").await;
    let c = &view["connection"];
    assert_eq!(c["status"], "connected");
    assert_eq!(c["tenant_id"], h.tenant.id.to_string());
    assert_eq!(c["app"], "default");
    assert_eq!(c["granted_by"], PRIMARY);
    assert!(c["granted_at"].is_string() && c["last_verified_at"].is_string());
    assert!(c["error"].is_null());
    let org = OrgId::parse("acme").unwrap();
    let actions: Vec<String> = h
        .fixture
        .store
        .list_audit(&org, PageRequest::first(50))
        .await
        .unwrap()
        .items
        .iter()
        .map(|e| {
            serde_json::to_value(e.action)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for expected in [
        "settings_changed",
        "connection_activated",
        "consent_granted",
        "connection_verified",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_propagation_window_still_ends_connected_without_a_manual_retry() {
    for failure in [PropagationFailure::Token, PropagationFailure::Graph] {
        let h = harness(SimConfig {
            propagation: Duration::from_secs(10),
            propagation_failure: failure,
            ..SimConfig::default()
        })
        .await;
        h.org("acme").await;
        let url = h.activate("acme").await;
        let started = std::time::Instant::now();
        let back = consent(&h, &url, PRIMARY, ConsentDecision::Accept).await;
        expect_front_end(&back, "connected");
        assert!(
            started.elapsed() >= Duration::from_secs(9),
            "the window was real ({:?})",
            started.elapsed()
        );
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "answered inside API Gateway's limit"
        );
        assert_eq!(
            integration(&h, "acme").await["connection"]["status"],
            "connected"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_still_propagating_when_the_budget_ends_is_settled_by_the_next_status_read() {
    let h = harness(SimConfig {
        propagation: Duration::from_secs(40),
        ..SimConfig::default()
    })
    .await;
    h.org("acme").await;
    let url = h.activate("acme").await;
    let back = consent(&h, &url, PRIMARY, ConsentDecision::Accept).await;
    expect_front_end(&back, "verifying");
    assert_eq!(
        integration(&h, "acme").await["connection"]["status"],
        "verifying"
    );
    h.sim
        .set_propagation(Some(h.tenant.id), Duration::ZERO, PropagationFailure::Token)
        .unwrap();
    assert_eq!(
        integration(&h, "acme").await["connection"]["status"],
        "connected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_microsoft_never_learns_ends_as_authorization_identity_not_found() {
    // Graph keeps answering Authorization_IdentityNotFound; past the propagation grace the
    // connection stops "verifying" and says what is wrong.
    let config = SimConfig {
        propagation: Duration::from_secs(3600),
        propagation_failure: PropagationFailure::Graph,
        ..SimConfig::default()
    };
    let h = ApiHarness::start_with(
        config,
        Arc::new(NoQueue),
        &[
            ("O365_CONSENT_PROPAGATION_GRACE_SECS", "3"),
            ("O365_CONSENT_VERIFY_BUDGET_SECS", "1"),
        ],
    )
    .await;
    h.org("acme").await;
    let url = h.activate("acme").await;
    expect_front_end(
        &consent(&h, &url, PRIMARY, ConsentDecision::Accept).await,
        "verifying",
    );
    assert_eq!(
        integration(&h, "acme").await["connection"]["status"],
        "verifying"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    failed_consent(
        &h,
        "acme",
        "authorization_identity_not_found",
        "Authorization_IdentityNotFound",
        "Grant admin consent",
    )
    .await;
}

async fn failed_consent(
    h: &ApiHarness,
    org: &str,
    outcome: &str,
    ms_code: &str,
    remediation_mentions: &str,
) {
    let view = integration(h, org).await;
    let c = &view["connection"];
    assert_eq!(c["status"], "error", "{c}");
    assert_eq!(c["error"]["code"], outcome, "{c}");
    assert_eq!(c["error"]["microsoft_code"], ms_code, "{c}");
    assert!(
        c["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "Microsoft's message is kept: {c}"
    );
    assert!(
        c["error"]["remediation"]
            .as_str()
            .unwrap()
            .contains(remediation_mentions),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_the_consent_page_is_recorded_as_declined() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    let url = h.activate("acme").await;
    let back = consent(&h, &url, PRIMARY, ConsentDecision::Cancel).await;
    expect_front_end(&back, "consent_declined");
    failed_consent(&h, "acme", "consent_declined", "AADSTS65004", "Accept").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_admin_who_is_sent_back_needs_admin_approval() {
    let h = harness(SimConfig {
        non_admin_consent: NonAdminConsent::Redirect,
        ..SimConfig::default()
    })
    .await;
    h.org("acme").await;
    let url = h.activate("acme").await;
    let back = consent(&h, &url, "adele@contoso.com", ConsentDecision::Accept).await;
    expect_front_end(&back, "need_admin_approval");
    failed_consent(
        &h,
        "acme",
        "need_admin_approval",
        "AADSTS90094",
        "Global Administrator",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_directory_permission_is_insufficient_privileges() {
    let h = harness(SimConfig::default()).await;
    h.sim
        .set_app_permissions(h.default_app.client_id, vec!["Mail.ReadWrite".into()])
        .unwrap();
    h.org("acme").await;
    let url = h.activate("acme").await;
    let back = consent(&h, &url, PRIMARY, ConsentDecision::Accept).await;
    expect_front_end(&back, "insufficient_privileges");
    failed_consent(
        &h,
        "acme",
        "insufficient_privileges",
        "Authorization_RequestDenied",
        "Grant admin consent",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_access_and_a_refused_credential_are_named() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    h.sim
        .set_conditional_access_block(h.tenant.id, true)
        .unwrap();
    let url = h.activate("acme").await;
    let back = consent(&h, &url, PRIMARY, ConsentDecision::Accept).await;
    expect_front_end(&back, "conditional_access_blocked");
    failed_consent(
        &h,
        "acme",
        "conditional_access_blocked",
        "AADSTS53003",
        "Conditional Access",
    )
    .await;

    h.sim
        .set_conditional_access_block(h.tenant.id, false)
        .unwrap();
    let client_id = h.default_app.client_id.to_string();
    h.secrets.rotate(
        AppRegistration::Default,
        AppCredential {
            client_id,
            credential: ClientCredential::Secret(Sensitive::new("wrong".into())),
        },
    );
    let url = h.activate("acme").await;
    let back = consent(&h, &url, PRIMARY, ConsentDecision::Accept).await;
    expect_front_end(&back, "invalid_credential");
    failed_consent(
        &h,
        "acme",
        "invalid_credential",
        "AADSTS7000215",
        "operators",
    )
    .await;
}

fn state_of(url: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("state="))
        .map(|s| s.replace("%2F", "/").replace("%3D", "="))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tenant_is_tenant_not_found_and_a_rotated_secret_needs_no_restart() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    let url = h.activate("acme").await;
    let forged_tenant = "0b7e1d3a-0000-4000-8000-000000000001";
    let back = h
        .call(
            "GET",
            &format!(
                "/consent/callback?admin_consent=True&tenant={forged_tenant}&state={}",
                state_of(&url)
            ),
            None,
            None,
            &[],
        )
        .await;
    expect_front_end(&back, "tenant_not_found");
    failed_consent(
        &h,
        "acme",
        "tenant_not_found",
        "AADSTS90002",
        "activate it again",
    )
    .await;

    // Connect (a second activation while connected is refused: delete comes first), then
    // rotate: Microsoft gets a new secret and the old one expires; Secrets
    // Manager (here the local store) holds the new one. No restart, no re-consent.
    let url = h.activate("acme").await;
    expect_front_end(
        &consent(&h, &url, PRIMARY, ConsentDecision::Accept).await,
        "connected",
    );
    let again = h
        .as_user(
            "acme",
            PRIMARY,
            "POST",
            "/v1/integration/connection/activate",
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    assert_eq!(
        integration(&h, "acme").await["connection"]["status"],
        "connected",
        "the grant survived the stray click"
    );
    let far = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    let fresh = h.sim.add_secret(h.default_app.client_id, far).unwrap();
    h.sim.expire_secret(h.default_app.client_id, None).unwrap();
    h.sim
        .add_secret_value(h.default_app.client_id, &fresh.value, far)
        .unwrap();
    let client_id = h.default_app.client_id.to_string();
    h.secrets.rotate(
        AppRegistration::Default,
        AppCredential {
            client_id,
            credential: ClientCredential::Secret(Sensitive::new(fresh.value.clone())),
        },
    );
    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "POST",
            "/v1/integration/connection/verify",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "connected", "{:?}", r.body);
}

async fn snapshot(h: &ApiHarness, org: &str) -> (serde_json::Value, usize) {
    let o = OrgId::parse(org).unwrap();
    let connection = serde_json::to_value(h.fixture.store.connection(&o).await.unwrap()).unwrap();
    let audit = h
        .fixture
        .store
        .list_audit(&o, PageRequest::first(200))
        .await
        .unwrap()
        .items
        .len();
    (connection, audit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_replayed_and_cross_org_states_are_refused_with_nothing_written() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    h.org("globex").await;
    let url = h.activate("acme").await;
    let state = state_of(&url);
    let tenant = h.tenant.id;
    let before = snapshot(&h, "acme").await;

    let (body, sig) = state.split_once('.').unwrap();
    let mut tampered_sig = sig.to_owned();
    tampered_sig.replace_range(0..1, if sig.starts_with('A') { "B" } else { "A" });
    let forged = [
        String::new(),
        "garbage".into(),
        format!("{body}.{tampered_sig}"),
        format!("{body}x.{sig}"),
        "a".repeat(5000),
    ];
    for f in forged {
        let r = h
            .call(
                "GET",
                &format!("/consent/callback?admin_consent=True&tenant={tenant}&state={f}"),
                None,
                None,
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "state {f:.40}");
        assert_eq!(
            r.body["type"],
            "https://o365-sync.dev/problems/invalid-consent-request"
        );
        assert_eq!(r.headers["content-type"], "application/problem+json");
        assert!(
            r.location().is_empty(),
            "no redirect for a state that is not ours"
        );
    }
    let r = h
        .call(
            "GET",
            &format!("/consent/callback?admin_consent=True&tenant={tenant}"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        snapshot(&h, "acme").await,
        before,
        "refused callbacks wrote nothing"
    );

    // Cross-org: globex's state, signed for globex, cannot touch acme — and a state whose
    // nonce was consumed cannot be replayed.
    let globex_url = h.activate("globex").await;
    let globex_state = state_of(&globex_url);
    h.sim
        .grant_consent(tenant, h.default_app.client_id)
        .unwrap();
    let first = h
        .call(
            "GET",
            &format!("/consent/callback?admin_consent=True&tenant={tenant}&state={globex_state}"),
            None,
            None,
            &[],
        )
        .await;
    expect_front_end(&first, "connected");
    let globex_after = snapshot(&h, "globex").await;
    let replay = h
        .call(
            "GET",
            &format!("/consent/callback?admin_consent=True&tenant={tenant}&state={globex_state}"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        snapshot(&h, "globex").await,
        globex_after,
        "a replay wrote nothing"
    );
    assert_eq!(
        snapshot(&h, "acme").await,
        before,
        "acme untouched by globex's consent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_state_is_refused() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    // A state signed with our key for a request that expired a minute ago.
    let request = o365_domain::consent::ConsentRequest {
        nonce: "expired-nonce".into(),
        org: OrgId::parse("acme").unwrap(),
        initiated_by: o365_domain::ids::Email::parse(PRIMARY).unwrap(),
        app: AppRegistration::Default,
        expires_at: (time::OffsetDateTime::now_utc() - time::Duration::minutes(1))
            .replace_nanosecond(0)
            .unwrap(),
    };
    o365_domain::ports::ConsentStore::put_consent_request(&h.fixture.store, &request)
        .await
        .unwrap();
    let state = o365_domain::consent_state::sign(&request, o365_e2e::api::STATE_KEY);
    let before = snapshot(&h, "acme").await;
    let r = h
        .call(
            "GET",
            &format!(
                "/consent/callback?admin_consent=True&tenant={}&state={state}",
                h.tenant.id
            ),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(snapshot(&h, "acme").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_selects_the_second_app_and_changing_it_asks_for_consent_again() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "PATCH",
            "/v1/integration/settings",
            Some(json!({"use_service_account": true, "read_only": true, "version": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let url = h.activate("acme").await;
    assert!(
        url.contains(&format!("client_id={}", h.read_only_app.client_id)),
        "{url}"
    );
    expect_front_end(
        &consent(&h, &url, PRIMARY, ConsentDecision::Accept).await,
        "connected",
    );
    assert_eq!(
        integration(&h, "acme").await["connection"]["app"],
        "read_only"
    );

    let version = integration(&h, "acme").await["settings"]["version"]
        .as_u64()
        .unwrap();
    let r = h
        .call(
            "PATCH",
            "/v1/integration/settings",
            Some(&h.token("acme", PRIMARY)),
            Some(json!({"read_only": false})),
            &[("if-match", &format!("\"{version}\""))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        integration(&h, "acme").await["connection"]["status"],
        "needs_reconsent"
    );

    // Delete, then reactivate with the same email.
    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "DELETE",
            "/v1/integration/connection",
            None,
        )
        .await;
    assert_eq!(r.body["status"], "none");
    let url = h.activate("acme").await;
    assert!(url.contains(&format!("client_id={}", h.default_app.client_id)));
    expect_front_end(
        &consent(&h, &url, PRIMARY, ConsentDecision::Accept).await,
        "connected",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_needs_the_service_account_switched_on() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "POST",
            "/v1/integration/connection/activate",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.body["type"],
        "https://o365-sync.dev/problems/precondition-failed"
    );
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("Use Service Account")
    );
}
