//! The service-account connection end to end: activate → Microsoft sign-in (simulator) → our
//! callback → the admin-consent page of the proven tenant → our callback → the front end, and
//! every failure an admin can meet on the way.

use std::sync::Arc;
use std::time::Duration;

use ms_sim::{ConsentDecision, NonAdminConsent, PropagationFailure, SimConfig};
use o365_domain::connection::AppRegistration;
use o365_domain::ids::OrgId;
use o365_domain::page::PageRequest;
use o365_domain::ports::{AuditLog, OrgStore};
use o365_domain::secret::{AppCredential, ClientCredential, Sensitive};
use o365_e2e::api::{ApiHarness, FRONTEND, GLOBAL_ADMIN, NoQueue, Reply};
use reqwest::StatusCode;
use serde_json::json;

const PRIMARY: &str = GLOBAL_ADMIN;

async fn harness(config: SimConfig) -> ApiHarness {
    ApiHarness::start(config, Arc::new(NoQueue)).await
}

/// The org's connection as `email` (an admin of it) reads it.
async fn connection_as(h: &ApiHarness, org: &str, email: &str) -> serde_json::Value {
    let r = h.as_user(org, email, "GET", "/v1/integration", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["connection"].clone()
}

/// Sends a sign-in answer by hand: `code` with the `state` of a fresh activation of `org`.
async fn sign_in_answer(h: &ApiHarness, org: &str, primary: &str, code: &str) -> Reply {
    let url = h.activate_as(org, primary).await;
    let state = query_param(&url, "state");
    h.call(
        "GET",
        &format!("/consent/callback?code={code}&state={state}"),
        None,
        None,
        &[],
    )
    .await
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

async fn actions(h: &ApiHarness, org: &str) -> Vec<String> {
    let org = OrgId::parse(org).unwrap();
    h.fixture
        .store
        .list_audit(&org, PageRequest::first(200))
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
        .collect()
}

fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .map(|s| {
            s.replace("%2F", "/")
                .replace("%3D", "=")
                .replace("%20", " ")
                .replace("%3A", ":")
        })
        .unwrap_or_else(|| panic!("{name} missing from {url}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_global_admin_signs_in_consents_for_that_tenant_and_is_recorded() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    let url = h.activate("acme").await;
    assert!(
        url.starts_with(&format!(
            "{}/organizations/oauth2/v2.0/authorize?",
            h.sim.authority()
        )),
        "{url}"
    );
    for part in [
        "response_type=code",
        "response_mode=query",
        "code_challenge_method=S256",
        "scope=openid+profile+email",
    ] {
        assert!(url.contains(part), "{part} missing from {url}");
    }
    assert!(url.contains(&format!("client_id={}", h.default_app.client_id)));
    assert!(
        !query_param(&url, "nonce").is_empty() && !query_param(&url, "code_challenge").is_empty()
    );
    assert_eq!(
        integration(&h, "acme").await["connection"]["status"],
        "pending_sign_in"
    );

    // Sign-in leg: on to the consent page of exactly the tenant the ID token proved.
    let signed_in = h.sign_in(&url, PRIMARY).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    let consent_url = signed_in.location().to_owned();
    assert!(
        consent_url.starts_with(&format!(
            "{}/{}/v2.0/adminconsent?",
            h.sim.authority(),
            h.tenant.id
        )),
        "{consent_url}"
    );
    let c = &integration(&h, "acme").await["connection"];
    assert_eq!(c["status"], "pending_consent");
    assert_eq!(c["tenant_id"], h.tenant.id.to_string());

    let back = h
        .consent(&consent_url, PRIMARY, ConsentDecision::Accept)
        .await;
    expect_front_end(&back, "connected");
    let view = integration(&h, "acme").await;
    let c = &view["connection"];
    assert_eq!(c["status"], "connected");
    assert_eq!(c["tenant_id"], h.tenant.id.to_string());
    assert_eq!(c["app"], "default");
    assert_eq!(c["activated_by"], PRIMARY);
    let admin = h.sim.user(PRIMARY).unwrap();
    assert_eq!(c["granted_by"]["object_id"], admin.id.to_string());
    assert_eq!(c["granted_by"]["user_principal_name"], PRIMARY);
    assert!(c["granted_at"].is_string() && c["last_verified_at"].is_string());
    assert!(c["error"].is_null());
    let actions = actions(&h, "acme").await;
    for expected in [
        "settings_changed",
        "connection_activated",
        "admin_signed_in",
        "consent_granted",
        "connection_verified",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
}

/// The attack of issue 9: the Primary of another org, an ordinary user of the victim's tenant,
/// tries every way to bind that tenant to its own org.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_admin_of_a_tenant_cannot_bind_it_to_another_org_whatever_it_sends() {
    let h = harness(SimConfig::default()).await;
    let evil = "adele@contoso.com";
    h.org_with_primary("evil", evil).await;
    let victim = h.tenant.id.to_string();

    // 1. Signing in as itself: refused before any consent page, nothing bound.
    let url = h.activate_as("evil", evil).await;
    let r = h.sign_in(&url, evil).await;
    expect_front_end(&r, "not_global_administrator");
    let c = connection_as(&h, "evil", evil).await;
    assert_eq!(c["status"], "error");
    assert!(c["tenant_id"].is_null(), "{c}");
    assert!(
        c["error"]["remediation"]
            .as_str()
            .unwrap()
            .contains("Global Administrator")
    );

    // 2. A hand-made admin-consent answer with its own (sign-in) state and the victim's tenant.
    let url = h.activate_as("evil", evil).await;
    let state = query_param(&url, "state");
    let forged = h
        .call(
            "GET",
            &format!("/consent/callback?admin_consent=True&tenant={victim}&state={state}"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST, "{:?}", forged.body);
    assert!(
        actions(&h, "evil")
            .await
            .iter()
            .any(|a| a == "callback_refused"),
        "the forgery is a security event on the org"
    );

    // 3. A code replayed: redeemed once (refused as non-admin), then sent again with a fresh
    // state of the same org.
    let url = h.activate_as("evil", evil).await;
    let out = h.sim.browser_sign_in(&url, evil).await.unwrap();
    let code = out.param("code").unwrap().to_owned();
    let first = h.follow(out).await;
    expect_front_end(&first, "not_global_administrator");
    let replay = sign_in_answer(&h, "evil", evil, &code).await;
    expect_front_end(&replay, "sign_in_failed");
    let c = connection_as(&h, "evil", evil).await;
    assert_eq!(c["error"]["microsoft_code"], "AADSTS54005", "{c}");

    // 4. Someone else's code (the victim admin's sign-in for its own org) with evil's state:
    // the PKCE verifier is evil's, the code was bound to acme's challenge.
    h.org("acme").await;
    let acme_url = h.activate("acme").await;
    let acme_out = h.sim.browser_sign_in(&acme_url, PRIMARY).await.unwrap();
    let acme_code = acme_out.param("code").unwrap().to_owned();
    let stolen = sign_in_answer(&h, "evil", evil, &acme_code).await;
    expect_front_end(&stolen, "sign_in_failed");
    let c = connection_as(&h, "evil", evil).await;
    assert_eq!(c["error"]["microsoft_code"], "AADSTS501481", "{c}");

    // 5. Someone else's state (acme's, say leaked) with evil's own code: the state decides the
    // org, so at worst acme's attempt fails (the code was not issued to acme's challenge);
    // nothing reaches evil.
    let acme_url = h.activate("acme").await;
    let acme_state = query_param(&acme_url, "state");
    let url = h.activate_as("evil", evil).await;
    let evil_out = h.sim.browser_sign_in(&url, evil).await.unwrap();
    let evil_code = evil_out.param("code").unwrap().to_owned();
    let evil_before = connection_as(&h, "evil", evil).await;
    let crossed = h
        .call(
            "GET",
            &format!("/consent/callback?code={evil_code}&state={acme_state}"),
            None,
            None,
            &[],
        )
        .await;
    expect_front_end(&crossed, "sign_in_failed");
    assert_eq!(connection_as(&h, "evil", evil).await, evil_before);
    assert!(integration(&h, "acme").await["connection"]["tenant_id"].is_null());

    // Nothing of the tenant was ever bound to evil, nor can it sync.
    let evil_org = OrgId::parse("evil").unwrap();
    assert_eq!(
        h.fixture
            .store
            .connection(&evil_org)
            .await
            .unwrap()
            .tenant_id,
        None
    );
    let sync = h.as_user("evil", evil, "POST", "/v1/sync", None).await;
    assert_eq!(sync.status, StatusCode::CONFLICT, "{:?}", sync.body);
    let archived = o365_domain::ports::MessageArchive::all_messages(
        &h.fixture.store,
        &evil_org,
        &o365_domain::ids::Email::parse(evil).unwrap(),
        PageRequest::first(10),
    )
    .await
    .unwrap();
    assert!(archived.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_tenant_on_the_consent_answer_is_refused_and_audited() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    let url = h.activate("acme").await;
    let consent_url = h.sign_in(&url, PRIMARY).await.location().to_owned();
    let state = query_param(&consent_url, "state");
    // Microsoft's answer, with the tenant swapped for another (which even granted the app).
    h.sim
        .grant_consent(h.other_tenant.id, h.default_app.client_id)
        .unwrap();
    let r = h
        .call(
            "GET",
            &format!(
                "/consent/callback?admin_consent=True&tenant={}&state={state}",
                h.other_tenant.id
            ),
            None,
            None,
            &[],
        )
        .await;
    expect_front_end(&r, "tenant_mismatch");
    let c = &integration(&h, "acme").await["connection"];
    assert_eq!(c["status"], "error");
    assert!(
        c["tenant_id"].is_null(),
        "a refused tenant is released: {c}"
    );
    assert!(
        actions(&h, "acme")
            .await
            .iter()
            .any(|a| a == "callback_refused")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_serves_one_org_and_its_global_admin_must_be_the_primary() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    expect_front_end(
        &h.connect("acme", ConsentDecision::Accept).await,
        "connected",
    );

    // The same Global Administrator is Primary of a second org: the tenant is taken.
    h.org("second").await;
    let url = h.activate("second").await;
    let r = h.sign_in(&url, PRIMARY).await;
    expect_front_end(&r, "tenant_in_use");
    let c = connection_as(&h, "second", PRIMARY).await;
    assert!(
        c["error"]["remediation"]
            .as_str()
            .unwrap()
            .contains("another organisation"),
        "{c}"
    );
    assert!(
        !c.to_string().contains("acme"),
        "the other org is not named: {c}"
    );

    // A Global Administrator of another tenant signs in for an org whose Primary is not them.
    h.org_with_primary("globex", "adele@contoso.com").await;
    let url = h.activate_as("globex", "adele@contoso.com").await;
    let r = h
        .connect_via(
            &url,
            o365_e2e::api::OTHER_GLOBAL_ADMIN,
            ConsentDecision::Accept,
        )
        .await;
    expect_front_end(&r, "not_primary_account");
    let c = h
        .as_user(
            "globex",
            "adele@contoso.com",
            "GET",
            "/v1/integration",
            None,
        )
        .await
        .body["connection"]
        .clone();
    assert_eq!(c["status"], "error");
    assert!(c["tenant_id"].is_null(), "released: {c}");
    assert!(
        c["error"]["message"]
            .as_str()
            .unwrap()
            .contains("adele@contoso.com")
            && c["error"]["remediation"]
                .as_str()
                .unwrap()
                .contains("Primary user"),
        "{c}"
    );

    // Deleting acme's connection frees the tenant for another org.
    let d = h
        .as_user(
            "acme",
            PRIMARY,
            "DELETE",
            "/v1/integration/connection",
            None,
        )
        .await;
    assert_eq!(d.status, StatusCode::OK, "{:?}", d.body);
    expect_front_end(
        &h.connect("second", ConsentDecision::Accept).await,
        "connected",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_broken_id_tokens_are_refused() {
    use ms_sim::IdTokenTamper::*;
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    for (tamper, outcome) in [
        (AlgNone, "invalid_id_token"),
        (Hs256WithPublicKey, "invalid_id_token"),
        (WrongAudience, "invalid_id_token"),
        (IssuerTenantMismatch, "invalid_id_token"),
        (WrongNonce, "invalid_id_token"),
        (Expired, "invalid_id_token"),
        (UnknownKey, "invalid_id_token"),
        (MissingWids, "directory_roles_unavailable"),
    ] {
        h.sim.set_id_token_tamper(Some(tamper));
        let url = h.activate("acme").await;
        let r = h.sign_in(&url, PRIMARY).await;
        expect_front_end(&r, outcome);
        let c = &integration(&h, "acme").await["connection"];
        assert_eq!(c["status"], "error", "{tamper:?}: {c}");
        assert!(c["tenant_id"].is_null(), "{tamper:?}: {c}");
    }
    h.sim.set_id_token_tamper(None);

    // Keys rotate: a key published after our first fetch is accepted after one refetch
    // (at most one per 10 s per tenant).
    expect_front_end(
        &h.connect("acme", ConsentDecision::Accept).await,
        "connected",
    );
    h.as_user(
        "acme",
        PRIMARY,
        "DELETE",
        "/v1/integration/connection",
        None,
    )
    .await;
    let rotated = h.sim.rotate_signing_key();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let url = h.activate("acme").await;
    let r = h.sign_in(&url, PRIMARY).await;
    assert!(
        h.is_consent_page(r.location()),
        "kid {rotated}: {:?}",
        r.location()
    );

    // Microsoft's keys out of reach: nothing bound, a clear transient error.
    h.sim.set_oidc_down(true);
    h.sim.rotate_signing_key();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let url = h.activate("acme").await;
    expect_front_end(&h.sign_in(&url, PRIMARY).await, "microsoft_unavailable");
    h.sim.set_oidc_down(false);
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
        let consent_url = h.sign_in(&url, PRIMARY).await.location().to_owned();
        let started = std::time::Instant::now();
        let back = h
            .consent(&consent_url, PRIMARY, ConsentDecision::Accept)
            .await;
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
    }
}

/// Propagation far longer than the callback may wait: the callback answers "verifying";
/// polling the status changes and writes nothing; the scheduled pass (what mailbox-sync runs)
/// ends it connected with no status read in between. The timeline is scaled down (Microsoft's
/// minutes are 15 s here, the callback's 20 s budget is 1 s) so the suite does not wait five
/// real minutes; the proportions are what the test is about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_propagation_settles_on_the_server_and_polling_writes_nothing() {
    let propagation = Duration::from_secs(15);
    let h = ApiHarness::start_with(
        SimConfig {
            propagation,
            propagation_failure: PropagationFailure::Graph,
            ..SimConfig::default()
        },
        Arc::new(NoQueue),
        &[("O365_CONSENT_VERIFY_BUDGET_SECS", "1")],
    )
    .await;
    h.org("acme").await;
    let url = h.activate("acme").await;
    let consent_url = h.sign_in(&url, PRIMARY).await.location().to_owned();
    let consented = std::time::Instant::now();
    expect_front_end(
        &h.consent(&consent_url, PRIMARY, ConsentDecision::Accept)
            .await,
        "verifying",
    );
    let audits = actions(&h, "acme").await.len();
    for _ in 0..10 {
        assert_eq!(
            integration(&h, "acme").await["connection"]["status"],
            "verifying"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        actions(&h, "acme").await.len(),
        audits,
        "status polling wrote no audit event"
    );
    let org = OrgId::parse("acme").unwrap();
    // The schedule, every 2 s here, until Microsoft knows the grant.
    loop {
        h.grants.settle_verifying_connections().await.unwrap();
        let status = h.fixture.store.connection(&org).await.unwrap().status;
        if status == o365_domain::connection::ConnectionStatus::Connected {
            break;
        }
        assert_eq!(status, o365_domain::connection::ConnectionStatus::Verifying);
        assert!(consented.elapsed() < propagation * 4, "never settled");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(consented.elapsed() >= propagation - Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_microsoft_never_learns_ends_as_authorization_identity_not_found() {
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
    expect_front_end(
        &h.connect("acme", ConsentDecision::Accept).await,
        "verifying",
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
async fn cancel_on_the_consent_page_is_recorded_as_declined_and_sign_in_cancel_too() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    let back = h.connect("acme", ConsentDecision::Cancel).await;
    expect_front_end(&back, "consent_declined");
    failed_consent(&h, "acme", "consent_declined", "AADSTS65004", "Accept").await;

    let url = h.activate("acme").await;
    let out = h.sim.browser_cancel_sign_in(&url).await.unwrap();
    expect_front_end(&h.follow(out).await, "sign_in_failed");
    failed_consent(&h, "acme", "sign_in_failed", "AADSTS50126", "sign in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_admin_on_the_consent_page_needs_admin_approval() {
    let h = harness(SimConfig {
        non_admin_consent: NonAdminConsent::Redirect,
        ..SimConfig::default()
    })
    .await;
    h.org("acme").await;
    let url = h.activate("acme").await;
    let consent_url = h.sign_in(&url, PRIMARY).await.location().to_owned();
    let back = h
        .consent(&consent_url, "adele@contoso.com", ConsentDecision::Accept)
        .await;
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
    let back = h.connect("acme", ConsentDecision::Accept).await;
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
    let url = h.activate("acme").await;
    let consent_url = h.sign_in(&url, PRIMARY).await.location().to_owned();
    h.sim
        .set_conditional_access_block(h.tenant.id, true)
        .unwrap();
    let back = h
        .consent(&consent_url, PRIMARY, ConsentDecision::Accept)
        .await;
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
    let back = h.connect("acme", ConsentDecision::Accept).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_never_breaks_a_live_connection_and_a_rotated_secret_needs_no_restart() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    // Two sign-ins (two tabs): the first's consent link is left open.
    let url = h.activate("acme").await;
    let stale_consent = h.sign_in(&url, PRIMARY).await.location().to_owned();
    let back = h.connect("acme", ConsentDecision::Accept).await;
    expect_front_end(&back, "connected");
    let late = h
        .consent(&stale_consent, PRIMARY, ConsentDecision::Cancel)
        .await;
    expect_front_end(&late, "connected");
    assert_eq!(
        integration(&h, "acme").await["connection"]["status"],
        "connected",
        "the late cancel changed nothing"
    );
    assert!(
        actions(&h, "acme")
            .await
            .iter()
            .any(|a| a == "callback_ignored")
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

    // Rotate: Microsoft gets a new secret and the old one expires; the secret store holds the
    // new one. No restart, no re-consent.
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
    (connection, actions(h, org).await.len())
}

async fn consent_requests(h: &ApiHarness) -> usize {
    h.fixture
        .store
        .client()
        .scan()
        .table_name(&h.fixture.store.tables().state)
        .filter_expression("begins_with(pk, :p)")
        .expression_attribute_values(
            ":p",
            aws_sdk_dynamodb::types::AttributeValue::S("CONSENT#".into()),
        )
        .send()
        .await
        .unwrap()
        .count() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_replayed_states_are_refused_and_a_flood_stays_bounded() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    let url = h.activate("acme").await;
    let state = query_param(&url, "state");
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
    for _ in 0..5 {
        for f in &forged {
            let r = h
                .call(
                    "GET",
                    &format!("/consent/callback?code=abc&state={f}"),
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
    }
    let r = h
        .call("GET", "/consent/callback?code=abc", None, None, &[])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        snapshot(&h, "acme").await,
        before,
        "refused callbacks that name no org wrote nothing"
    );
    assert!(
        h.counted
            .key_refreshes
            .load(std::sync::atomic::Ordering::SeqCst)
            <= 1,
        "bad signatures re-read the signing key at most once per interval"
    );

    // Replays of a consumed, validly signed state: refused, audited once per window.
    let good = h.sign_in(&url, PRIMARY).await;
    assert!(h.is_consent_page(good.location()));
    let connection_after = snapshot(&h, "acme").await.0;
    let audits = actions(&h, "acme").await.len();
    for _ in 0..50 {
        let r = h
            .call(
                "GET",
                &format!("/consent/callback?code=abc&state={state}"),
                None,
                None,
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        snapshot(&h, "acme").await.0,
        connection_after,
        "replays changed nothing"
    );
    assert_eq!(
        actions(&h, "acme").await.len(),
        audits + 1,
        "fifty replays, one security event"
    );

    // An expired state (signed with our key, its request stored) is refused too.
    let request = o365_domain::consent::ConsentRequest {
        nonce: "expired-nonce".into(),
        org: OrgId::parse("acme").unwrap(),
        initiated_by: o365_domain::ids::Email::parse(PRIMARY).unwrap(),
        app: AppRegistration::Default,
        expires_at: (time::OffsetDateTime::now_utc() - time::Duration::minutes(1))
            .replace_nanosecond(0)
            .unwrap(),
        leg: o365_domain::consent::ConsentLeg::SignIn {
            pkce_verifier: "v".into(),
            oidc_nonce: "n".into(),
        },
    };
    let pending = o365_domain::connection::Connection {
        status: o365_domain::connection::ConnectionStatus::PendingSignIn,
        version: h
            .fixture
            .store
            .connection(&request.org)
            .await
            .unwrap()
            .version
            + 1,
        ..o365_domain::connection::Connection::none()
    };
    o365_domain::ports::ConsentStore::start_round_trip(
        &h.fixture.store,
        &request,
        &pending,
        o365_e2e::audit(
            &request.org,
            o365_domain::audit::AuditAction::ConnectionActivated,
            "connection",
        ),
    )
    .await
    .unwrap();
    let expired = o365_domain::consent_state::sign(&request, o365_e2e::api::STATE_KEY);
    let r = h
        .call(
            "GET",
            &format!("/consent/callback?code=abc&state={expired}"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// What Chromium sends when it follows a link.
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8";

/// The values of every `href`, `src` and `action` attribute of a page.
fn links(page: &str) -> Vec<String> {
    ["href=\"", "src=\"", "action=\""]
        .iter()
        .flat_map(|attr| page.match_indices(attr).map(move |(i, _)| i + attr.len()))
        .map(|start| {
            page[start..]
                .split('"')
                .next()
                .unwrap()
                .replace("&amp;", "&")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_or_forged_link_in_a_browser_gets_a_page_that_leads_back_to_connection_settings() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    let url = h.activate("acme").await;
    let state = query_param(&url, "state");
    let good = h.sign_in(&url, PRIMARY).await;
    assert!(h.is_consent_page(good.location()), "the state is used now");

    for state in [state.as_str(), "garbage"] {
        let path = format!("/consent/callback?code=abc&state={state}");
        let r = h
            .call("GET", &path, None, None, &[("accept", BROWSER_ACCEPT)])
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "the same status as for API clients"
        );
        assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
        assert!(
            r.location().is_empty(),
            "no redirect for a state that is not ours"
        );
        let page = r.body.as_str().expect("an HTML page, not JSON");
        assert!(
            page.contains("This sign-in link was already used or has expired"),
            "{page}"
        );
        assert!(page.contains("Connection Settings → Activate"), "{page}");
        assert!(
            !page.contains("invalid-consent-request"),
            "no problem+json in the page"
        );
        assert!(!page.to_ascii_lowercase().contains("<script"), "{page}");
        assert_eq!(
            links(page),
            vec![format!("{FRONTEND}/settings/connection")],
            "the one link goes to the configured front end"
        );
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");

        // The same link from an API client: problem+json, as before.
        let r = h
            .call("GET", &path, None, None, &[("accept", "application/json")])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.headers["content-type"], "application/problem+json");
        assert_eq!(
            r.body["type"],
            "https://o365-sync.dev/problems/invalid-consent-request"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_activations_leave_one_round_trip_and_refusals_write_nothing() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    h.activate("acme").await;
    assert_eq!(consent_requests(&h).await, 1);
    let before = snapshot(&h, "acme").await;
    let token = h.token("acme", PRIMARY);
    let call = || {
        h.call(
            "POST",
            "/v1/integration/connection/activate",
            Some(&token),
            None,
            &[],
        )
    };
    let (a, b, c, d, e, f, g, i) = tokio::join!(
        call(),
        call(),
        call(),
        call(),
        call(),
        call(),
        call(),
        call()
    );
    let replies = [a, b, c, d, e, f, g, i];
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let conflicts = replies
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .count();
    assert!(
        ok >= 1 && ok + conflicts == 8,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        consent_requests(&h).await,
        1 + ok,
        "one stored round trip per success"
    );
    assert_eq!(snapshot(&h, "acme").await.1, before.1 + ok);

    // A member (not Primary) is refused and writes nothing.
    let r = h
        .as_user(
            "acme",
            "adele@contoso.com",
            "POST",
            "/v1/integration/connection/activate",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(consent_requests(&h).await, 1 + ok);
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
        &h.connect_via(&url, PRIMARY, ConsentDecision::Accept).await,
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
        &h.connect_via(&url, PRIMARY, ConsentDecision::Accept).await,
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
    assert_eq!(
        consent_requests(&h).await,
        0,
        "a refused activation writes nothing"
    );
}

/// Switching users on resolves each email to its directory user at once (alias, mail, `$` UPN),
/// and the user list shows the UPN the mailbox is read as.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_users_on_shows_the_directory_user_each_email_reaches() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    expect_front_end(
        &h.connect("acme", ConsentDecision::Accept).await,
        "connected",
    );
    let t = h.tenant.id;
    let nestor = h
        .sim
        .create_user(
            t,
            ms_sim::UserSpec {
                user_name: "nestor.wilke".into(),
                proxy_addresses: vec!["smtp:nestor@contoso.com".into()],
                ..Default::default()
            },
        )
        .unwrap();
    let diego = h
        .sim
        .create_user(
            t,
            ms_sim::UserSpec {
                user_name: "diego.siciliani".into(),
                mail: Some("diego@contoso.com".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let svc = h
        .sim
        .create_user(
            t,
            ms_sim::UserSpec {
                user_name: "$svc@contoso.com".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let wanted = [
        ("nestor@contoso.com", &nestor),
        ("diego@contoso.com", &diego),
        ("$svc@contoso.com", &svc),
    ];
    for (email, _) in wanted {
        let r = h
            .as_user(
                "acme",
                PRIMARY,
                "POST",
                "/v1/users",
                Some(json!({"email": email, "display_name": "Someone", "role": "member"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let mut changes: Vec<_> = wanted
        .iter()
        .map(|(e, _)| json!({"email": e, "sync_enabled": true}))
        .collect();
    changes.push(json!({"email": "adele@contoso.com", "sync_enabled": true}));
    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "POST",
            "/v1/users/sync",
            Some(json!({ "changes": changes })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    for (email, info) in wanted {
        let row = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["email"] == email)
            .unwrap();
        assert_eq!(row["directory"]["object_id"], info.id.to_string(), "{row}");
        assert_eq!(
            row["directory"]["user_principal_name"], info.user_principal_name,
            "{row}"
        );
        let read = h
            .as_user("acme", PRIMARY, "GET", &format!("/v1/users/{email}"), None)
            .await;
        assert_eq!(read.body["directory"], row["directory"], "{:?}", read.body);
    }
}

async fn adele(h: &ApiHarness) -> serde_json::Value {
    h.as_user("acme", PRIMARY, "GET", "/v1/users/adele@contoso.com", None)
        .await
        .body
}

/// Users tell the truth about the org: while the connection needs consent again (or is in
/// error), every switched-on user shows that cause and its remediation, and "sync now" names
/// the real reason it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_sync_now_show_why_the_org_does_not_sync() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    expect_front_end(
        &h.connect("acme", ConsentDecision::Accept).await,
        "connected",
    );
    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "POST",
            "/v1/users/sync",
            Some(json!({"changes": [{"email": "adele@contoso.com", "sync_enabled": true}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(adele(&h).await["status"], "never_synced");

    let version = integration(&h, "acme").await["settings"]["version"]
        .as_u64()
        .unwrap();
    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "PATCH",
            "/v1/integration/settings",
            Some(json!({"read_only": true, "version": version})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let c = &integration(&h, "acme").await["connection"];
    assert_eq!(c["status"], "needs_reconsent");
    assert_eq!(c["error"]["code"], "needs_reconsent", "{c}");
    assert!(
        c["error"]["remediation"]
            .as_str()
            .unwrap()
            .contains("activates it again")
    );
    let user = adele(&h).await;
    assert_eq!(user["status"], "error", "{user}");
    assert_eq!(user["error"]["code"], "needs_reconsent", "{user}");
    assert_eq!(user["error"]["scope"], "org", "{user}");
    // The status filter goes by what users show, not by what was last stored.
    let emails = |r: &o365_e2e::api::Reply| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["email"].as_str().unwrap().to_owned())
            .collect()
    };
    let in_error = h
        .as_user("acme", PRIMARY, "GET", "/v1/users?status=error", None)
        .await;
    assert!(
        emails(&in_error).iter().any(|e| e.starts_with("adele")),
        "{:?}",
        in_error.body
    );
    let never = h
        .as_user(
            "acme",
            PRIMARY,
            "GET",
            "/v1/users?status=never_synced",
            None,
        )
        .await;
    assert!(
        !emails(&never).iter().any(|e| e.starts_with("adele")),
        "{:?}",
        never.body
    );
    let sync = h.as_user("acme", PRIMARY, "POST", "/v1/sync", None).await;
    assert_eq!(sync.status, StatusCode::CONFLICT);
    assert!(
        sync.body["detail"]
            .as_str()
            .unwrap()
            .contains("consent again"),
        "{:?}",
        sync.body
    );

    // Only the Primary deletes the connection; then users say it is not connected.
    let by_admin = h
        .as_user(
            "acme",
            "admin@contoso.com",
            "DELETE",
            "/v1/integration/connection",
            None,
        )
        .await;
    assert_eq!(by_admin.status, StatusCode::FORBIDDEN);
    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "DELETE",
            "/v1/integration/connection",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(adele(&h).await["error"]["code"], "not_connected");
    let sync = h.as_user("acme", PRIMARY, "POST", "/v1/sync", None).await;
    assert!(
        sync.body["detail"]
            .as_str()
            .unwrap()
            .contains("not connected"),
        "{:?}",
        sync.body
    );
}

/// An attempt that fails or is abandoned holds no tenant: a Global Administrator lured into
/// signing in through another org's link, who then cancels, leaves the tenant free; and a
/// left-over consent link of an earlier attempt cannot end the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_attempts_hold_no_tenant_and_old_links_cannot_end_new_attempts() {
    let h = harness(SimConfig::default()).await;
    let evil = "adele@contoso.com";
    h.org_with_primary("evil", evil).await;
    let url = h.activate_as("evil", evil).await;
    let consent_url = h.sign_in(&url, PRIMARY).await.location().to_owned();
    assert!(h.is_consent_page(&consent_url), "{consent_url}");
    assert_eq!(
        connection_as(&h, "evil", evil).await["tenant_id"],
        h.tenant.id.to_string(),
        "bound while the attempt is on the consent page"
    );
    let cancelled = h
        .consent(&consent_url, PRIMARY, ConsentDecision::Cancel)
        .await;
    expect_front_end(&cancelled, "consent_declined");
    assert!(connection_as(&h, "evil", evil).await["tenant_id"].is_null());
    // The tenant's own org connects.
    h.org("acme").await;
    let url = h.activate("acme").await;
    let first = h.sign_in(&url, PRIMARY).await.location().to_owned();
    let url = h.activate("acme").await;
    let second = h.sign_in(&url, PRIMARY).await.location().to_owned();
    // The first link's answer arrives while the second attempt waits: refused, nothing changes.
    let late = h.consent(&first, PRIMARY, ConsentDecision::Cancel).await;
    assert_eq!(late.status, StatusCode::BAD_REQUEST, "{:?}", late.body);
    assert_eq!(
        integration(&h, "acme").await["connection"]["status"],
        "pending_consent"
    );
    expect_front_end(
        &h.consent(&second, PRIMARY, ConsentDecision::Accept).await,
        "connected",
    );
}

/// A personal Microsoft account (its `tid` is the consumers tenant) has no organisation to bind,
/// whatever roles its token claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personal_account_is_refused() {
    let h = harness(SimConfig::default()).await;
    let consumers = h
        .sim
        .create_tenant(ms_sim::TenantSpec {
            domain: "outlook.com".into(),
            id: Some(ms_sim::MSA_TENANT_ID.parse().unwrap()),
            ..Default::default()
        })
        .unwrap();
    h.sim
        .create_user(
            consumers.id,
            ms_sim::UserSpec {
                user_name: "someone".into(),
                global_admin: true,
                ..Default::default()
            },
        )
        .unwrap();
    h.org("acme").await;
    let url = h.activate("acme").await;
    let r = h.sign_in(&url, "someone@outlook.com").await;
    expect_front_end(&r, "personal_account");
    assert!(integration(&h, "acme").await["connection"]["tenant_id"].is_null());
}

/// Switching the service account off says what it stops before doing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_the_service_account_off_needs_confirmation() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    expect_front_end(
        &h.connect("acme", ConsentDecision::Accept).await,
        "connected",
    );
    h.as_user(
        "acme",
        PRIMARY,
        "POST",
        "/v1/users/sync",
        Some(json!({"changes": [{"email": "adele@contoso.com", "sync_enabled": true}]})),
    )
    .await;
    let version = integration(&h, "acme").await["settings"]["version"]
        .as_u64()
        .unwrap();
    let off = |confirm: bool| {
        h.as_user(
            "acme",
            PRIMARY,
            "PATCH",
            "/v1/integration/settings",
            Some(json!({"use_service_account": false, "version": version, "confirm": confirm})),
        )
    };
    let r = off(false).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("confirm"));
    assert_eq!(
        integration(&h, "acme").await["connection"]["status"],
        "connected",
        "nothing changed"
    );
    let r = off(true).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        integration(&h, "acme").await["connection"]["status"],
        "none"
    );
    assert_eq!(adele(&h).await["error"]["code"], "service_account_off");
}

/// "Sync now" answers 202 at once with the request's id (and where its runs show up): the org's
/// walk is one message on the fan-out queue (real SQS, on moto), whatever the org's size. The
/// runs listing filters by that id; a malformed one is a 400 problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_now_answers_with_a_request_to_follow() {
    let sqs = o365_local_stack::sqs_client(&o365_e2e::moto_endpoint());
    let url = sqs
        .create_queue()
        .queue_name(format!("fanout-{}", uuid::Uuid::new_v4().simple()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue = o365_queue_sqs::SqsJobQueue::new(sqs.clone()).with_fan_out(url.clone());
    let h = ApiHarness::start(
        SimConfig::default(),
        Arc::new(o365_runtime::QueuedSyncTrigger(Arc::new(queue))),
    )
    .await;
    h.org("acme").await;
    expect_front_end(
        &h.connect("acme", ConsentDecision::Accept).await,
        "connected",
    );
    let r = h.as_user("acme", PRIMARY, "POST", "/v1/sync", None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let request = r.body["request_id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&request).is_ok(), "{request}");
    let runs = format!("/v1/sync/runs?request={request}");
    assert_eq!(r.body["runs"], runs.as_str());
    assert_eq!(
        r.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(runs.as_str())
    );

    // Clicking again (or a script) within the minute joins the open request: same id, no
    // second walk of the org.
    for _ in 0..3 {
        let again = h.as_user("acme", PRIMARY, "POST", "/v1/sync", None).await;
        assert_eq!(again.status, StatusCode::ACCEPTED, "{:?}", again.body);
        assert_eq!(again.body["request_id"], request.as_str());
    }

    let received = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(received.len(), 1, "one message for the whole org");
    let walk: o365_sync_engine::FanOutJob =
        serde_json::from_str(received[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(walk.org.as_str(), "acme");
    assert_eq!(walk.request.as_deref(), Some(request.as_str()));
    assert_eq!(walk.after, None);

    let listed = h.as_user("acme", PRIMARY, "GET", &runs, None).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    assert_eq!(listed.body["items"], json!([]), "nothing has run yet");
    let bad = h
        .as_user("acme", PRIMARY, "GET", "/v1/sync/runs?request=nope", None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{:?}", bad.body);
    assert!(
        bad.body["type"]
            .as_str()
            .unwrap()
            .ends_with("malformed-request")
    );
}

/// A "sync now" whose walk cannot be queued says so, and is withdrawn: the next one is not
/// joined to a walk that never started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_now_that_cannot_be_queued_is_not_joined() {
    let h = harness(SimConfig::default()).await;
    h.org("acme").await;
    expect_front_end(
        &h.connect("acme", ConsentDecision::Accept).await,
        "connected",
    );
    for _ in 0..2 {
        let r = h.as_user("acme", PRIMARY, "POST", "/v1/sync", None).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert!(r.body["detail"].is_string(), "{:?}", r.body);
    }
}
