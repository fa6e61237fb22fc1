//! Extractors for the rooms routes whose rejections are JSON errors like
//! every other answer: a path segment that is not an integer, or a query
//! string with the wrong types, is a 400 `{"error","detail"}` rather than
//! axum's plain-text rejection; a JSON body must be an object.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The foundation's [`crate::error::Json`] body (415, 400, 413 and 422
/// answered as JSON), which must also be a JSON object: serde would accept
/// a struct written as an array of its fields (`[null, null]`), a form no
/// client means and the OpenAPI document does not describe (422).
pub struct JsonObject<T>(pub T);

impl<S, T> FromRequest<S> for JsonObject<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        // The body is already bounded by the body-limit layer; reading it
        // here lets us look at it and then hand it on unchanged.
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|error| {
                if error.to_string().contains("length limit") {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        "the request body is over server.request_body_bytes_max",
                    )
                } else {
                    ApiError::bad_request(format!("cannot read the request body: {error}"))
                }
            })?;
        let is_object = bytes
            .iter()
            .find(|byte| !byte.is_ascii_whitespace())
            .is_some_and(|byte| *byte == b'{');
        let request = Request::from_parts(parts, Body::from(bytes));
        let crate::error::Json(value) =
            crate::error::Json::<T>::from_request(request, state).await?;
        if !is_object {
            return Err(ApiError::validation(
                "the request body must be a JSON object",
            ));
        }
        Ok(JsonObject(value))
    }
}

/// `axum::extract::Path` answering 400 `invalid_path` on a bad segment.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                rejection.body_text(),
            )),
        }
    }
}

/// `axum::extract::Query` answering 400 `invalid_query` on bad parameters.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                rejection.body_text(),
            )),
        }
    }
}

/// A page size from a query: `None` gives `default`, values above `max` are
/// reduced to it, and values below 1 are refused (422 naming `limit`).
pub fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match limit {
        None => Ok(default.min(max)),
        Some(limit) if limit < 1 => Err(ApiError::validation("limit must be at least 1")),
        Some(limit) => Ok(limit.min(max)),
    }
}

/// Refuses an optional text over `chars_max` characters or with control
/// characters (422 naming `field`).
pub fn check_text(field: &str, text: &str, chars_max: usize) -> Result<(), ApiError> {
    if text.chars().count() > chars_max {
        return Err(ApiError::validation(format!(
            "{field} must be at most {chars_max} characters"
        )));
    }
    if text
        .chars()
        .any(|character| character.is_control() && character != '\n' && character != '\t')
    {
        return Err(ApiError::validation(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}
