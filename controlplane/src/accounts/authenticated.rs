//! The `Authenticated` extractor every other area uses: who is calling, with
//! which rights.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;

use super::secret::API_KEY_PREFIX;
use super::store;
use crate::db::now_ms;
use crate::error::ApiError;
use crate::state::AppState;

/// The caller of a request, proven by `Authorization: Bearer <access token>`
/// (a JWT from `POST /v1/sessions`) or `Authorization: Bearer vzk_...` (an
/// API key). A handler that takes this argument answers 401 (JSON body,
/// `WWW-Authenticate: Bearer`) to callers without valid credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The user.
    pub user_id: i64,
    /// The user's name.
    pub username: String,
    /// Whether the user is an instance admin (may call `/v1/admin/*`).
    pub is_admin: bool,
    /// The login session (refresh-token family) of an access token; `None`
    /// for an API key.
    pub session_id: Option<i64>,
    /// The access token's `jti`; `None` for an API key.
    pub token_id: Option<String>,
    /// `None`: a user's access token with all of the user's rights.
    /// `Some`: an API key limited to these scopes.
    pub scopes: Option<Vec<String>>,
}

impl Authenticated {
    /// Ok when the caller holds `scope`: user tokens hold every scope, API
    /// keys only those they were created with. Otherwise 403.
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        match &self.scopes {
            None => Ok(()),
            Some(scopes) if scopes.iter().any(|held| held == scope) => Ok(()),
            Some(_) => Err(ApiError::forbidden(format!(
                "this API key lacks the scope {scope}"
            ))),
        }
    }

    /// Ok for a user's own access token; 403 for an API key. Account
    /// management (password, sessions, TOTP, API keys) needs the user.
    pub fn require_user_token(&self) -> Result<(), ApiError> {
        match self.scopes {
            None => Ok(()),
            Some(_) => Err(ApiError::forbidden(
                "this needs a user's access token, not an API key",
            )),
        }
    }

    /// Ok when the caller is an instance admin (and, for an API key, holds
    /// the `admin` scope). Otherwise 403.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if !self.is_admin {
            return Err(ApiError::forbidden("only instance admins may do this"));
        }
        self.require_scope(super::scopes::ADMIN)
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let credential = bearer_credential(parts)?;
        if credential.starts_with(API_KEY_PREFIX) {
            return super::api_keys::authenticate(state, credential).await;
        }
        authenticate_access_token(state, credential).await
    }
}

/// The credential of `Authorization: Bearer <credential>`.
fn bearer_credential(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("this route needs Authorization: Bearer <token>"))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not ASCII"))?;
    let (scheme, credential) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthorized("expected the Bearer scheme"));
    }
    let credential = credential.trim();
    if credential.is_empty() {
        return Err(ApiError::unauthorized("the bearer token is empty"));
    }
    Ok(credential)
}

async fn authenticate_access_token(
    state: &AppState,
    token: &str,
) -> Result<Authenticated, ApiError> {
    let claims = state
        .auth
        .verify_access_token(token, now_ms())
        .map_err(|error| {
            ApiError::new(StatusCode::UNAUTHORIZED, error.name(), error.to_string())
        })?;
    if state.auth.is_revoked(&claims.jti) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_revoked",
            "this access token was revoked (its session ended)",
        ));
    }
    // The user row, not the claims, decides the name and admin flag: both
    // may have changed since the token was issued.
    let user = store::user_by_id(&state.db, claims.uid)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token's user no longer exists"))?;
    Ok(Authenticated {
        user_id: user.id,
        username: user.username,
        is_admin: user.is_admin,
        session_id: Some(claims.sid),
        token_id: Some(claims.jti),
        scopes: None,
    })
}

/// Adds `WWW-Authenticate: Bearer` (RFC 6750 §3) to every 401.
pub(super) async fn add_www_authenticate(mut response: Response) -> Response {
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"veza\""),
        );
    }
    response
}
