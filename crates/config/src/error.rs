//! What can be wrong with the settings: a file that cannot be read or
//! parsed, an environment variable that does not parse, or a value that
//! breaks a rule. Every message names the setting, so a bad deployment
//! fails at start with a reason an operator can act on.
use std::path::PathBuf;

/// Loading the platform config or the tenants file failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {} is not valid: {error}", path.display())]
    Parse {
        path: PathBuf,
        error: serde_yaml_ng::Error,
    },
    #[error("environment variable {name}={value:?} is not valid: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: BadValue,
    },
    /// The layers parsed, but together they break a rule.
    #[error("the config is not valid: {0}")]
    Invalid(Invalid),
    #[error(transparent)]
    Tenants(#[from] TenantsError),
}

impl From<Invalid> for ConfigError {
    fn from(invalid: Invalid) -> Self {
        Self::Invalid(invalid)
    }
}

/// Reading the tenants file failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    #[error("cannot read tenants file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("tenants file {} is not valid: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        reason: TenantsFileError,
    },
}

/// What is wrong with the text of a tenants file.
#[derive(Debug, thiserror::Error)]
pub enum TenantsFileError {
    #[error("{0}")]
    Yaml(serde_yaml_ng::Error),
    #[error("{0}")]
    Invalid(Invalid),
}

impl From<Invalid> for TenantsFileError {
    fn from(invalid: Invalid) -> Self {
        Self::Invalid(invalid)
    }
}

/// The text of an environment variable that does not parse as its setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadValue {
    #[error("must not be empty")]
    Empty,
    #[error("expected one of: {}", choices.join(", "))]
    NotAChoice { choices: Vec<&'static str> },
    /// The parser's own words (`invalid digit found in string`, ...).
    #[error("{0}")]
    Unparsable(String),
}

/// A setting that breaks one of the rules. `setting` and `at` are YAML
/// paths (`mcp.call_timeout_ms`), or name the tenant and server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    #[error("{setting} must be between {min} and {max}, not {value}")]
    OutOfRange {
        setting: String,
        min: u64,
        max: u64,
        value: u64,
    },
    #[error("{setting} must be at least {min}")]
    TooSmall { setting: String, min: u64 },
    #[error("{setting} must be a positive number")]
    NotPositive { setting: String },
    #[error("{setting} must not be empty")]
    Empty { setting: String },
    #[error("{at}: {what} {name:?} is listed twice")]
    Duplicate {
        at: String,
        what: &'static str,
        name: String,
    },
    #[error("{at}: {what} {name:?} is not in {list}")]
    UnknownReference {
        at: String,
        what: &'static str,
        name: String,
        list: &'static str,
    },
    /// A name or value of the wrong shape; `rule` says which shape.
    #[error("{at}: {rule}")]
    Malformed { at: String, rule: String },
    /// Two settings that contradict each other.
    #[error("{at}: {rule}")]
    Conflict { at: String, rule: String },
    #[error("tenant {tenant:?}: {invalid}")]
    InTenant {
        tenant: String,
        invalid: Box<Invalid>,
    },
}

impl Invalid {
    /// This error, as found in tenant `tenant`'s entry.
    pub fn in_tenant(self, tenant: &str) -> Self {
        Self::InTenant {
            tenant: tenant.to_owned(),
            invalid: Box::new(self),
        }
    }
}

/// `Err(OutOfRange)` unless `min <= value <= max`.
pub(crate) fn check_range(setting: &str, value: u64, min: u64, max: u64) -> Result<(), Invalid> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Invalid::OutOfRange {
            setting: setting.to_owned(),
            min,
            max,
            value,
        })
    }
}
