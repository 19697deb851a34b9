//! Tenant attributes: the only dimensions a cross-tenant rollup may be broken down by.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A tenant attribute or email address that does not satisfy its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidTenantAttribute {
    field: &'static str,
    reason: &'static str,
}

impl InvalidTenantAttribute {
    /// Which attribute was wrong: `name`, `industry`, `region` or `email`.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Free,
    Team,
    Business,
    Enterprise,
}

impl Plan {
    pub const ALL: [Plan; 4] = [Plan::Free, Plan::Team, Plan::Business, Plan::Enterprise];

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Team => "team",
            Plan::Business => "business",
            Plan::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Plan {
    type Err = InvalidTenantAttribute;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        Plan::ALL
            .into_iter()
            .find(|plan| plan.as_str() == given.trim())
            .ok_or(InvalidTenantAttribute {
                field: "plan",
                reason: "expected one of free, team, business, enterprise",
            })
    }
}

/// What describes a tenant: its display name, and the attributes global rollups group by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantAttributes {
    pub name: String,
    pub plan: Plan,
    pub industry: String,
    pub region: String,
}

impl TenantAttributes {
    /// Trims every text attribute and checks its length.
    pub fn parse(
        name: &str,
        plan: Plan,
        industry: &str,
        region: &str,
    ) -> Result<Self, InvalidTenantAttribute> {
        Ok(Self {
            name: bounded_text("name", name, 200)?,
            plan,
            industry: bounded_text("industry", industry, 100)?.to_lowercase(),
            region: bounded_text("region", region, 100)?.to_lowercase(),
        })
    }
}

fn bounded_text(
    field: &'static str,
    given: &str,
    max_chars: usize,
) -> Result<String, InvalidTenantAttribute> {
    let trimmed = given.trim();
    if trimmed.is_empty() {
        return Err(InvalidTenantAttribute {
            field,
            reason: "must not be empty",
        });
    }
    if trimmed.chars().count() > max_chars {
        return Err(InvalidTenantAttribute {
            field,
            reason: "is too long",
        });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(InvalidTenantAttribute {
            field,
            reason: "must not contain control characters",
        });
    }
    Ok(trimmed.to_owned())
}

/// An email address, normalised to lower case. Deliverability is proven by sending mail, not by
/// parsing, so this only rejects what can never be an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(given: &str) -> Result<Self, InvalidTenantAttribute> {
        let invalid = |reason| InvalidTenantAttribute {
            field: "email",
            reason,
        };
        let normalised = given.trim().to_lowercase();
        if normalised.len() < 3 || normalised.len() > 320 {
            return Err(invalid("must be between 3 and 320 characters"));
        }
        let Some((local, domain)) = normalised.rsplit_once('@') else {
            return Err(invalid("must contain @"));
        };
        if local.is_empty() || domain.is_empty() || !domain.contains('.') {
            return Err(invalid("must look like name@example.com"));
        }
        if normalised
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid("must not contain spaces or control characters"));
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Email {
    type Error = InvalidTenantAttribute;

    fn try_from(given: String) -> Result<Self, Self::Error> {
        Email::parse(&given)
    }
}

impl From<Email> for String {
    fn from(email: Email) -> Self {
        email.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_trimmed_and_bounded() {
        let attributes =
            TenantAttributes::parse("  Acme Charging ", Plan::Team, " Energy ", "EU-West").unwrap();
        assert_eq!(attributes.name, "Acme Charging");
        assert_eq!(attributes.industry, "energy");
        assert_eq!(attributes.region, "eu-west");
        assert!(TenantAttributes::parse("", Plan::Team, "x", "y").is_err());
        assert!(TenantAttributes::parse(&"n".repeat(201), Plan::Team, "x", "y").is_err());
        assert!(TenantAttributes::parse("a\u{7}b", Plan::Team, "x", "y").is_err());
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn plans_parse() {
        assert_eq!("enterprise".parse::<Plan>().unwrap(), Plan::Enterprise);
        assert!("gold".parse::<Plan>().is_err());
    }
}
