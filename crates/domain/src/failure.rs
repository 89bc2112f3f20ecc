//! Every failure an admin can meet, with a stable code, Microsoft's own words and our remediation.
//!
//! Codes are branched on; Microsoft's message is shown verbatim (it may change, so it is never
//! parsed); the remediation is ours and follows from the code.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Who a failure stops: the whole org's service-account connection, or one mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureScope {
    Org,
    User,
    /// Passing trouble (throttling aside): retried automatically, shown only if it persists.
    Transient,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// Graph 403 `Authorization_RequestDenied`, or `ErrorAccessDenied` without a Mail permission.
    InsufficientPrivileges,
    /// Graph 401 `Authorization_IdentityNotFound`.
    AuthorizationIdentityNotFound,
    /// Consent redirect `access_denied` / AADSTS65004: the admin pressed Cancel.
    ConsentDeclined,
    /// AADSTS90094: the person consenting is not allowed to grant application permissions.
    NeedAdminApproval,
    /// Consent redirect `consent_required`, token AADSTS65001 / 700016 / 7000229: no grant in the tenant.
    ConsentRequired,
    /// Any other consent error; Microsoft's code is kept verbatim in `microsoft_code`.
    ConsentFailed,
    /// AADSTS7000215 / 7000222: our app credential is wrong or expired (an operator problem).
    InvalidCredential,
    /// AADSTS90002: the tenant does not exist.
    TenantNotFound,
    /// AADSTS53003: the tenant's Conditional Access policy blocks the app.
    ConditionalAccessBlocked,
    /// The token we got was issued for another tenant than the one consent named.
    TenantMismatch,
    /// Graph 404 `ErrorInvalidUser`.
    UserNotFound,
    /// Graph 404 `MailboxNotEnabledForRESTAPI` (unlicensed, on-premises, soft-deleted, guest).
    MailboxNotEnabled,
    /// Graph 403 `ErrorAccessDenied` "Access to OData is disabled.": an application access policy.
    MailboxAccessPolicy,
    /// 5xx, resets, truncated answers that outlasted our retries.
    MicrosoftUnavailable,
    /// Microsoft refused the sign-in (cancelled, user of another tenant, code refused…).
    SignInFailed,
    /// Microsoft's ID token did not verify (signature, issuer, audience, nonce or lifetime).
    InvalidIdToken,
    /// A personal Microsoft account signed in: it has no organisation tenant to connect.
    PersonalAccount,
    /// The account that signed in holds neither Global Administrator nor Privileged Role
    /// Administrator, the two roles that can grant application permissions.
    NotGlobalAdministrator,
    /// The ID token carried no `wids` claim, so the account's roles are unknown (never taken as
    /// "admin"): our app registration must emit directory roles.
    DirectoryRolesUnavailable,
    /// The directory user who signed in does not have the Primary user's email among its
    /// addresses.
    NotPrimaryAccount,
    /// The tenant is already bound to another org of the platform.
    TenantInUse,
    /// "Read Only Permissions" changed after the grant: the grant is for the other app.
    NeedsReconsent,
    /// The service account is on but not connected (never activated, deleted, or mid-way).
    NotConnected,
    /// The service account is switched off: this service syncs nothing.
    ServiceAccountOff,
}

impl FailureCode {
    /// Graph's generic `ErrorAccessDenied` ("Access is denied") on one mailbox. Alone it means
    /// the app holds no Mail permission — the org's problem, every mailbox stops. But when
    /// another mailbox of the org synced since the grant, the app has the permission and this
    /// mailbox is scoped out of it (Exchange RBAC for Applications answers the same way): the
    /// user's problem, and the rest of the org goes on.
    pub fn for_generic_access_denied(another_mailbox_synced_since_grant: bool) -> Self {
        if another_mailbox_synced_since_grant {
            FailureCode::MailboxAccessPolicy
        } else {
            FailureCode::InsufficientPrivileges
        }
    }

    pub fn scope(self) -> FailureScope {
        use FailureCode::*;
        match self {
            UserNotFound | MailboxNotEnabled | MailboxAccessPolicy => FailureScope::User,
            MicrosoftUnavailable => FailureScope::Transient,
            _ => FailureScope::Org,
        }
    }

