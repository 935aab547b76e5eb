//! `rcpt_result`: what every fallible call returns.

use receipt_core::ErrorCode;

/// The outcome of a call. The values are stable: `RCPT_OK` is 0, the SDK's error codes keep
/// their numbers and names (`RCPT_` + the Easemob SDK's `ChatError` name; table: docs/errors.md),
/// and the C boundary's own failures are 1001 and up (they never reach ArkTS).
/// Whenever a call returns something other than `RCPT_OK`, `rcpt_last_error()` on the same
/// thread describes the failure.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum rcpt_result {
    /// Success.
    RCPT_OK = 0,
    /// Anything without a more precise code (an internal storage failure, for example).
    RCPT_GENERAL_ERROR = 1,
    /// A per-user quota of the server is used up (groups per user, or the request rate).
    RCPT_EXCEED_SERVICE_LIMIT = 4,
    /// The token is missing or malformed.
    RCPT_INVALID_TOKEN = 104,
    /// The token's signature is good but it has expired.
    RCPT_TOKEN_EXPIRED = 108,
    /// A parameter is out of range, empty or malformed.
    RCPT_INVALID_PARAM = 110,
    /// A user is already logged in on this client.
    RCPT_USER_ALREADY_LOGIN = 200,
    /// The call needs a logged-in user.
    RCPT_USER_NOT_LOGIN = 201,
    /// The server refused the token's signature (another user, another secret, forged).
    RCPT_USER_AUTHENTICATION_FAILED = 202,
    /// The same user logged in again on the same device: this session is over (no reconnect).
    RCPT_USER_LOGIN_ANOTHER_DEVICE = 206,
    /// The user already has the most devices online the server allows.
    RCPT_USER_LOGIN_TOO_MANY_DEVICES = 214,
    /// The server cannot be reached (or a query needs a connection that is down).
    RCPT_SERVER_NOT_REACHABLE = 300,
    /// The server is overloaded (its connection cap is reached).
    RCPT_SERVER_BUSY = 302,
    /// The message does not fit the call: unknown, not addressed to this user, sent by this user
    /// (acking your own message), or a chat-room message.
    RCPT_MESSAGE_INVALID = 500,
    /// The user sends messages faster than the server allows.
    RCPT_MESSAGE_SEND_TRAFFIC_LIMIT = 502,
    /// The service is off (group read acks disabled on the server, or require_read_ack false).
    RCPT_SERVICE_NOT_ENABLED = 505,
    /// The message is past the validity of the ack.
    RCPT_MESSAGE_EXPIRED = 506,
    /// The group does not exist.
    RCPT_GROUP_INVALID_ID = 600,
    /// This user is not a member of the group.
    RCPT_GROUP_NOT_JOINED = 602,
    /// This user's role in the group does not allow the call.
    RCPT_GROUP_PERMISSION_DENIED = 603,
    /// The group is at its member cap.
    RCPT_GROUP_MEMBERS_FULL = 604,
    /// A pointer argument that must not be NULL was NULL. Nothing was done.
    RCPT_NULL_ARGUMENT = 1001,
    /// A string argument was not valid UTF-8. Nothing was done.
    RCPT_INVALID_UTF8 = 1002,
    /// The library panicked (a bug); the call did not complete. Never unwinds into C.
    RCPT_PANIC = 1003,
}

impl From<ErrorCode> for rcpt_result {
    fn from(c: ErrorCode) -> Self {
        use rcpt_result::*;
        match c {
            ErrorCode::GeneralError => RCPT_GENERAL_ERROR,
            ErrorCode::ExceedServiceLimit => RCPT_EXCEED_SERVICE_LIMIT,
            ErrorCode::UserLoginAnotherDevice => RCPT_USER_LOGIN_ANOTHER_DEVICE,
            ErrorCode::MessageSendTrafficLimit => RCPT_MESSAGE_SEND_TRAFFIC_LIMIT,
            ErrorCode::InvalidToken => RCPT_INVALID_TOKEN,
            ErrorCode::TokenExpired => RCPT_TOKEN_EXPIRED,
            ErrorCode::InvalidParam => RCPT_INVALID_PARAM,
            ErrorCode::UserAlreadyLogin => RCPT_USER_ALREADY_LOGIN,
            ErrorCode::UserNotLogin => RCPT_USER_NOT_LOGIN,
            ErrorCode::UserAuthenticationFailed => RCPT_USER_AUTHENTICATION_FAILED,
            ErrorCode::UserLoginTooManyDevices => RCPT_USER_LOGIN_TOO_MANY_DEVICES,
            ErrorCode::ServerNotReachable => RCPT_SERVER_NOT_REACHABLE,
            ErrorCode::ServerBusy => RCPT_SERVER_BUSY,
            ErrorCode::MessageInvalid => RCPT_MESSAGE_INVALID,
            ErrorCode::ServiceNotEnabled => RCPT_SERVICE_NOT_ENABLED,
            ErrorCode::MessageExpired => RCPT_MESSAGE_EXPIRED,
            ErrorCode::GroupInvalidId => RCPT_GROUP_INVALID_ID,
            ErrorCode::GroupNotJoined => RCPT_GROUP_NOT_JOINED,
            ErrorCode::GroupPermissionDenied => RCPT_GROUP_PERMISSION_DENIED,
            ErrorCode::GroupMembersFull => RCPT_GROUP_MEMBERS_FULL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_codes_keep_their_numbers() {
        for c in ErrorCode::ALL {
            assert_eq!(rcpt_result::from(c) as u32, c.as_u32());
        }
        assert_eq!(rcpt_result::RCPT_OK as u32, 0);
        assert_eq!(rcpt_result::RCPT_NULL_ARGUMENT as u32, 1001);
        assert_eq!(rcpt_result::RCPT_INVALID_UTF8 as u32, 1002);
        assert_eq!(rcpt_result::RCPT_PANIC as u32, 1003);
    }
}
