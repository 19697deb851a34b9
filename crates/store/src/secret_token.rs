//! Secrets handed out once and kept only as a hash: pairing tokens (`tpt1`) and API tokens
//! (`tat1`). The text is `<prefix>.<tenant>.<token id>.<secret>`: tenant and token id let the
//! holder's row be found by its key (keys lead with tenant_id); 256 random bits of secret make
//! it unguessable.

use domain::TenantId;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A freshly made token: its id, the text to show once, and the hash to store.
#[derive(Debug)]
pub(crate) struct IssuedToken {
    pub token_id: Uuid,
    pub text: String,
    pub secret_hash: [u8; 32],
}

/// A token's text taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedToken {
    pub tenant: TenantId,
    pub token_id: Uuid,
    pub secret_hash: [u8; 32],
}

pub(crate) fn issue(prefix: &str, tenant: TenantId) -> IssuedToken {
    let token_id = Uuid::new_v4();
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("the operating system's random source is available");
    IssuedToken {
        token_id,
        text: format!(
            "{prefix}.{}.{}.{}",
            tenant.as_uuid().simple(),
            token_id.simple(),
            hex::encode(secret)
        ),
        secret_hash: Sha256::digest(secret).into(),
    }
}

/// `None` unless `text` has exactly the shape `prefix.<uuid>.<uuid>.<64 hex digits>`.
pub(crate) fn parse(prefix: &str, text: &str) -> Option<ParsedToken> {
    let mut parts = text.trim().split('.');
    let (given, tenant, token_id, secret) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if given != prefix || parts.next().is_some() || secret.len() != 64 {
        return None;
    }
    let secret = hex::decode(secret).ok()?;
    Some(ParsedToken {
        tenant: TenantId::from_uuid(Uuid::try_parse(tenant).ok()?),
        token_id: Uuid::try_parse(token_id).ok()?,
        secret_hash: Sha256::digest(&secret).into(),
    })
}

/// Compares hashes without an early exit.
pub(crate) fn same_hash(stored: &[u8], presented: &[u8; 32]) -> bool {
    stored.len() == presented.len()
        && stored
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_their_exact_shape() {
        let tenant = TenantId::new_random();
        let issued = issue("tpt1", tenant);
        let parsed = parse("tpt1", &issued.text).unwrap();
        assert_eq!((parsed.tenant, parsed.token_id), (tenant, issued.token_id));
        assert!(same_hash(&issued.secret_hash, &parsed.secret_hash));
        let secret = issued.text.rsplit('.').next().unwrap().to_owned();
        for bad in [
            String::new(),
            issued.text.replace("tpt1", "tat1"),
            format!("{}.extra", issued.text),
            issued.text[..issued.text.len() - 2].to_owned(),
            issued.text.replace(&secret, &"zz".repeat(32)),
        ] {
            assert!(parse("tpt1", &bad).is_none(), "{bad:?}");
        }
        assert!(!same_hash(&[0u8; 32], &parsed.secret_hash));
        assert!(!same_hash(&[0u8; 31], &parsed.secret_hash));
    }
}
