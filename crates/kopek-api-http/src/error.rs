//! Errors as HTTP: `{"error": {"code": "INSUFFICIENT_FUNDS", "message": "..."}}` with the one
//! status mapping for every `ErrorCode`, and extractors whose rejections (bad JSON, bad query,
//! bad path) answer in the same shape instead of axum's plain text.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use kopek_core::{ErrorCode, Rejection};
use kopek_engine::EngineError;
use kopek_store::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// The one mapping from error codes to HTTP statuses. A new code fails to compile here until
/// it has one.
pub fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidAmount
        | ErrorCode::SameAccount
        | ErrorCode::CurrencyMismatch
        | ErrorCode::UnknownCurrency
        | ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::InsufficientFunds => StatusCode::PAYMENT_REQUIRED,
        ErrorCode::AccountNotFound | ErrorCode::PendingNotFound | ErrorCode::NotFound => {
            StatusCode::NOT_FOUND
        }
        ErrorCode::AccountFrozen
        | ErrorCode::AccountClosed
        | ErrorCode::PendingAlreadyResolved
        | ErrorCode::PendingExpired
        | ErrorCode::LinkedEventFailed
        | ErrorCode::QuoteExpired
        | ErrorCode::AccountExists
        | ErrorCode::AccountNotEmpty
        | ErrorCode::BalanceOverflow => StatusCode::CONFLICT,
        ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Overloaded | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
    }
}

/// An error's code and sentence.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `INSUFFICIENT_FUNDS`.
    pub code: String,
    pub message: String,
}

/// The body of every error response. A transfer that was declined (and recorded, so a retry
/// replays it) comes with its record.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<crate::dto::TransferDto>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub rejection: Rejection,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { status: status(code), rejection: Rejection::new(code, message) }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    pub fn body(rejection: &Rejection) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: rejection.code.to_string(),
                message: rejection.message.clone(),
            },
            transfer: None,
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        ApiError { status: status(rejection.code), rejection }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        ApiError::from(error.rejection())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::from(kopek_intake::access::unavailable(error))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ApiError::body(&self.rejection))).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// `Json<T>` whose rejections are our JSON errors (400).
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            rejection: Rejection::invalid(format!(
                "the body is larger than {} bytes",
                crate::BODY_BYTES_MAX
            )),
        };
    }
    let message = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "send a JSON body with Content-Type: application/json".to_owned()
        }
        other => format!("the body is not valid JSON for this request: {}", other.body_text()),
    };
    ApiError::invalid(message)
}

/// `Query<T>` whose rejections are our JSON errors (400).
pub struct Params<T>(pub T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::invalid(format!("the query string is not valid: {}", rejection.body_text()))
}

/// `Path<T>` whose rejections are our JSON errors (400).
pub struct Segments<T>(pub T);

impl<S, T> FromRequestParts<S> for Segments<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Segments(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    ApiError::invalid(format!("the path is not valid: {}", rejection.body_text()))
}