    /// The stable snake_case name (as serialised).
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// What the admin should do. `email` is the mailbox concerned, where there is one.
    pub fn remediation(self, email: Option<&str>) -> String {
        use FailureCode::*;
        const GRANT: &str = "In the Microsoft Entra admin center go to Enterprise applications → the o365-sync app → Permissions → \"Grant admin consent\", then on the Connection Settings tab delete the connection and activate it again with the same email.";
        match self {
            InsufficientPrivileges => format!("The app lacks the permissions it needs. {GRANT}"),
            AuthorizationIdentityNotFound => format!(
                "Microsoft does not know the app in your tenant yet. Right after consent this settles by itself within a minute; if it persists: {GRANT}"
            ),
            ConsentDeclined => "Consent was cancelled. Activate the connection again and choose Accept on Microsoft's consent page.".into(),
            NeedAdminApproval => "The account that signed in cannot grant organisation-wide permissions. Sign in as a Global Administrator (or Privileged Role Administrator) and activate the connection again.".into(),
            ConsentRequired => format!("Your tenant has not granted the app's permissions. {GRANT}"),
            ConsentFailed => "Microsoft refused the consent (its code is shown). Activate the connection again; if it repeats, contact support with the code.".into(),
            InvalidCredential => "Our application credential was refused by Microsoft. This is on our side: operators have been alerted and will rotate the credential; no action is needed from you.".into(),
            TenantNotFound => "Microsoft does not know this tenant. Delete the connection and activate it again, signing in with an account of your organisation's tenant.".into(),
            ConditionalAccessBlocked => "A Conditional Access policy in your tenant blocks the app. Exclude the o365-sync app from that policy in the Entra admin center (Protection → Conditional Access), then verify the connection again.".into(),
            TenantMismatch => "Microsoft's answer named another tenant than the one you signed in to. Nothing was connected. Activate again and grant consent from the page we send you to, signed in with the same account.".into(),
            UserNotFound => format!(
                "Unable to find a user matching {}. The Outlook account is not set up: check the address, or create the user's mailbox in Microsoft 365.",
                email.unwrap_or("this address")
            ),
            MailboxNotEnabled => "The mailbox is not enabled for Exchange Online (unlicensed, on-premises, soft-deleted or a guest). Assign an Exchange Online licence or move the mailbox to Exchange Online.".into(),
            MailboxAccessPolicy => "Your organisation's application access policy excludes this mailbox. Add the mailbox to the security group the policy allows (Exchange Online PowerShell: New-ApplicationAccessPolicy / Exchange RBAC for Applications), or switch sync off for this user.".into(),
            MicrosoftUnavailable => "Microsoft 365 did not answer reliably. Sync retries automatically; no action is needed unless this persists for hours.".into(),
            SignInFailed => "Microsoft did not complete the sign-in (its code and message are shown). Activate the connection again and sign in with the Primary user's work account.".into(),
            InvalidIdToken => "Microsoft's sign-in answer could not be verified, so nothing was connected. Activate the connection again; if this repeats, contact support with the time it happened.".into(),
            PersonalAccount => "A personal Microsoft account signed in. Activate the connection again and sign in with your organisation's work account — the Primary user's, which must be a Global Administrator.".into(),
            NotGlobalAdministrator => "The account that signed in is not a Global Administrator (or Privileged Role Administrator) of its Microsoft 365 tenant, so it cannot grant organisation-wide permissions. Activate again signed in as a Global Administrator who is also the Primary user here, or have a Global Administrator become the Primary user.".into(),
            DirectoryRolesUnavailable => "Microsoft did not say which directory roles the account that signed in holds, so we cannot confirm it may grant consent. This is a setting of our app registration, not of your tenant: contact support.".into(),
            NotPrimaryAccount => format!(
                "The Microsoft account that signed in is not the Primary user's: none of its addresses (user principal name, mail, aliases) is {}. Activate again signed in with the Primary user's Microsoft account, or make the person who signed in the Primary user first.",
                email.unwrap_or("the Primary user's email")
            ),
            NeedsReconsent => "\"Read Only Permissions\" was changed after consent, so the grant is for the other set of permissions and sync has stopped. The Primary user deletes the connection on the Connection Settings tab and activates it again; a Global Administrator then grants the new permissions.".into(),
            NotConnected => "The service account is on but not connected, so this mailbox does not sync. The Primary user activates the connection on the Connection Settings tab (My Connection → Activate).".into(),
            ServiceAccountOff => "\"Use Service Account\" is off, so this service syncs no mail. Turn it on in Connection Settings and have the Primary user activate the connection.".into(),
            TenantInUse => "This Microsoft 365 tenant is already connected to another organisation on this platform, and a tenant can serve only one. An admin of that organisation must delete its connection first; if you do not know which organisation it is, contact support.".into(),
        }
    }
}

/// A recorded failure: what happened, in Microsoft's words, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: FailureCode,
    /// Microsoft's own code (`Authorization_RequestDenied`, `AADSTS65004`, …), verbatim.
    pub microsoft_code: Option<String>,
    /// Microsoft's message, verbatim (shown to admins, never branched on).
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl Failure {
    pub fn new(
        code: FailureCode,
        microsoft_code: Option<&str>,
        message: impl Into<String>,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            code,
            microsoft_code: microsoft_code.map(str::to_owned),
            message: message.into(),
            at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_level_failures_name_the_mailbox() {
        let text = FailureCode::UserNotFound.remediation(Some("adele@contoso.com"));
        assert!(text.starts_with("Unable to find a user matching adele@contoso.com"));
        assert_eq!(FailureCode::UserNotFound.scope(), FailureScope::User);
        assert_eq!(
            FailureCode::InsufficientPrivileges.scope(),
            FailureScope::Org
        );
    }

    #[test]
    fn consent_problems_point_to_the_entra_portal() {
        for code in [
            FailureCode::InsufficientPrivileges,
            FailureCode::AuthorizationIdentityNotFound,
            FailureCode::ConsentRequired,
        ] {
            let text = code.remediation(None);
            assert!(
                text.contains("Grant admin consent") && text.contains("delete the connection"),
                "{code:?}"
            );
        }
    }
}
