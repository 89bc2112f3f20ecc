//! The admin's two legs with Microsoft's identity platform: OpenID Connect sign-in
//! (authorization code + PKCE, through the `oauth2` crate over our own reqwest client) and the
//! admin-consent URL for the tenant that sign-in proved.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use o365_domain::connection::AppRegistration;
use o365_domain::failure::FailureCode;
use o365_domain::ids::TenantId;
use o365_domain::microsoft::{AdminSignIn, MicrosoftError, SignInStart, SignedInAccount};
use o365_domain::ports::SecretStore;
use o365_domain::secret::{AppCredential, ClientCredential, Freshness, Sensitive};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EndpointNotSet, EndpointSet, ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, StandardRevocableToken, StandardTokenResponse,
    TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::oidc::IdTokenVerifier;
use crate::token::{ASSERTION_TYPE, GRAPH_SCOPE, client_assertion};

/// Where the admin signs in, and where Microsoft sends them back (both legs: the callback
/// tells them apart by the signed state).
#[derive(Debug, Clone)]
pub struct SignInConfig {
    pub authority_url: String,
    pub redirect_uri: String,
}

/// The token response of the code grant carries the ID token beside the access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdTokenField {
    id_token: Option<String>,
}
impl ExtraTokenFields for IdTokenField {}

type CodeResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;
type EntraClient<HasAuthUrl, HasTokenUrl> = Client<
    BasicErrorResponse,
    CodeResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    HasAuthUrl,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    HasTokenUrl,
>;

pub struct EntraSignIn {
    cfg: SignInConfig,
    http: reqwest::Client,
    secrets: Arc<dyn SecretStore>,
    verifier: IdTokenVerifier,
}

fn misconfigured(what: &str) -> MicrosoftError {
    MicrosoftError::Unavailable {
        message: format!("the sign-in is misconfigured: {what}"),
    }
}

/// Carries one oauth2 request over reqwest. Redirects are not followed (a token endpoint has no
/// business redirecting us elsewhere).
async fn execute(
    http: reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, io::Error> {
    let (parts, body) = request.into_parts();
    let mut req = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body);
    req = req.timeout(std::time::Duration::from_secs(15));
    let resp = req
        .send()
        .await
        .map_err(|e| io::Error::other(e.without_url().to_string()))?;
    let mut builder = oauth2::http::Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        builder = builder.header(name, value);
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| io::Error::other(e.without_url().to_string()))?;
    builder.body(body.to_vec()).map_err(io::Error::other)
}

impl EntraSignIn {
    pub fn new(cfg: SignInConfig, secrets: Arc<dyn SecretStore>) -> Self {
        let http = o365_http_client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("the HTTP client builds (rustls)");
        Self {
            verifier: IdTokenVerifier::new(&cfg.authority_url, http.clone()),
            cfg,
            http,
            secrets,
        }
    }

    fn authority(&self) -> &str {
        self.cfg.authority_url.trim_end_matches('/')
    }

    async fn credential(&self, app: AppRegistration) -> Result<AppCredential, MicrosoftError> {
        self.secrets
            .app_credential(app, Freshness::Cached)
            .await
            .map_err(|e| MicrosoftError::Unavailable {
                message: format!("cannot read the app credential: {e}"),
            })
    }

    fn redirect_url(&self) -> Result<RedirectUrl, MicrosoftError> {
        RedirectUrl::new(self.cfg.redirect_uri.clone()).map_err(|_| misconfigured("redirect URI"))
    }
}

