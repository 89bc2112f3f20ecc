//! Directory reads (application permission User.Read.All): a user by object id, and a platform
//! email resolved to its directory user — by UPN, then `mail`, then a proxy address. The filters
//! are plain ones: `ConsistencyLevel: eventual` would make them eventually consistent and miss a
//! user renamed a moment ago.

use std::time::Instant;

use async_trait::async_trait;
use o365_domain::connection::AppRegistration;
use o365_domain::failure::FailureCode;
use o365_domain::ids::{Email, TenantId};
use o365_domain::microsoft::{Directory, DirectoryUser, MicrosoftError};
use serde::Deserialize;

use crate::body_reader::Whole;
use crate::errors::CallKind;
use crate::{GraphClient, LogCtx, encode};

const SELECT: &str = "id,userPrincipalName,mail,proxyAddresses,displayName";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawUser {
    id: String,
    user_principal_name: Option<String>,
    mail: Option<String>,
    #[serde(default)]
    proxy_addresses: Vec<String>,
    display_name: Option<String>,
}

impl From<RawUser> for DirectoryUser {
    fn from(u: RawUser) -> Self {
        DirectoryUser {
            user_principal_name: u.user_principal_name.unwrap_or_default(),
            id: u.id,
            mail: u.mail,
            proxy_addresses: u.proxy_addresses,
            display_name: u.display_name,
        }
    }
}

#[derive(Deserialize)]
struct RawUsers {
    #[serde(default)]
    value: Vec<RawUser>,
}

/// A string literal inside an OData URL: quotes doubled, then percent-encoded.
fn odata_literal(s: &str) -> String {
    encode(&format!("'{}'", s.replace('\'', "''")), b"")
}

/// `/users/{upn}`, or the key form `/users('{upn}')` for a UPN that begins with `$` (Graph
/// reads the path form as a system query option and answers 400).
pub(crate) fn user_path(upn: &str) -> String {
    if upn.starts_with('$') {
        format!("/users({})", odata_literal(upn))
    } else {
        format!("/users/{}", encode(upn, b""))
    }
}

fn not_found(e: &MicrosoftError) -> bool {
    matches!(
        e,
        MicrosoftError::Refused {
            code: FailureCode::UserNotFound,
            ..
        }
    )
}

impl GraphClient {
    async fn directory_get<T>(
        &self,
        tenant: &TenantId,
        app: AppRegistration,
        path_and_query: &str,
        subject: &str,
        parse: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, MicrosoftError> {
        let url = self.graph_url(path_and_query);
        let deadline = Instant::now() + self.config().default_patience;
        let log = LogCtx {
            mailbox: subject,
            folder: "",
        };
        self.get(
            &url,
            tenant,
            app,
            &[],
            CallKind::Directory,
            deadline,
            log,
            |announced| Whole::new(announced, &parse),
        )
        .await
    }

    async fn single(
        &self,
        tenant: &TenantId,
        app: AppRegistration,
        path: &str,
        subject: &str,
    ) -> Result<Option<DirectoryUser>, MicrosoftError> {
        let result = self
            .directory_get(
                tenant,
                app,
                &format!("{path}?$select={SELECT}"),
                subject,
                |b| {
                    serde_json::from_slice::<RawUser>(b)
                        .map(DirectoryUser::from)
                        .map_err(|e| format!("invalid user JSON: {e}"))
                },
            )
            .await;
        match result {
            Ok(user) => Ok(Some(user)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn first_matching(
        &self,
        tenant: &TenantId,
        app: AppRegistration,
        filter: &str,
        subject: &str,
    ) -> Result<Option<DirectoryUser>, MicrosoftError> {
        let path = format!("/users?$filter={filter}&$select={SELECT}");
        self.directory_get(tenant, app, &path, subject, |b| {
            serde_json::from_slice::<RawUsers>(b)
                .map(|u| u.value.into_iter().next().map(DirectoryUser::from))
                .map_err(|e| format!("invalid users JSON: {e}"))
        })
        .await
    }
}

#[async_trait]
impl Directory for GraphClient {
    async fn user_by_id(
        &self,
        tenant: &TenantId,
        app: AppRegistration,
        id: &str,
    ) -> Result<Option<DirectoryUser>, MicrosoftError> {
        self.single(tenant, app, &format!("/users/{}", encode(id, b"")), id)
            .await
    }

    async fn find_user(
        &self,
        tenant: &TenantId,
        app: AppRegistration,
        email: &Email,
    ) -> Result<Option<DirectoryUser>, MicrosoftError> {
        let subject = email.key();
        if let Some(user) = self
            .single(tenant, app, &user_path(email.as_str()), subject)
            .await?
        {
            return Ok(Some(user));
        }
        let by_mail = format!("mail%20eq%20{}", odata_literal(email.as_str()));
        if let Some(user) = self.first_matching(tenant, app, &by_mail, subject).await? {
            return Ok(Some(user));
        }
        let by_alias = format!(
            "proxyAddresses/any(x:x%20eq%20{})",
            odata_literal(&format!("smtp:{}", email.as_str()))
        );
        self.first_matching(tenant, app, &by_alias, subject).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_upns_use_the_key_form_and_quotes_are_doubled() {
        assert_eq!(user_path("adele@contoso.com"), "/users/adele%40contoso.com");
        assert_eq!(
            user_path("$svc@contoso.com"),
            "/users(%27%24svc%40contoso.com%27)"
        );
        assert_eq!(odata_literal("o'neil@x.com"), "%27o%27%27neil%40x.com%27");
    }
}
