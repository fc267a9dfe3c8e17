//! Secrets in types of their own: no `Debug` or `Display` of them shows the secret, so no log
//! line can print it (API keys are [`secrecy::SecretString`]s; URLs that may carry a password,
//! [`SecretUrl`]).

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A connection URL that may carry a password. Its `Debug` and `Display` show it with the
/// password replaced by `***`; only [`SecretUrl::expose`] gives the real text, for connecting.
#[derive(Clone)]
pub struct SecretUrl(SecretString);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(SecretString::from(url.into()))
    }

    /// The URL itself, password included: for the client that connects, never for a log.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with any password replaced, fit for logs and error messages; a comma-separated
    /// list of URLs (a Redis Cluster's nodes) is redacted URL by URL.
    pub fn redacted(&self) -> String {
        self.expose()
            .split(',')
            .map(|url| redact(url.trim()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = std::convert::Infallible;
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(url))
    }
}
