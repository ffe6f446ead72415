use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header,
};

use serde::Deserialize;

use super::claims::{Caller, Claims, Role};

/// The `iss` of every service-to-service token. Distinct from any user
/// issuer, so a service role is accepted only from a token minted with the
/// service key (see [`TokenVerifier::verify`]).
pub const SERVICE_TOKEN_ISSUER: &str = "equipoise-services";

/// Why a bearer token was not accepted. Each maps to UNAUTHENTICATED, apart
/// from a role conflict, which is PERMISSION_DENIED.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token in the authorization metadata")]
    MissingToken,
    #[error("the authorization metadata is not 'Bearer <token>'")]
    MalformedHeader,
    #[error("token has expired")]
    Expired,
    #[error("token audience is not accepted by this server")]
    WrongAudience,
    #[error("token issuer is not accepted by this server")]
    WrongIssuer,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token is invalid: {0}")]
    Invalid(String),
    #[error("token roles are not acceptable: {0}")]
    RoleConflict(String),
    /// A valid user token that claims a `service:` role.
    #[error("user tokens may not carry service roles")]
    ServiceRoleInUserToken,
    #[error("service token is invalid: {0}")]
    InvalidServiceToken(String),
    #[error("verification keys could not be loaded: {0}")]
    KeyLoading(String),
}

/// Where the public verification keys come from.
pub enum KeySource {
    /// Shared HMAC secret (HS256): the development default.
    HmacSecret(Vec<u8>),
    /// One PEM public key, RSA or EC, with its algorithm.
    PublicKeyPem { pem: Vec<u8>, algorithm: Algorithm },
    /// A JWKS document; tokens select a key with `kid`.
    Jwks(JwkSet),
}

impl KeySource {
    pub fn from_jwks_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::KeyLoading(format!("{}: {e}", path.display())))?;
        let set: JwkSet = serde_json::from_str(&text)
            .map_err(|e| AuthError::KeyLoading(format!("{}: {e}", path.display())))?;
        Ok(KeySource::Jwks(set))
    }
}

/// Verifies bearer JWTs against the configured keys, audience and issuer;
/// service tokens against the service key.
pub struct TokenVerifier {
    keys: KeySource,
    audience: String,
    issuer: String,
    /// HS256 key of service tokens; `None`: none are accepted.
    service_secret: Option<Vec<u8>>,
}

/// Only the issuer, read before verification to choose the key.
#[derive(Deserialize)]
struct IssuerOnly {
    iss: Option<String>,
}

impl TokenVerifier {
    pub fn new(keys: KeySource, audience: &str, issuer: &str) -> Result<Self, AuthError> {
        if let KeySource::PublicKeyPem { pem, algorithm } = &keys {
            decoding_key_from_pem(pem, *algorithm)?;
        }
        Ok(Self {
            keys,
            audience: audience.to_owned(),
            issuer: issuer.to_owned(),
            service_secret: None,
        })
    }

    /// Accepts service tokens (issuer [`SERVICE_TOKEN_ISSUER`]) signed HS256
    /// with `secret`.
    pub fn with_service_secret(mut self, secret: Vec<u8>) -> Self {
        self.service_secret = Some(secret);
        self
    }

