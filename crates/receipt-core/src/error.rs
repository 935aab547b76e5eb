//! Error codes (SPEC section 2) and the typed error every fallible operation returns.

use serde::{Deserialize, Serialize};

/// The SDK error codes. Values are stable: they cross the wire, the C ABI and ArkTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
#[repr(u32)]
pub enum ErrorCode {
    /// Anything without a more precise code (for example an internal storage failure).
    GeneralError = 1,
    /// A parameter is out of range, empty or malformed.
    InvalidParam = 110,
    /// A user is already logged in on this client.
    UserAlreadyLogin = 200,
    /// The operation needs a logged-in user.
    UserNotLogin = 201,
    /// The token was refused: bad signature, expired, for another user, or missing.
    UserAuthenticationFailed = 202,
    /// The server cannot be reached (or a query needs a connection that is down).
    ServerNotReachable = 300,
    /// The server is overloaded or the request was refused for rate reasons.
    ServerBusy = 302,
    /// The message is unknown, or was not addressed to the caller.
    MessageInvalid = 500,
    /// Wrong message type for the operation (acking your own or a chat-room message, ...).
    MessageWrongType = 501,
    /// The feature is not enabled (group read acks off, or `requireReadAck` is false).
    FeatureNotEnabled = 505,
    /// The message is past the validity of the ack.
    MessageExpired = 506,
    /// The group does not exist.
    GroupInvalidId = 600,
    /// The caller is not a member of the group.
    GroupNotJoined = 602,
    /// The caller's role does not allow the operation.
    GroupPermissionDenied = 603,
    /// The group is at its member cap.
    GroupMembersFull = 604,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::GeneralError,
        ErrorCode::InvalidParam,
        ErrorCode::UserAlreadyLogin,
        ErrorCode::UserNotLogin,
        ErrorCode::UserAuthenticationFailed,
        ErrorCode::ServerNotReachable,
        ErrorCode::ServerBusy,
        ErrorCode::MessageInvalid,
        ErrorCode::MessageWrongType,
        ErrorCode::FeatureNotEnabled,
        ErrorCode::MessageExpired,
        ErrorCode::GroupInvalidId,
        ErrorCode::GroupNotJoined,
        ErrorCode::GroupPermissionDenied,
        ErrorCode::GroupMembersFull,
    ];

    pub fn as_u32(self) -> u32 {
        self as u32
    }
}

impl From<ErrorCode> for u32 {
    fn from(c: ErrorCode) -> u32 {
        c as u32
    }
}

impl TryFrom<u32> for ErrorCode {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        ErrorCode::ALL.into_iter().find(|c| *c as u32 == v).ok_or_else(|| format!("unknown error code {v}"))
    }
}

/// An error as users see it: a stable code and a human description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{description} (code {})", code.as_u32())]
pub struct ChatError {
    pub code: ErrorCode,
    pub description: String,
}

impl ChatError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        ChatError { code, description: description.into() }
    }
    pub fn invalid_param(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParam, d)
    }
    pub fn not_logged_in() -> Self {
        Self::new(ErrorCode::UserNotLogin, "not logged in")
    }
    pub fn invalid_message(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::MessageInvalid, d)
    }
    pub fn wrong_type(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::MessageWrongType, d)
    }
    pub fn general(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::GeneralError, d)
    }
}

pub type ChatResult<T> = Result<T, ChatError>;
