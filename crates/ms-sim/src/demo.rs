//! A ready-made demo world (used by `ms-sim --demo` and handy for local runs).

use serde::Serialize;
use time::OffsetDateTime;

use crate::model::*;
use crate::{SimHandle, fixtures};

#[derive(Clone, Debug, Serialize)]
pub struct DemoApp {
    pub app: AppInfo,
    pub secret: SecretInfo,
    pub certificate: CertInfo,
}

#[derive(Clone, Debug, Serialize)]
pub struct DemoWorld {
    /// `contoso.com`.
    pub tenant: TenantInfo,
    /// Mail.ReadWrite + User.Read.All.
    pub default_app: DemoApp,
    /// Mail.Read + User.Read.All (the "Read Only Permissions" registration).
    pub read_only_app: DemoApp,
    /// Users of `contoso.com`.
    pub users: Vec<UserInfo>,
    /// `fabrikam.com`: another customer, for cross-tenant cases.
    pub other_tenant: TenantInfo,
    /// `admin@fabrikam.com` (Global Administrator) and `alan.steiner@fabrikam.com`.
    pub other_users: Vec<UserInfo>,
}

impl SimHandle {
    /// Create a demo tenant `contoso.com` with two app registrations (secret + the fixture
    /// certificate each, registered `redirect_uris`), a Global Administrator, a Privileged Role
    /// Administrator and mail users, including the problem cases (unlicensed, on-premises,
    /// excluded by access policy) and the lookup cases (mail differs from the UPN, an alias, a
    /// `$` UPN); and a second tenant `fabrikam.com`. Consent is NOT granted: walk the consent
    /// page (or call `grant_consent`).
    pub fn create_demo(
        &self,
        redirect_uris: &[String],
        messages_per_folder: u32,
    ) -> Result<DemoWorld, SimError> {
        let tenant = self.create_tenant(TenantSpec {
            domain: "contoso.com".into(),
            display_name: Some("Contoso".into()),
            ..Default::default()
        })?;
        let expires = OffsetDateTime::now_utc() + time::Duration::days(365);
        let mk = |name: &str, perms: &[&str]| -> Result<DemoApp, SimError> {
            let app = self.create_app(AppSpec {
                display_name: name.into(),
                redirect_uris: redirect_uris.to_vec(),
                permissions: perms.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })?;
            let secret = self.add_secret(app.client_id, expires)?;
            let certificate = self.add_certificate(app.client_id, fixtures::CLIENT_CERT_PEM)?;
            Ok(DemoApp {
                app,
                secret,
                certificate,
            })
        };
        let default_app = mk("o365-sync", &["Mail.ReadWrite", "User.Read.All"])?;
        let read_only_app = mk("o365-sync (read only)", &["Mail.Read", "User.Read.All"])?;
        let mb = Some(MailboxSpec {
            inbox: messages_per_folder,
            sentitems: messages_per_folder / 2,
        });
        // A mail user; the special cases override its defaults.
        let user = |user_name: &str| UserSpec {
            user_name: user_name.into(),
            mailbox: mb,
            ..Default::default()
        };
        let specs = [
            UserSpec {
                display_name: Some("MOD Administrator".into()),
                global_admin: true,
                ..user("admin")
            },
            user("adele.vance"),
            user("alex.wilber"),
            user("megan.bowen"),
            UserSpec {
                licensed: false,
                ..user("patti.fernandez")
            },
            UserSpec {
                on_premises: true,
                ..user("lee.gu")
            },
            UserSpec {
                access_policy_excluded: true,
                ..user("grady.archie")
            },
            UserSpec {
                mail: Some("diego@contoso.com".into()),
                ..user("diego.siciliani")
            },
            UserSpec {
                proxy_addresses: vec!["smtp:nestor@contoso.com".into()],
                ..user("nestor.wilke")
            },
            UserSpec {
                display_name: Some("Sales Service".into()),
                ..user("$svc-sales")
            },
            UserSpec {
                privileged_role_admin: true,
                ..user("pradeep.gupta")
            },
        ];
        let users = specs
            .into_iter()
            .map(|s| self.create_user(tenant.id, s))
            .collect::<Result<Vec<_>, _>>()?;
        let other_tenant = self.create_tenant(TenantSpec {
            domain: "fabrikam.com".into(),
            display_name: Some("Fabrikam".into()),
            ..Default::default()
        })?;
        let other_specs = [
            UserSpec {
                display_name: Some("Fabrikam Administrator".into()),
                global_admin: true,
                ..user("admin")
            },
            user("alan.steiner"),
        ];
        let other_users = other_specs
            .into_iter()
            .map(|s| self.create_user(other_tenant.id, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DemoWorld {
            tenant,
            default_app,
            read_only_app,
            users,
            other_tenant,
            other_users,
        })
    }
}

/// A tenant in which one app registration already holds consent: the starting point of every
/// test or benchmark that is about mail rather than about consent.
#[derive(Clone, Debug, Serialize)]
pub struct ConsentedApp {
    pub tenant: TenantInfo,
    pub app: AppInfo,
    /// A client secret valid for 30 days.
    pub secret: SecretInfo,
}

impl SimHandle {
    /// Creates tenant `domain`, an app "o365-sync" with `permissions` and a secret, and grants
    /// the app consent in the tenant.
    pub fn consented_app(
        &self,
        domain: &str,
        permissions: &[&str],
    ) -> Result<ConsentedApp, SimError> {
        let tenant = self.create_tenant(TenantSpec {
            domain: domain.into(),
            ..Default::default()
        })?;
        let app = self.create_app(AppSpec {
            display_name: "o365-sync".into(),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        })?;
        let secret = self.add_secret(
            app.client_id,
            OffsetDateTime::now_utc() + time::Duration::days(30),
        )?;
        self.grant_consent(tenant.id, app.client_id)?;
        Ok(ConsentedApp {
            tenant,
            app,
            secret,
        })
    }
}