    /// Verifies an `authorization` metadata value and returns the caller.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let value = header.ok_or(AuthError::MissingToken)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::MalformedHeader)?;
        self.verify(token.trim())
    }

    /// A token whose issuer is [`SERVICE_TOKEN_ISSUER`] is a service token
    /// and verifies under the service key only; any other is a user token,
    /// which may not carry a `service:` role. The unverified issuer only
    /// chooses the key: everything is then verified under that key.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let peeked: IssuerOnly =
            jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(map_jwt_error)?;
        if peeked.iss.as_deref() == Some(SERVICE_TOKEN_ISSUER) {
            return self.verify_service(token);
        }
        let caller = self.verify_user(token)?;
        if caller.roles.iter().any(|r| matches!(r, Role::Service(_))) {
            return Err(AuthError::ServiceRoleInUserToken);
        }
        Ok(caller)
    }

    fn verify_service(&self, token: &str) -> Result<Caller, AuthError> {
        let secret = self.service_secret.as_deref().ok_or_else(|| {
            AuthError::InvalidServiceToken("this server accepts no service tokens".into())
        })?;
        let validation = self.validation(Algorithm::HS256, SERVICE_TOKEN_ISSUER);
        let data = decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
            .map_err(map_jwt_error)?;
        let claims = data.claims;
        let [role] = claims.roles.as_slice() else {
            return Err(AuthError::InvalidServiceToken(
                "a service token carries exactly one role".into(),
            ));
        };
        if !matches!(role.parse::<Role>(), Ok(Role::Service(_))) {
            return Err(AuthError::InvalidServiceToken(format!(
                "'{role}' is not a service role"
            )));
        }
        if claims.sub != *role {
            return Err(AuthError::InvalidServiceToken(
                "the subject of a service token is its role".into(),
            ));
        }
        Caller::from_claims(&claims).map_err(AuthError::InvalidServiceToken)
    }

    fn verify_user(&self, token: &str) -> Result<Caller, AuthError> {
        let header = decode_header(token).map_err(map_jwt_error)?;
        let (key, algorithm) = self.key_for(&header)?;
        let validation = self.validation(algorithm, &self.issuer);
        let data = decode::<Claims>(token, &key, &validation).map_err(map_jwt_error)?;
        Caller::from_claims(&data.claims).map_err(AuthError::RoleConflict)
    }

    /// What every token must satisfy: signature, this server's audience
    /// (a string or an array naming it), the issuer, `exp`, and `nbf` when
    /// present, with 30 s of clock skew.
    fn validation(&self, algorithm: Algorithm, issuer: &str) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        validation
    }

    fn key_for(&self, header: &Header) -> Result<(DecodingKey, Algorithm), AuthError> {
        match &self.keys {
            KeySource::HmacSecret(secret) => {
                Ok((DecodingKey::from_secret(secret), Algorithm::HS256))
            }
            KeySource::PublicKeyPem { pem, algorithm } => {
                Ok((decoding_key_from_pem(pem, *algorithm)?, *algorithm))
            }
            KeySource::Jwks(set) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| AuthError::Invalid("token has no 'kid' header".into()))?;
                let jwk = set
                    .find(kid)
                    .ok_or_else(|| AuthError::Invalid(format!("no key with kid '{kid}'")))?;
                let key = DecodingKey::from_jwk(jwk).map_err(map_jwt_error)?;
                // An asymmetric key set never accepts a symmetric algorithm.
                if matches!(
                    header.alg,
                    Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
                ) {
                    return Err(AuthError::Invalid(
                        "HMAC tokens are not accepted with a JWKS".into(),
                    ));
                }
                Ok((key, header.alg))
            }
        }
    }
}

fn decoding_key_from_pem(pem: &[u8], algorithm: Algorithm) -> Result<DecodingKey, AuthError> {
    let key = match algorithm {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => {
            DecodingKey::from_rsa_pem(pem)
        }
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        other => {
            return Err(AuthError::KeyLoading(format!(
                "algorithm {other:?} is not a public-key algorithm"
            )));
        }
    };
    key.map_err(|e| AuthError::KeyLoading(e.to_string()))
}

fn map_jwt_error(error: jsonwebtoken::errors::Error) -> AuthError {
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        _ => AuthError::Invalid(error.to_string()),
    }
}

