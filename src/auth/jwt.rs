//! JWTs: HS256 with `--jwt-secret`, RS256 or ES256 with `--jwt-public-key`,
//! checked by the `jsonwebtoken` crate (signature, `exp` required, `nbf`,
//! `iss` and `aud` when configured, 60 s of clock skew). The token's
//! header chooses the algorithm only among those a configured key allows,
//! so a token signed with the public key as an HMAC secret, or with
//! `alg: none`, is refused.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::principal::{Principal, Role};
use super::SetupError;

/// How far apart the issuer's clock and ours may be, in seconds.
const CLOCK_SKEW_SECONDS: u64 = 60;
/// The shortest HS256 secret accepted: as long as the hash (RFC 7518 3.2).
pub const MIN_SECRET_LEN: usize = 32;

/// The claims jobcast reads; others are ignored. A claim of the wrong type
/// makes the token invalid.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    role: Option<Role>,
}

/// Checks JWTs against the configured keys and claims.
pub struct JwtVerifier {
    /// The HS256 key, if a secret is configured.
    secret: Option<(DecodingKey, Validation)>,
    /// The RS256 or ES256 key, if a public key is configured.
    public: Option<(DecodingKey, Validation)>,
}

/// What the configuration says of JWTs.
pub struct JwtSettings<'a> {
    pub secret: Option<&'a str>,
    pub public_key: Option<&'a Path>,
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
}

impl JwtVerifier {
    /// The verifier the settings describe, or None when they configure no key.
    pub fn new(settings: &JwtSettings<'_>) -> Result<Option<Self>, SetupError> {
        let validation = |algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.leeway = CLOCK_SKEW_SECONDS;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "sub"]);
            if let Some(issuer) = settings.issuer {
                validation.set_issuer(&[issuer]);
            }
            match settings.audience {
                Some(audience) => validation.set_audience(&[audience]),
                None => validation.validate_aud = false,
            }
            validation
        };
        let secret = settings
            .secret
            .map(|secret| {
                if secret.len() < MIN_SECRET_LEN {
                    return Err(SetupError::ShortSecret {
                        flag: "--jwt-secret",
                        min: MIN_SECRET_LEN,
                    });
                }
                Ok((
                    DecodingKey::from_secret(secret.as_bytes()),
                    validation(Algorithm::HS256),
                ))
            })
            .transpose()?;
        let public = settings
            .public_key
            .map(|path| {
                let bad = |reason: String| SetupError::JwtPublicKey {
                    path: path.display().to_string(),
                    reason,
                };
                let pem = std::fs::read(path).map_err(|error| bad(error.to_string()))?;
                if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    return Ok((key, validation(Algorithm::RS256)));
                }
                DecodingKey::from_ec_pem(&pem)
                    .map(|key| (key, validation(Algorithm::ES256)))
                    .map_err(|_| bad("not an RSA or P-256 public key in PEM".to_owned()))
            })
            .transpose()?;
        Ok((secret.is_some() || public.is_some()).then_some(JwtVerifier { secret, public }))
    }

    /// The principal a valid token names; None for any invalid token.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let algorithm = decode_header(token).ok()?.alg;
        let (key, validation) = [&self.secret, &self.public]
            .into_iter()
            .flatten()
            .find(|(_, validation)| validation.algorithms.contains(&algorithm))?;
        let claims = decode::<Claims>(token, key, validation).ok()?.claims;
        if claims.sub.is_empty() {
            return None;
        }
        Some(Principal {
            subject: Arc::from(claims.sub),
            role: claims.role.unwrap_or(Role::User),
        })
    }
}