#[async_trait]
impl AdminSignIn for EntraSignIn {
    async fn start_sign_in(
        &self,
        app: AppRegistration,
        state: &str,
    ) -> Result<SignInStart, MicrosoftError> {
        let credential = self.credential(app).await?;
        let auth_url = AuthUrl::new(format!(
            "{}/organizations/oauth2/v2.0/authorize",
            self.authority()
        ))
        .map_err(|_| misconfigured("authority URL"))?;
        let client: EntraClient<EndpointSet, EndpointNotSet> =
            Client::new(ClientId::new(credential.client_id))
                .set_auth_uri(auth_url)
                .set_redirect_uri(self.redirect_url()?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = o365_domain::consent::random_token();
        let (url, _) = client
            .authorize_url(|| CsrfToken::new(state.to_owned()))
            .add_scope(Scope::new("openid".into()))
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new("email".into()))
            .set_pkce_challenge(challenge)
            .add_extra_param("response_mode", "query")
            .add_extra_param("nonce", nonce.clone())
            // No login_hint: the admin picks the account consciously (and the checks after
            // sign-in hold whatever is picked).
            .add_extra_param("prompt", "select_account")
            .url();
        Ok(SignInStart {
            url: url.to_string(),
            pkce_verifier: Sensitive::new(verifier.secret().clone()),
            nonce,
        })
    }

    async fn finish_sign_in(
        &self,
        app: AppRegistration,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<SignedInAccount, MicrosoftError> {
        let credential = self.credential(app).await?;
        let token_url = format!("{}/organizations/oauth2/v2.0/token", self.authority());
        let mut client: EntraClient<EndpointNotSet, EndpointSet> =
            Client::new(ClientId::new(credential.client_id.clone()))
                .set_token_uri(
                    TokenUrl::new(token_url.clone()).map_err(|_| misconfigured("authority URL"))?,
                )
                .set_redirect_uri(self.redirect_url()?)
                .set_auth_type(AuthType::RequestBody);
        let mut assertion = None;
        match &credential.credential {
            ClientCredential::Secret(secret) => {
                client = client.set_client_secret(ClientSecret::new(secret.expose().clone()));
            }
            ClientCredential::Certificate {
                certificate_pem,
                private_key_pem,
            } => {
                assertion = Some(client_assertion(
                    &token_url,
                    &credential.client_id,
                    certificate_pem,
                    private_key_pem.expose(),
                )?);
            }
        }
        let mut request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()));
        if let Some(assertion) = assertion {
            request = request
                .add_extra_param("client_assertion_type", ASSERTION_TYPE)
                .add_extra_param("client_assertion", assertion);
        }
        let http = self.http.clone();
        let call = move |req: oauth2::HttpRequest| execute(http.clone(), req);
        let response = request.request_async(&call).await.map_err(|e| match e {
            RequestTokenError::ServerResponse(refusal) => {
                let error = refusal.error().to_string();
                let description = refusal.error_description().cloned().unwrap_or_default();
                let ms_code = description
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .find(|w| w.starts_with("AADSTS"))
                    .map(str::to_owned)
                    .unwrap_or_else(|| error.clone());
                // Our credential being refused is an operator problem, not the admin's.
                let code = if error == "invalid_client" {
                    FailureCode::InvalidCredential
                } else {
                    FailureCode::SignInFailed
                };
                tracing::warn!(microsoft_code = ms_code, "sign-in code refused");
                MicrosoftError::refused(code, ms_code, description)
            }
            other => MicrosoftError::Unavailable {
                message: format!("the sign-in token request failed: {other}"),
            },
        })?;
        let _ = response.access_token(); // delegated token: not used; only the ID token matters
        let id_token = response.extra_fields().id_token.clone().ok_or_else(|| {
            MicrosoftError::refused(
                FailureCode::InvalidIdToken,
                "id_token",
                "Microsoft's answer carried no ID token",
            )
        })?;
        self.verifier
            .verify(&id_token, &credential.client_id, nonce)
            .await
    }

    async fn admin_consent_url(
        &self,
        app: AppRegistration,
        tenant: &TenantId,
        state: &str,
    ) -> Result<String, MicrosoftError> {
        let credential = self.credential(app).await?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &credential.client_id)
            .append_pair("scope", GRAPH_SCOPE)
            .append_pair("redirect_uri", &self.cfg.redirect_uri)
            .append_pair("state", state)
            .finish();
        Ok(format!(
            "{}/{tenant}/v2.0/adminconsent?{query}",
            self.authority()
        ))
    }
}
