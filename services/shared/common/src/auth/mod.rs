//! Bearer-token authentication: who is calling, in which roles, for which
//! sites and trials. The domain layers receive a [`Caller`]; only the tower
//! layer in [`layer`] knows about HTTP.

mod claims;
pub mod layer;
mod verifier;

pub use claims::{Caller, Claims, Role, RoleConflict, TrialScope};
pub use layer::AuthLayer;
pub use verifier::{AuthError, KeySource, SERVICE_TOKEN_ISSUER, TokenVerifier, mint_hmac_token};
