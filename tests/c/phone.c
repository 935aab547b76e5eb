/*
 * The phone-readiness calls (issue 14) against a real server that requires TLS: a log sink,
 * the TLS options (the throwaway CA's PEM), the lifecycle events (database opened, offline
 * sync start/finish, connected), isConnected/isLoggedIn/isDatabaseOpened, a short-lived token's
 * will-expire event and renewToken on the live session, and their misuse.
 *
 * Extra environment: RCPT_TEST_CA_PEM (path of the CA certificate), RCPT_TEST_SHORT_TOKEN_bob
 * (a token that expires a few seconds after the program starts).
 */
#include <stdatomic.h>

#include "harness.h"

static atomic_int g_log_records;
static atomic_int g_log_above_info;

static void count_logs(void *user_data, rcpt_log_level level, const char *target, const char *message) {
    (void)user_data;
    if (target == NULL || message == NULL) return;
    atomic_fetch_add(&g_log_records, 1);
    if (level > RCPT_LOG_INFO) atomic_fetch_add(&g_log_above_info, 1);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    char *buf = calloc(1, 65536);
    size_t n = buf ? fread(buf, 1, 65535, f) : 0;
    fclose(f);
    if (buf != NULL) buf[n] = '\0';
    return buf;
}

/* A client that trusts the CA in `ca_pem`, talking TLS to the test server. */
static void tls_peer_init(peer *p, const char *label, const char *ca_pem) {
    rcpt_options *o = peer_options(label);
    CHECK_RC(rcpt_options_set_tls_ca_pem(o, ca_pem), RCPT_OK);
    peer_start(p, label, o);
}

static void expect_event(peer *p, rcpt_event_type kind) {
    rcpt_event *ev = WAIT_EVENT(p, .kind = kind);
    CHECK(ev != NULL);
    rcpt_event_free(ev);
}

int main(void) {
    CHECK_RC(rcpt_set_log_sink(count_logs, NULL, RCPT_LOG_INFO), RCPT_OK);
    char *ca_pem = read_file(env_or_die("RCPT_TEST_CA_PEM"));
    REQUIRE(ca_pem != NULL && strstr(ca_pem, "BEGIN CERTIFICATE") != NULL);

    /* Misuse of the TLS options. */
    rcpt_options *o = rcpt_options_new();
    REQUIRE(o != NULL);
    CHECK_RC(rcpt_options_set_tls_ca_pem(o, "not a certificate"), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_options_set_tls_ca_pem(o, NULL), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_options_set_tls_pinned_cert_pem(NULL, ca_pem), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_options_set_use_tls(o, true), RCPT_OK);
    CHECK_RC(rcpt_options_set_allow_plaintext(o, false), RCPT_OK);
    rcpt_options_free(o);

    peer alice, bob;
    tls_peer_init(&alice, "alice", ca_pem);
    tls_peer_init(&bob, "bob", ca_pem);
    CHECK(!rcpt_client_is_logged_in(alice.c) && !rcpt_client_is_database_opened(alice.c) && !rcpt_client_is_connected(alice.c));
    uint64_t req = 7;
    CHECK_RC(rcpt_client_renew_token(alice.c, token_for("alice"), &req), RCPT_USER_NOT_LOGIN);
    CHECK_RC(rcpt_client_renew_token(NULL, token_for("alice"), &req), RCPT_NULL_ARGUMENT);
    CHECK(!rcpt_client_is_connected(NULL) && !rcpt_client_is_logged_in(NULL) && !rcpt_client_is_database_opened(NULL));

    /* bob logs in first: his token is short-lived (its clock runs from the program's start). */
    CHECK_RC(rcpt_client_login(bob.c, "bob", env_or_die("RCPT_TEST_SHORT_TOKEN_bob")), RCPT_OK);

    /* The lifecycle of a login, in order, over TLS. */
    CHECK_RC(rcpt_client_login(alice.c, "alice", token_for("alice")), RCPT_OK);
    rcpt_event *ev = WAIT_EVENT(&alice, .kind = RCPT_EVENT_DATABASE_OPENED);
    CHECK(ev != NULL && strcmp(rcpt_event_from(ev), "alice") == 0);
    rcpt_event_free(ev);
    CHECK(rcpt_client_is_logged_in(alice.c) && rcpt_client_is_database_opened(alice.c));
    expect_event(&alice, RCPT_EVENT_OFFLINE_SYNC_START);
    expect_event(&alice, RCPT_EVENT_OFFLINE_SYNC_FINISH);
    expect_event(&alice, RCPT_EVENT_CONNECTED);
    CHECK(rcpt_client_is_connected(alice.c));

    /* bob's token is short-lived: will-expire comes, the renewal is accepted on the live session. */
    expect_event(&bob, RCPT_EVENT_CONNECTED);
    uint64_t send_req = 0;
    CHECK_RC(rcpt_client_send_text(alice.c, "bob", RCPT_CHAT_TYPE_CHAT, "over tls", false, &send_req, NULL), RCPT_OK);
    rcpt_event_free(WAIT_DONE(&alice, send_req, RCPT_OK));
    expect_event(&bob, RCPT_EVENT_MESSAGES_RECEIVED);
    expect_event(&bob, RCPT_EVENT_TOKEN_WILL_EXPIRE);
    CHECK_RC(rcpt_client_renew_token(bob.c, "", &req), RCPT_INVALID_PARAM);
    req = 0;
    CHECK_RC(rcpt_client_renew_token(bob.c, token_for("bob"), &req), RCPT_OK);
    CHECK(req != 0);
    rcpt_event_free(WAIT_DONE(&bob, req, RCPT_OK));
    CHECK(rcpt_client_is_connected(bob.c));

    /* Logs arrived, none above info; a cleared sink gets nothing more. */
    CHECK(atomic_load(&g_log_records) > 0);
    CHECK(atomic_load(&g_log_above_info) == 0);
    CHECK_RC(rcpt_set_log_sink(NULL, NULL, RCPT_LOG_INFO), RCPT_OK);
    int before = atomic_load(&g_log_records);
    CHECK_RC(rcpt_client_logout(alice.c), RCPT_OK);
    CHECK(atomic_load(&g_log_records) == before);
    CHECK(!rcpt_client_is_logged_in(alice.c) && !rcpt_client_is_database_opened(alice.c));

    peer_free(&alice);
    peer_free(&bob);
    free(ca_pem);
    return finish("phone");
}
