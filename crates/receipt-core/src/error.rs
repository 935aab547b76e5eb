//! Error codes and the typed error every fallible operation returns.
//!
//! The codes and their names are the Easemob HarmonyOS SDK's (`ChatError`); each code keeps the
//! SDK's meaning. The table, with what produces each code, is docs/errors.md; the ArkTS, C and shim
//! tables must match this enum (tests/napi/error_table.test.js checks all four).

use serde::{Deserialize, Serialize};

/// The SDK error codes. Values are stable: they cross the wire, the C ABI and ArkTS. Each variant is
/// the SDK's name in CamelCase (`UserLoginTooManyDevices` is the SDK's USER_LOGIN_TOO_MANY_DEVICES).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
#[repr(u32)]
pub enum ErrorCode {
    /// Anything without a more precise code (for example an internal storage failure).
    GeneralError = 1,
    /// A per-user quota of the server is used up: the groups a user may be in
    /// (`max_groups_per_user`), or the rate of requests other than sends (`request_rate`). The SDK's
    /// EXCEED_SERVICE_LIMIT (a service quota, including a call frequency limit).
    ExceedServiceLimit = 4,
    /// The token is missing or malformed (not a JWT with `sub` and `exp`). The SDK's INVALID_TOKEN.
    InvalidToken = 104,
    /// The token's signature is good but its expiry has passed. The SDK's TOKEN_EXPIRED.
    TokenExpired = 108,
    /// A parameter is out of range, empty or malformed.
    InvalidParam = 110,
    /// A user is already logged in on this client.
    UserAlreadyLogin = 200,
    /// The operation needs a logged-in user.
    UserNotLogin = 201,
    /// The token was refused: bad signature (for another user, another secret, or forged).
    UserAuthenticationFailed = 202,
    /// The same user logged in again on the same device id: the older session is over (the
    /// server sends this to it and closes its connection; the client does not reconnect).
    UserLoginAnotherDevice = 206,
    /// The user already has the most devices online the server allows (`max_devices_per_user`).
    UserLoginTooManyDevices = 214,
    /// The server cannot be reached (or a query needs a connection that is down).
    ServerNotReachable = 300,
    /// The server is overloaded (its connection cap is reached).
    ServerBusy = 302,
    /// The message does not fit the operation: unknown, not addressed to the caller, sent by the
    /// caller (acking your own message), or of a type the operation does not take (a chat-room
    /// message, a group message given to a 1:1 ack, ...).
    MessageInvalid = 500,
    /// The user sends messages faster than the server allows (`send_rate`).
    MessageSendTrafficLimit = 502,
    /// The service is not enabled (group read acks off, or `requireReadAck` is false).
    ServiceNotEnabled = 505,
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
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::GeneralError,
        ErrorCode::ExceedServiceLimit,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::InvalidParam,
        ErrorCode::UserAlreadyLogin,
        ErrorCode::UserNotLogin,
        ErrorCode::UserAuthenticationFailed,
        ErrorCode::UserLoginAnotherDevice,
        ErrorCode::UserLoginTooManyDevices,
        ErrorCode::ServerNotReachable,
        ErrorCode::ServerBusy,
        ErrorCode::MessageInvalid,
        ErrorCode::MessageSendTrafficLimit,
        ErrorCode::ServiceNotEnabled,
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
    /// A message that does not fit the operation (your own, a chat-room message, ...): 500, the
    /// SDK's MESSAGE_INVALID (the SDK has no "wrong type" code; its 501 means illegal content).
    pub fn wrong_type(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::MessageInvalid, d)
    }
    pub fn general(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::GeneralError, d)
    }
}

pub type ChatResult<T> = Result<T, ChatError>;
