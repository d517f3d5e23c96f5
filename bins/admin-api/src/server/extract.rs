//! Body and query extractors whose failures are JSON 400s naming the problem (axum's own
//! answer plain-text 422s).

use super::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// Largest JSON body the admin API reads.
const MAX_BODY: usize = 4 << 20;

/// A JSON request body of type `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
        Ok(Self(value))
    }
}

/// A UTF-8 text body (rule files), possibly empty.
pub struct TextBody(pub String);

impl<S: Send + Sync> FromRequest<S> for TextBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        String::from_utf8(bytes.to_vec()).map(Self).map_err(|_| ApiError::bad_request("the body must be UTF-8 text"))
    }
}

/// Query parameters of type `T`; unknown parameters are refused.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(raw).map(Self).map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))
    }
}

/// A path parameter, percent-decoded; a path that cannot be decoded is a 400.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("malformed path: {}", e.body_text())))?;
        let value = raw.iter().next().map(|(_, v)| v.to_string()).unwrap_or_default();
        Ok(Self(value))
    }
}
