//! Password hashing: Argon2id at OWASP's first recommended setting (m = 19456 KiB, t = 2,
//! p = 1), and a check that tells when a stored hash used other parameters, so signing in can
//! rehash it.

use std::sync::OnceLock;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

pub const MEMORY_KIB: u32 = 19_456;
pub const ITERATIONS: u32 = 2;
pub const PARALLELISM: u32 = 1;

/// The shortest password accepted (ASVS 6.2.1 asks for at least 8; we ask for 12).
pub const MIN_CHARS: usize = 12;
/// The longest: long enough for any passphrase, short enough to bound hashing work.
pub const MAX_CHARS: usize = 128;

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .expect("the constant Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC prefix of a hash made with the current parameters.
fn current_prefix() -> String {
    format!("$argon2id$v=19$m={MEMORY_KIB},t={ITERATIONS},p={PARALLELISM}$")
}

/// Why a new password is refused, as shown to the person choosing it.
pub fn check_new(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(format!(
            "Choose a password of at least {MIN_CHARS} characters."
        ));
    }
    if chars > MAX_CHARS {
        return Err(format!(
            "Choose a password of at most {MAX_CHARS} characters."
        ));
    }
    Ok(())
}

/// A PHC string for `password`. CPU-heavy: call from a blocking thread.
pub fn hash(password: &str) -> String {
    hasher()
        .hash_password(password.as_bytes())
        .expect("hashing with a fresh random salt cannot fail")
        .to_string()
}

/// Whether `password` matches `stored`. With no stored hash, a decoy hash is checked instead,
/// so an unknown account takes as long to refuse as a wrong password. CPU-heavy.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    static DECOY: OnceLock<String> = OnceLock::new();
    let decoy = DECOY.get_or_init(|| hash(&store::random_token(16)));
    let (stored, real) = match stored {
        Some(stored) => (stored, true),
        None => (decoy.as_str(), false),
    };
    if password.chars().count() > MAX_CHARS {
        return false;
    }
    let matches = hasher()
        .verify_password(password.as_bytes(), stored)
        .is_ok();
    matches && real
}

/// Whether `stored` was made with other parameters (or another algorithm) than today's.
pub fn needs_rehash(stored: &str) -> bool {
    !stored.starts_with(&current_prefix())
}

/// A hash with weaker, older parameters; for tests of rehash-on-sign-in.
#[doc(hidden)]
pub fn hash_with_legacy_parameters(password: &str) -> String {
    let params = Params::new(8_192, 1, 1, None).expect("valid parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .expect("hashing with a fresh random salt cannot fail")
        .to_string()
}