/// Mints an HS256 token: for the development default, service tokens and
/// tests.
pub fn mint_hmac_token(secret: &[u8], claims: &Claims) -> Result<String, AuthError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-of-reasonable-length-0123456789";

    fn claims(roles: &[&str], exp_offset: i64, aud: &str) -> Claims {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        Claims {
            sub: "alice".into(),
            name: "Alice".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            sites: vec!["FR-MTP".into()],
            trials: vec!["RESPINE".into()],
            auth_time: Some(now),
            exp: (now + exp_offset) as u64,
            iat: Some(now as u64),
            aud: aud.into(),
            iss: "equipoise-dev".into(),
        }
    }

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(
            KeySource::HmacSecret(SECRET.to_vec()),
            "equipoise",
            "equipoise-dev",
        )
        .expect("verifier")
    }

    /// A token with the standard claims of `claims` changed by `adjust`,
    /// for claims the `Claims` struct does not model (`nbf`, array `aud`).
    fn raw_token(adjust: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut value =
            serde_json::to_value(claims(&["statistician"], 600, "equipoise")).expect("json");
        adjust(&mut value);
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &value,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("mint")
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let later = jsonwebtoken::get_current_timestamp() + 3600;
        let token = raw_token(|v| v["nbf"] = later.into());
        assert!(verifier().verify(&token).is_err(), "nbf an hour ahead");
        let earlier = jsonwebtoken::get_current_timestamp() - 60;
        let token = raw_token(|v| v["nbf"] = earlier.into());
        assert!(verifier().verify(&token).is_ok());
    }

    #[test]
    fn an_audience_array_must_name_this_server() {
        let token = raw_token(|v| v["aud"] = serde_json::json!(["other", "equipoise"]));
        assert!(verifier().verify(&token).is_ok());
        let token = raw_token(|v| v["aud"] = serde_json::json!(["other", "another"]));
        assert!(matches!(
            verifier().verify(&token),
            Err(AuthError::WrongAudience)
        ));
    }

    #[test]
    fn an_empty_subject_is_refused() {
        let token = raw_token(|v| v["sub"] = " ".into());
        let error = verifier().verify(&token).expect_err("blank subject");
        assert!(error.to_string().contains("empty subject"), "{error}");
    }

    #[test]
    fn accepts_a_valid_token() {
        let token = mint_hmac_token(SECRET, &claims(&["site_investigator"], 600, "equipoise"))
            .expect("mint");
        let caller = verifier()
            .verify_header(Some(&format!("Bearer {token}")))
            .expect("valid");
        assert_eq!(caller.subject, "alice");
        assert!(caller.may_access_site("FR-MTP"));
        assert!(caller.may_access_trial("RESPINE"));
        assert!(!caller.may_access_trial("OTHER"));
    }

    #[test]
    fn refuses_expired_forged_wrong_audience_and_missing_tokens() {
        let v = verifier();
        let expired =
            mint_hmac_token(SECRET, &claims(&["statistician"], -3600, "equipoise")).expect("mint");
        assert!(matches!(v.verify(&expired), Err(AuthError::Expired)));
        let forged = mint_hmac_token(
            b"another-secret",
            &claims(&["statistician"], 600, "equipoise"),
        )
        .expect("mint");
        assert!(matches!(v.verify(&forged), Err(AuthError::BadSignature)));
        let wrong_aud =
            mint_hmac_token(SECRET, &claims(&["statistician"], 600, "elsewhere")).expect("mint");
        assert!(matches!(
            v.verify(&wrong_aud),
            Err(AuthError::WrongAudience)
        ));
        assert!(matches!(
            v.verify_header(None),
            Err(AuthError::MissingToken)
        ));
        assert!(matches!(
            v.verify_header(Some("Basic abc")),
            Err(AuthError::MalformedHeader)
        ));
        assert!(matches!(v.verify("not-a-jwt"), Err(AuthError::Invalid(_))));
    }

    const SERVICE_SECRET: &[u8] = b"service-secret-of-reasonable-length-9876543210";

    fn service_claims(role: &str) -> Claims {
        Claims {
            sub: role.into(),
            roles: vec![role.into()],
            sites: Vec::new(),
            trials: vec!["*".into()],
            iss: SERVICE_TOKEN_ISSUER.into(),
            ..claims(&[], 600, "equipoise")
        }
    }

    fn service_verifier() -> TokenVerifier {
        verifier().with_service_secret(SERVICE_SECRET.to_vec())
    }

    #[test]
    fn accepts_a_service_token_signed_with_the_service_key() {
        let token =
            mint_hmac_token(SERVICE_SECRET, &service_claims("service:blinding")).expect("mint");
        let caller = service_verifier().verify(&token).expect("valid");
        assert_eq!(caller.subject, "service:blinding");
        assert_eq!(
            caller.roles.iter().collect::<Vec<_>>(),
            [&Role::Service("blinding".into())]
        );
    }

    #[test]
    fn refuses_a_service_token_signed_with_the_user_key() {
        let token = mint_hmac_token(SECRET, &service_claims("service:blinding")).expect("mint");
        assert!(matches!(
            service_verifier().verify(&token),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn refuses_service_tokens_where_no_service_key_is_configured() {
        let token =
            mint_hmac_token(SERVICE_SECRET, &service_claims("service:blinding")).expect("mint");
        assert!(matches!(
            verifier().verify(&token),
            Err(AuthError::InvalidServiceToken(_))
        ));
    }

    #[test]
    fn refuses_service_tokens_with_user_roles_several_roles_or_another_subject() {
        let v = service_verifier();
        let user_role =
            mint_hmac_token(SERVICE_SECRET, &service_claims("trial_admin")).expect("mint");
        assert!(matches!(
            v.verify(&user_role),
            Err(AuthError::InvalidServiceToken(_))
        ));
        let two_roles = Claims {
            roles: vec!["service:blinding".into(), "service:safety".into()],
            ..service_claims("service:blinding")
        };
        let two_roles = mint_hmac_token(SERVICE_SECRET, &two_roles).expect("mint");
        assert!(matches!(
            v.verify(&two_roles),
            Err(AuthError::InvalidServiceToken(_))
        ));
        let with_user_role = Claims {
            roles: vec!["service:blinding".into(), "trial_admin".into()],
            ..service_claims("service:blinding")
        };
        let with_user_role = mint_hmac_token(SERVICE_SECRET, &with_user_role).expect("mint");
        assert!(matches!(
            v.verify(&with_user_role),
            Err(AuthError::InvalidServiceToken(_))
        ));
        let other_subject = Claims {
            sub: "alice".into(),
            ..service_claims("service:blinding")
        };
        let other_subject = mint_hmac_token(SERVICE_SECRET, &other_subject).expect("mint");
        assert!(matches!(
            v.verify(&other_subject),
            Err(AuthError::InvalidServiceToken(_))
        ));
        let wrong_audience = Claims {
            aud: "elsewhere".into(),
            ..service_claims("service:blinding")
        };
        let wrong_audience = mint_hmac_token(SERVICE_SECRET, &wrong_audience).expect("mint");
        assert!(matches!(
            v.verify(&wrong_audience),
            Err(AuthError::WrongAudience)
        ));
    }

    #[test]
    fn refuses_user_tokens_that_carry_a_service_role() {
        let v = service_verifier();
        for roles in [
            &["service:blinding"][..],
            &["trial_admin", "service:blinding"],
        ] {
            let token = mint_hmac_token(SECRET, &claims(roles, 600, "equipoise")).expect("mint");
            let error = v.verify(&token).expect_err("refused");
            assert!(
                matches!(error, AuthError::ServiceRoleInUserToken),
                "{roles:?}"
            );
            assert_eq!(error.to_string(), "user tokens may not carry service roles");
        }
        // Signed with the service key but under the user issuer: still a user token.
        let token = mint_hmac_token(
            SERVICE_SECRET,
            &claims(&["service:blinding"], 600, "equipoise"),
        )
        .expect("mint");
        assert!(matches!(v.verify(&token), Err(AuthError::BadSignature)));
    }

    #[test]
    fn refuses_incompatible_roles_and_unknown_roles() {
        let v = verifier();
        let both = mint_hmac_token(
            SECRET,
            &claims(
                &["site_investigator", "unblinded_preparer"],
                600,
                "equipoise",
            ),
        )
        .expect("mint");
        assert!(matches!(v.verify(&both), Err(AuthError::RoleConflict(_))));
        let unknown =
            mint_hmac_token(SECRET, &claims(&["superuser"], 600, "equipoise")).expect("mint");
        assert!(matches!(
            v.verify(&unknown),
            Err(AuthError::RoleConflict(_))
        ));
    }
}
