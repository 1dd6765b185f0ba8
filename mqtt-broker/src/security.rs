//! The password file and ACL in force, loaded at start and on SIGHUP.

use std::sync::Arc;

use crate::acl::Acl;
use crate::auth::PasswordFile;
use crate::broker::BrokerState;
use crate::config::Config;

/// What authentication and authorization use.
#[derive(Debug, Default)]
pub struct Security {
    /// Users and password hashes, when a password file is configured.
    pub passwords: Option<PasswordFile>,
    /// Access rules, when an ACL file is configured.
    pub acl: Option<Acl>,
}

impl Security {
    /// Loads the files named in `config`. A file that cannot be read is an
    /// error at start (the broker refuses to run open by mistake).
    pub fn load(config: &Config) -> Result<Security, String> {
        let passwords = match &config.password_file {
            Some(p) => Some(
                PasswordFile::load(p).map_err(|e| format!("password file {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let acl = match &config.acl_file {
            Some(p) => Some(Acl::load(p).map_err(|e| format!("ACL file {}: {e}", p.display()))?),
            None => None,
        };
        Ok(Security { passwords, acl })
    }
}

/// Re-reads both files; on failure the old contents stay in force.
pub fn reload(broker: &BrokerState) {
    match Security::load(&broker.config) {
        Ok(s) => {
            *broker.security.write() = Arc::new(s);
            tracing::info!("password and ACL files reloaded");
        }
        Err(e) => tracing::error!(error = %e, "reload failed; keeping the previous files"),
    }
}
