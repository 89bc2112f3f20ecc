//! The org's integration settings: the two switches of the Connection Settings tab.

use serde::{Deserialize, Serialize};

use crate::connection::AppRegistration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationSettings {
    pub use_service_account: bool,
    pub read_only: bool,
    /// Bumped by every change; a change carrying an older version is a conflict.
    pub version: u64,
}

impl IntegrationSettings {
    pub const INITIAL: Self = Self {
        use_service_account: false,
        read_only: false,
        version: 1,
    };

    /// Which app registration consent and tokens use: permissions are fixed per app, so
    /// "Read Only Permissions" means a second registration.
    pub fn app(&self) -> AppRegistration {
        if self.read_only {
            AppRegistration::ReadOnly
        } else {
            AppRegistration::Default
        }
    }

    /// The settings after `change`, with the version bumped.
    pub fn apply(&self, change: SettingsChange) -> Self {
        Self {
            use_service_account: change
                .use_service_account
                .unwrap_or(self.use_service_account),
            read_only: change.read_only.unwrap_or(self.read_only),
            version: self.version + 1,
        }
    }
}

/// A partial update: `None` leaves a switch as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChange {
    pub use_service_account: Option<bool>,
    pub read_only: Option<bool>,
    /// The caller knows what switching the service account off stops (the connection is
    /// deleted and no user's mail syncs): required for that change.
    #[serde(default)]
    pub confirm: bool,
}
