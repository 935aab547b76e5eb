/*
 * Misuse of the C ABI: NULL for every pointer parameter of a representative set of functions,
 * invalid UTF-8, calls before login, *_free(NULL), a freed-then-NULL handle, unknown message
 * ids, acking your own message, bad tokens, an unreachable server, and rcpt_last_error after
 * each failure. Every failing call must return its code and change nothing.
 */
#include "harness.h"

#include <stdatomic.h>

static const char BAD_UTF8[] = {(char)0xC3, (char)0x28, 0}; /* a truncated 2-byte sequence */

/* The call failed with `want` and rcpt_last_error() says something. */
#define CHECK_FAILS(expr, want)                       \
    do {                                              \
        CHECK_RC(expr, want);                         \
        CHECK(rcpt_last_error() != NULL);             \
        CHECK(rcpt_last_error()[0] != '\0');          \
    } while (0)

static void null_and_utf8_on_options(const char *dir) {
    rcpt_options *o = rcpt_options_new();
    REQUIRE(o != NULL);
    CHECK_FAILS(rcpt_options_set_data_dir(NULL, dir), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_options_set_data_dir(o, NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_options_set_data_dir(o, BAD_UTF8), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_options_set_data_dir(o, ""), RCPT_INVALID_PARAM);
    CHECK_FAILS(rcpt_options_set_server(NULL, "127.0.0.1", 1), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_options_set_server(o, NULL, 1), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_options_set_server(o, BAD_UTF8, 1), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_options_set_server(o, "127.0.0.1", 0), RCPT_INVALID_PARAM);
    CHECK_FAILS(rcpt_options_set_device_id(NULL, "d"), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_options_set_device_id(o, NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_options_set_device_id(o, BAD_UTF8), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_options_set_device_id(o, ""), RCPT_INVALID_PARAM);
    CHECK_FAILS(rcpt_options_set_require_read_ack(NULL, true), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_options_set_require_delivery_ack(NULL, true), RCPT_NULL_ARGUMENT);

    /* No data dir yet: the client cannot be created. */
    rcpt_client *c = (rcpt_client *)(uintptr_t)1; /* must be overwritten with NULL */
    CHECK_FAILS(rcpt_client_new(o, &c), RCPT_INVALID_PARAM);
    CHECK(c == NULL);
    CHECK_FAILS(rcpt_client_new(NULL, &c), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_new(o, NULL), RCPT_NULL_ARGUMENT);
    rcpt_options_free(o);
}

static void accessors_on_null(void) {
    CHECK(rcpt_event_kind(NULL) == RCPT_EVENT_NONE);
    CHECK(rcpt_event_error_code(NULL) == RCPT_NULL_ARGUMENT);
    CHECK(rcpt_event_message_count(NULL) == 0);
    CHECK(rcpt_event_message_at(NULL, 0) == NULL);
    CHECK(rcpt_event_ack_at(NULL, 0) == NULL);
    CHECK(rcpt_event_cursor(NULL) == NULL);
    CHECK(rcpt_event_from(NULL) == NULL);
    CHECK(rcpt_message_id(NULL) == NULL);
    CHECK(rcpt_message_content(NULL) == NULL);
    CHECK(rcpt_message_is_unread(NULL) == false);
    CHECK(rcpt_message_group_ack_count(NULL) == 0);
    CHECK(rcpt_group_read_ack_from(NULL) == NULL);
    CHECK(rcpt_group_read_ack_count(NULL) == 0);
    CHECK(rcpt_last_error()[0] != '\0');
}

static void frees_of_null(void) {
    rcpt_options_free(NULL);
    rcpt_client_free(NULL);
    rcpt_message_free(NULL);
    rcpt_event_free(NULL);
    rcpt_string_free(NULL);
    CHECK(1);
}

/* Every pointer parameter of the client calls, NULL in turn; `c` is a live client. */
static void null_arguments(rcpt_client *c) {
    uint64_t req = 7;
    uint32_t n = 7;
    char *s = NULL;
    rcpt_message *m = NULL;
    rcpt_event *ev = NULL;
    const char *members[] = {"dave", NULL};

    CHECK_FAILS(rcpt_client_login(NULL, "u", "t"), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_login(c, NULL, "t"), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_login(c, "u", NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_logout(NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_current_user(NULL, &s), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_current_user(c, NULL), RCPT_NULL_ARGUMENT);

    CHECK_FAILS(rcpt_client_send_text(NULL, "bob", RCPT_CHAT_TYPE_CHAT, "hi", false, &req, &m), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_send_text(c, NULL, RCPT_CHAT_TYPE_CHAT, "hi", false, &req, &m), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_send_text(c, "bob", RCPT_CHAT_TYPE_CHAT, NULL, false, &req, &m), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_send_text(c, "bob", RCPT_CHAT_TYPE_CHAT, "hi", false, NULL, &m), RCPT_NULL_ARGUMENT);
    CHECK(m == NULL);

    CHECK_FAILS(rcpt_client_ack_message_read(NULL, "1", &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_ack_message_read(c, NULL, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_ack_message_read(c, "1", NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_ack_conversation_read(NULL, "bob", &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_ack_conversation_read(c, NULL, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_ack_conversation_read(c, "bob", NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_ack_group_message_read(NULL, "1", "x", &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_ack_group_message_read(c, NULL, "x", &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_ack_group_message_read(c, "1", "x", NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_fetch_group_read_acks(NULL, "1", 10, NULL, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_fetch_group_read_acks(c, NULL, 10, NULL, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_fetch_group_read_acks(c, "1", 10, NULL, NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_mark_message_read(NULL, "1", &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_mark_message_read(c, NULL, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_mark_message_read(c, "1", NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_mark_all_messages_read(NULL, "bob", RCPT_CHAT_TYPE_CHAT, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_mark_all_messages_read(c, NULL, RCPT_CHAT_TYPE_CHAT, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_mark_all_messages_read(c, "bob", RCPT_CHAT_TYPE_CHAT, NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_get_message(NULL, "1", &m), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_get_message(c, NULL, &m), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_get_message(c, "1", NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_unread_count(NULL, "bob", RCPT_CHAT_TYPE_CHAT, &n), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_unread_count(c, NULL, RCPT_CHAT_TYPE_CHAT, &n), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_unread_count(c, "bob", RCPT_CHAT_TYPE_CHAT, NULL), RCPT_NULL_ARGUMENT);

    CHECK_FAILS(rcpt_client_create_group(NULL, "g", members, 1, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_create_group(c, NULL, members, 1, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_create_group(c, "g", NULL, 1, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_create_group(c, "g", members, 2, &req), RCPT_NULL_ARGUMENT); /* members[1] */
    CHECK_FAILS(rcpt_client_create_group(c, "g", members, 1, NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_add_group_members(NULL, "g", members, 1, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_add_group_members(c, NULL, members, 1, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_add_group_members(c, "g", NULL, 1, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_remove_group_members(c, "g", members, 1, NULL), RCPT_NULL_ARGUMENT);

    CHECK_FAILS(rcpt_client_poll_event(NULL, &ev), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_poll_event(c, NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_set_event_callback(NULL, NULL, NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_set_wakeup(NULL, NULL, NULL), RCPT_NULL_ARGUMENT);
}

static void invalid_utf8(rcpt_client *c) {
    uint64_t req = 0;
    uint32_t n = 0;
    rcpt_message *m = NULL;
    const char *members[] = {"dave", BAD_UTF8};
    CHECK_FAILS(rcpt_client_login(c, BAD_UTF8, "t"), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_login(c, "mallory", BAD_UTF8), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_send_text(c, BAD_UTF8, RCPT_CHAT_TYPE_CHAT, "hi", false, &req, &m), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_send_text(c, "trent", RCPT_CHAT_TYPE_CHAT, BAD_UTF8, false, &req, &m), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_ack_message_read(c, BAD_UTF8, &req), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_ack_conversation_read(c, BAD_UTF8, &req), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_ack_group_message_read(c, "1", BAD_UTF8, &req), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_fetch_group_read_acks(c, "1", 10, BAD_UTF8, &req), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_get_message(c, BAD_UTF8, &m), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_unread_count(c, BAD_UTF8, RCPT_CHAT_TYPE_CHAT, &n), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_create_group(c, "g", members, 2, &req), RCPT_INVALID_UTF8);
    CHECK(m == NULL && req == 0);
}

static rcpt_client *new_client(const char *label, uint16_t port) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", env_or_die("RCPT_TEST_DIR"), label);
    rcpt_options *o = rcpt_options_new();
    REQUIRE(o != NULL);
    CHECK_RC(rcpt_options_set_data_dir(o, dir), RCPT_OK);
    CHECK_RC(rcpt_options_set_server(o, env_or_die("RCPT_TEST_HOST"), port), RCPT_OK);
    rcpt_client *c = NULL;
    CHECK_RC(rcpt_client_new(o, &c), RCPT_OK);
    rcpt_options_free(o);
    REQUIRE(c != NULL);
    return c;
}

/* Accessors and pointer parameters not covered above: every remaining exported function with
 * NULL for each pointer argument (the table walks include/receipt.h in order). */
static void remaining_nulls(rcpt_client *c) {
    uint64_t req = 0;
    const char *members[] = {"dave", NULL};
    CHECK(rcpt_event_request_id(NULL) == 0);
    CHECK(rcpt_event_error_message(NULL) == NULL || rcpt_event_error_message(NULL)[0] == '\0');
    CHECK(rcpt_event_ack_count(NULL) == 0);
    CHECK(rcpt_event_to(NULL) == NULL);
    CHECK(rcpt_event_conversation_id(NULL) == NULL);
    CHECK(rcpt_event_chat_type(NULL) == 0);
    CHECK(rcpt_event_unread(NULL) == 0);
    CHECK(rcpt_event_group_id(NULL) == NULL);
    CHECK(rcpt_group_read_ack_id(NULL) == NULL);
    CHECK(rcpt_group_read_ack_msg_id(NULL) == NULL);
    CHECK(rcpt_group_read_ack_content(NULL) == NULL);
    CHECK(rcpt_group_read_ack_timestamp(NULL) == 0);
    CHECK(rcpt_message_client_id(NULL) == NULL);
    CHECK(rcpt_message_from(NULL) == NULL);
    CHECK(rcpt_message_to(NULL) == NULL);
    CHECK(rcpt_message_chat_type(NULL) == 0);
    CHECK(rcpt_message_direction(NULL) == 0);
    CHECK(rcpt_message_timestamp(NULL) == 0);
    CHECK(rcpt_message_status(NULL) == 0);
    CHECK(rcpt_message_is_delivered(NULL) == false);
    CHECK(rcpt_message_is_receiver_read(NULL) == false);
    CHECK(rcpt_message_need_group_ack(NULL) == false);
    CHECK(rcpt_message_require_delivery_ack(NULL) == false);
    CHECK(rcpt_message_group_ack_sent(NULL) == false);
    CHECK_FAILS(rcpt_client_add_group_members(c, "g", members, 1, NULL), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_add_group_members(c, "g", members, 2, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_remove_group_members(NULL, "g", members, 1, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_remove_group_members(c, NULL, members, 1, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_remove_group_members(c, "g", NULL, 1, &req), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_remove_group_members(c, "g", members, 2, &req), RCPT_NULL_ARGUMENT);
    CHECK(rcpt_version() != NULL && rcpt_version()[0] != '\0');
    CHECK(req == 0);
}

/* Non-UTF-8 for the string arguments not covered by invalid_utf8(). */
static void remaining_utf8(rcpt_client *c) {
    uint64_t req = 0;
    const char *bad_members[] = {BAD_UTF8};
    const char *members[] = {"dave"};
    CHECK_FAILS(rcpt_client_ack_group_message_read(c, BAD_UTF8, NULL, &req), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_fetch_group_read_acks(c, BAD_UTF8, 10, NULL, &req), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_mark_message_read(c, BAD_UTF8, &req), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_mark_all_messages_read(c, BAD_UTF8, RCPT_CHAT_TYPE_CHAT, &req), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_create_group(c, BAD_UTF8, members, 1, &req), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_add_group_members(c, BAD_UTF8, members, 1, &req), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_add_group_members(c, "g", bad_members, 1, &req), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_remove_group_members(c, BAD_UTF8, members, 1, &req), RCPT_INVALID_UTF8);
    CHECK_FAILS(rcpt_client_remove_group_members(c, "g", bad_members, 1, &req), RCPT_INVALID_UTF8);
    CHECK(req == 0);
}

/* The event callback calls back into the library: rcpt_client_* fails with GENERAL_ERROR (no
 * deadlock), the accessors and rcpt_last_error work. */
typedef struct {
    rcpt_client *c;
    _Atomic int calls;
    _Atomic int reentry_rc;
    _Atomic int poll_rc;
    _Atomic int kind_ok;
    _Atomic int last_error_ok;
} reentry;

static void reentrant_callback(void *ud, const rcpt_event *ev) {
    reentry *r = (reentry *)ud;
    uint64_t req = 0;
    uint32_t n = 0;
    rcpt_event *polled = NULL;
    r->reentry_rc = (int)rcpt_client_unread_count(r->c, "alice", RCPT_CHAT_TYPE_CHAT, &n);
    (void)rcpt_client_ack_message_read(r->c, "1", &req);
    r->poll_rc = (int)rcpt_client_poll_event(r->c, &polled);
    if (polled != NULL) rcpt_event_free(polled);
    r->last_error_ok = strstr(rcpt_last_error(), "callback") != NULL;
    r->kind_ok = rcpt_event_kind(ev) != RCPT_EVENT_NONE;
    r->calls++;
}

static void callbacks_calling_back(uint16_t port) {
    rcpt_client *c = new_client("reentrant", port);
    static reentry r;
    r.c = c;
    CHECK_RC(rcpt_client_set_event_callback(c, reentrant_callback, &r), RCPT_OK);
    CHECK_RC(rcpt_client_login(c, "carol", token_for("carol")), RCPT_OK);
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms();
    while (r.calls == 0 && now_ms() < deadline) sleep_ms(10);
    CHECK(r.calls > 0);
    CHECK(r.reentry_rc == RCPT_GENERAL_ERROR);
    CHECK(r.poll_rc == RCPT_GENERAL_ERROR);
    CHECK(r.kind_ok);
    CHECK(r.last_error_ok);
    /* The library still works from the host's thread afterwards. */
    CHECK_RC(rcpt_client_set_event_callback(c, NULL, NULL), RCPT_OK);
    uint32_t n = 99;
    CHECK_RC(rcpt_client_unread_count(c, "alice", RCPT_CHAT_TYPE_CHAT, &n), RCPT_OK);
    CHECK(n == 0);
    rcpt_client_free(c);
}

/* After logout: requests say USER_NOT_LOGIN and change nothing; logging in again works. */
static void calls_after_logout(uint16_t port) {
    rcpt_client *c = new_client("after-logout", port);
    peer p;
    memset(&p, 0, sizeof p);
    p.name = "erin";
    p.c = c;
    uint64_t req = 0;
    uint32_t n = 0;
    rcpt_message *m = NULL;
    char *s = NULL;
    const char *members[] = {"dave"};
    peer_login(&p, "erin");
    CHECK_RC(rcpt_client_logout(c), RCPT_OK);
    CHECK_FAILS(rcpt_client_logout(c), RCPT_USER_NOT_LOGIN);
    CHECK_FAILS(rcpt_client_send_text(c, "dave", RCPT_CHAT_TYPE_CHAT, "hi", false, &req, &m), RCPT_USER_NOT_LOGIN);
    CHECK_FAILS(rcpt_client_ack_message_read(c, "1", &req), RCPT_USER_NOT_LOGIN);
    CHECK_FAILS(rcpt_client_ack_conversation_read(c, "dave", &req), RCPT_USER_NOT_LOGIN);
    CHECK_FAILS(rcpt_client_ack_group_message_read(c, "1", NULL, &req), RCPT_USER_NOT_LOGIN);
    CHECK_FAILS(rcpt_client_mark_message_read(c, "1", &req), RCPT_USER_NOT_LOGIN);
    CHECK_FAILS(rcpt_client_mark_all_messages_read(c, "dave", RCPT_CHAT_TYPE_CHAT, &req), RCPT_USER_NOT_LOGIN);
    CHECK_FAILS(rcpt_client_unread_count(c, "dave", RCPT_CHAT_TYPE_CHAT, &n), RCPT_USER_NOT_LOGIN);
    CHECK_FAILS(rcpt_client_create_group(c, "g", members, 1, &req), RCPT_USER_NOT_LOGIN);
    CHECK(req == 0 && m == NULL);
    CHECK_RC(rcpt_client_current_user(c, &s), RCPT_OK);
    CHECK(s == NULL);
    peer_login(&p, "erin");
    CHECK_RC(rcpt_client_current_user(c, &s), RCPT_OK);
    CHECK(s != NULL && strcmp(s, "erin") == 0);
    rcpt_string_free(s);
    peer_free(&p);
}

int main(void) {
    uint16_t port = (uint16_t)atoi(env_or_die("RCPT_TEST_PORT"));
    uint16_t dead_port = (uint16_t)atoi(env_or_die("RCPT_TEST_DEAD_PORT"));
    uint64_t req = 0;
    uint32_t n = 0;
    rcpt_message *m = NULL;
    rcpt_event *ev = NULL;
    char *s = NULL;

    CHECK(rcpt_last_error() != NULL);
    null_and_utf8_on_options(env_or_die("RCPT_TEST_DIR"));
    accessors_on_null();
    frees_of_null();

    /* A client before login. */
    rcpt_client *c = new_client("mallory", port);
    null_arguments(c);
    remaining_nulls(c);
    invalid_utf8(c);
    remaining_utf8(c);
    CHECK_FAILS(rcpt_client_ack_message_read(c, "1", &req), RCPT_USER_NOT_LOGIN);
    CHECK_FAILS(rcpt_client_ack_conversation_read(c, "trent", &req), RCPT_USER_NOT_LOGIN);
    CHECK_FAILS(rcpt_client_ack_group_message_read(c, "1", NULL, &req), RCPT_USER_NOT_LOGIN);
    CHECK_FAILS(rcpt_client_send_text(c, "trent", RCPT_CHAT_TYPE_CHAT, "hi", false, &req, &m), RCPT_USER_NOT_LOGIN);
    CHECK_FAILS(rcpt_client_unread_count(c, "trent", RCPT_CHAT_TYPE_CHAT, &n), RCPT_USER_NOT_LOGIN);
    CHECK_FAILS(rcpt_client_logout(c), RCPT_USER_NOT_LOGIN);
    CHECK_RC(rcpt_client_current_user(c, &s), RCPT_OK);
    CHECK(s == NULL);
    CHECK_RC(rcpt_client_poll_event(c, &ev), RCPT_OK);
    CHECK(ev == NULL);
    CHECK_FAILS(rcpt_client_login(c, "", "t"), RCPT_INVALID_PARAM);
    CHECK_FAILS(rcpt_client_login(c, "mallory", ""), RCPT_INVALID_PARAM);

    /* A refused token (trent's, a good signature for another user): LOGIN_FAILED with 202. */
    peer p;
    memset(&p, 0, sizeof p);
    p.name = "mallory";
    p.c = c;
    CHECK_RC(rcpt_client_login(c, "mallory", token_for("trent")), RCPT_OK);
    ev = WAIT_EVENT(&p, .kind = RCPT_EVENT_LOGIN_FAILED);
    CHECK(ev != NULL && rcpt_event_error_code(ev) == RCPT_USER_AUTHENTICATION_FAILED);
    CHECK(ev != NULL && rcpt_event_error_message(ev)[0] != '\0');
    rcpt_event_free(ev);

    /* Logged in for real (the failed session is replaced). */
    CHECK_RC(rcpt_client_login(c, "mallory", token_for("mallory")), RCPT_OK);
    ev = WAIT_EVENT(&p, .kind = RCPT_EVENT_CONNECTED);
    CHECK(ev != NULL);
    rcpt_event_free(ev);
    CHECK_FAILS(rcpt_client_login(c, "mallory", token_for("mallory")), RCPT_USER_ALREADY_LOGIN);

    /* Unknown message ids. */
    CHECK_FAILS(rcpt_client_ack_message_read(c, "999999", &req), RCPT_MESSAGE_INVALID);
    CHECK_FAILS(rcpt_client_ack_message_read(c, "not-a-number", &req), RCPT_MESSAGE_INVALID);
    CHECK_FAILS(rcpt_client_ack_message_read(c, "", &req), RCPT_INVALID_PARAM);
    CHECK_FAILS(rcpt_client_ack_group_message_read(c, "999999", NULL, &req), RCPT_MESSAGE_INVALID);
    CHECK_FAILS(rcpt_client_mark_message_read(c, "999999", &req), RCPT_MESSAGE_INVALID);
    m = (rcpt_message *)(uintptr_t)1;
    CHECK_FAILS(rcpt_client_get_message(c, "999999", &m), RCPT_MESSAGE_INVALID);
    CHECK(m == NULL);
    CHECK_FAILS(rcpt_client_ack_conversation_read(c, "nobody", &req), RCPT_INVALID_PARAM);
    CHECK(req == 0);

    /* Out-of-range values. */
    CHECK_FAILS(rcpt_client_send_text(c, "trent", 7, "hi", false, &req, NULL), RCPT_INVALID_PARAM);
    CHECK_FAILS(rcpt_client_send_text(c, "mallory", RCPT_CHAT_TYPE_CHAT, "me", false, &req, NULL), RCPT_INVALID_PARAM);
    CHECK_FAILS(rcpt_client_unread_count(c, "trent", 3, &n), RCPT_INVALID_PARAM);
    CHECK_FAILS(rcpt_client_fetch_group_read_acks(c, "1", 0, NULL, &req), RCPT_INVALID_PARAM);
    CHECK_FAILS(rcpt_client_fetch_group_read_acks(c, "1", 101, NULL, &req), RCPT_INVALID_PARAM);
    CHECK_FAILS(rcpt_client_fetch_group_read_acks(c, "1", 10, "cursor?", &req), RCPT_INVALID_PARAM);

    /* Acking your own message: 500 MESSAGE_INVALID. */
    CHECK_RC(rcpt_client_send_text(c, "trent", RCPT_CHAT_TYPE_CHAT, "mine", false, &req, NULL), RCPT_OK);
    ev = WAIT_DONE(&p, req, RCPT_OK);
    REQUIRE(ev != NULL && rcpt_event_message_count(ev) == 1);
    char own[64];
    snprintf(own, sizeof own, "%s", rcpt_message_id(rcpt_event_message_at(ev, 0)));
    CHECK(rcpt_event_message_at(ev, 1) == NULL);
    rcpt_event_free(ev);
    CHECK_FAILS(rcpt_client_ack_message_read(c, own, &req), RCPT_MESSAGE_INVALID);
    CHECK(strstr(rcpt_last_error(), "sent") != NULL);
    CHECK_FAILS(rcpt_client_mark_message_read(c, own, &req), RCPT_MESSAGE_INVALID);
    CHECK_FAILS(rcpt_client_ack_group_message_read(c, own, NULL, &req), RCPT_MESSAGE_INVALID);
    CHECK_RC(rcpt_client_get_message(c, own, &m), RCPT_OK);
    CHECK(m != NULL && rcpt_message_direction(m) == RCPT_DIRECTION_SEND);
    rcpt_message_free(m);

    /* Free, then NULL: the handle is refused, not used. */
    for (size_t i = 0; i < p.n; i++) rcpt_event_free(p.backlog[i]);
    p.n = 0;
    rcpt_client_free(c);
    c = NULL;
    CHECK_FAILS(rcpt_client_login(c, "mallory", token_for("mallory")), RCPT_NULL_ARGUMENT);
    CHECK_FAILS(rcpt_client_poll_event(c, &ev), RCPT_NULL_ARGUMENT);
    rcpt_client_free(c);

    /* An unreachable server: LOGIN_FAILED with 300, then queries say 300 too. */
    c = new_client("trent", dead_port);
    p.name = "trent";
    p.c = c;
    CHECK_RC(rcpt_client_login(c, "trent", token_for("trent")), RCPT_OK);
    ev = WAIT_EVENT(&p, .kind = RCPT_EVENT_LOGIN_FAILED);
    CHECK(ev != NULL && rcpt_event_error_code(ev) == RCPT_SERVER_NOT_REACHABLE);
    rcpt_event_free(ev);
    CHECK_FAILS(rcpt_client_fetch_group_read_acks(c, "1", 10, NULL, &req), RCPT_SERVER_NOT_REACHABLE);
    for (size_t i = 0; i < p.n; i++) rcpt_event_free(p.backlog[i]);
    p.n = 0;
    rcpt_client_free(c);

    calls_after_logout(port);
    callbacks_calling_back(port);

    return finish("misuse");
}
