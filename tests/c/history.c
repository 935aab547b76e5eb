/*
 * History through the C ABI against a real server: alice sends bob 25 messages; bob pages his
 * conversation with alice newest first (20, then the 5 older ones, then an empty page), reads
 * a message by id, acks the oldest one and sees its flags current in the next page, with a
 * 4-message cache (so the pages and the ack read from the store). Misuse of the history calls
 * fails cleanly. Run under valgrind: every list and message is freed.
 */
#include "harness.h"

#define N 25

int main(void) {
    peer alice, bob;
    char ids[N][32];
    rcpt_message_list *page = NULL;

    peer_init(&alice, "alice1", false);
    peer_init(&bob, "bob1", false);
    /* bob's client keeps 4 messages in memory: pages and acks read the rest from the store. That
     * needs a client made with these options, so bob's is made again. */
    rcpt_client_free(bob.c);
    {
        rcpt_options *o = peer_options("bob1");
        CHECK_RC(rcpt_options_set_message_cache(o, 0), RCPT_INVALID_PARAM);
        CHECK_RC(rcpt_options_set_message_cache(o, 4), RCPT_OK);
        CHECK_RC(rcpt_options_set_retention(o, 0, 0), RCPT_OK);
        CHECK_RC(rcpt_options_set_message_cache(NULL, 4), RCPT_NULL_ARGUMENT);
        peer_start(&bob, "bob1", o);
    }
    peer_login(&alice, "alice");
    for (int i = 0; i < N; i++) {
        char text[32];
        uint64_t req = 0;
        rcpt_message *queued = NULL;
        snprintf(text, sizeof text, "history %d", i);
        CHECK_RC(rcpt_client_send_text(alice.c, "bob", RCPT_CHAT_TYPE_CHAT, text, false, &req, &queued), RCPT_OK);
        rcpt_message_free(queued);
        rcpt_event *ev = WAIT_DONE(&alice, req, RCPT_OK);
        REQUIRE(ev != NULL && rcpt_event_message_count(ev) == 1);
        snprintf(ids[i], sizeof ids[i], "%s", rcpt_message_id(rcpt_event_message_at(ev, 0)));
        rcpt_event_free(ev);
    }

    peer_login(&bob, "bob");
    CHECK(wait_unread(&bob, "alice", RCPT_CHAT_TYPE_CHAT, N) == N);

    /* Page 1: the 20 newest, newest first, all unread. */
    CHECK_RC(rcpt_client_load_messages(bob.c, "alice", RCPT_CHAT_TYPE_CHAT, NULL, 20, &page), RCPT_OK);
    REQUIRE(page != NULL);
    CHECK(rcpt_message_list_count(page) == 20);
    for (size_t i = 0; i < rcpt_message_list_count(page); i++) {
        const rcpt_message *m = rcpt_message_list_at(page, i);
        CHECK(strcmp(rcpt_message_id(m), ids[N - 1 - i]) == 0);
        CHECK(rcpt_message_direction(m) == RCPT_DIRECTION_RECEIVE);
        CHECK(rcpt_message_is_unread(m));
        CHECK(!rcpt_message_is_receiver_read(m));
    }
    char last[32];
    snprintf(last, sizeof last, "%s", rcpt_message_id(rcpt_message_list_at(page, 19)));
    CHECK(rcpt_message_list_at(page, 20) == NULL); /* out of range: NULL, no crash */
    rcpt_message_list_free(page);

    /* Page 2 from the last id of page 1: the 5 oldest; "" starts from the newest like NULL. */
    CHECK_RC(rcpt_client_load_messages(bob.c, "alice", RCPT_CHAT_TYPE_CHAT, last, 20, &page), RCPT_OK);
    REQUIRE(page != NULL);
    CHECK(rcpt_message_list_count(page) == N - 20);
    CHECK(strcmp(rcpt_message_id(rcpt_message_list_at(page, N - 21)), ids[0]) == 0);
    CHECK(strcmp(rcpt_message_content(rcpt_message_list_at(page, N - 21)), "history 0") == 0);
    rcpt_message_list_free(page);
    CHECK_RC(rcpt_client_load_messages(bob.c, "alice", RCPT_CHAT_TYPE_CHAT, ids[0], 20, &page), RCPT_OK);
    CHECK(page != NULL && rcpt_message_list_count(page) == 0);
    rcpt_message_list_free(page);

    /* Ack the oldest message; its flags are current in the next read of the history. */
    uint64_t req = 0;
    CHECK_RC(rcpt_client_ack_message_read(bob.c, ids[0], &req), RCPT_OK);
    CHECK(req != 0);
    rcpt_event_free(WAIT_DONE(&bob, req, RCPT_OK));
    CHECK_RC(rcpt_client_load_messages(bob.c, "alice", RCPT_CHAT_TYPE_CHAT, ids[1], 1, &page), RCPT_OK);
    REQUIRE(page != NULL && rcpt_message_list_count(page) == 1);
    CHECK(rcpt_message_is_receiver_read(rcpt_message_list_at(page, 0)));
    CHECK(!rcpt_message_is_unread(rcpt_message_list_at(page, 0)));
    rcpt_message_list_free(page);
    rcpt_message *owned = NULL;
    CHECK_RC(rcpt_client_get_message(bob.c, ids[0], &owned), RCPT_OK);
    CHECK(owned != NULL && rcpt_message_is_receiver_read(owned));
    rcpt_message_free(owned);
    CHECK(wait_unread(&bob, "alice", RCPT_CHAT_TYPE_CHAT, N - 1) == N - 1);

    /* The cache of 4 is the one in use: alice's client (default cache) holds all N it sent. */
    uint32_t cached = 99;
    CHECK_RC(rcpt_client_cached_message_count(bob.c, &cached), RCPT_OK);
    CHECK(cached <= 4);
    CHECK_RC(rcpt_client_cached_message_count(alice.c, &cached), RCPT_OK);
    CHECK(cached == N);
    CHECK_RC(rcpt_client_cached_message_count(bob.c, NULL), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_cached_message_count(NULL, &cached), RCPT_NULL_ARGUMENT);

    /* An unknown conversation is an empty page. */
    CHECK_RC(rcpt_client_load_messages(bob.c, "nobody", RCPT_CHAT_TYPE_CHAT, "", 20, &page), RCPT_OK);
    CHECK(page != NULL && rcpt_message_list_count(page) == 0);
    rcpt_message_list_free(page);

    /* Misuse fails cleanly and leaves *out NULL. */
    page = (rcpt_message_list *)&req; /* garbage the call must overwrite */
    CHECK_RC(rcpt_client_load_messages(bob.c, "alice", RCPT_CHAT_TYPE_CHAT, NULL, 0, &page), RCPT_INVALID_PARAM);
    CHECK(page == NULL);
    CHECK_RC(rcpt_client_load_messages(bob.c, "alice", RCPT_CHAT_TYPE_CHAT, NULL, RCPT_MAX_HISTORY_PAGE + 1, &page), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_load_messages(bob.c, "alice", RCPT_CHAT_TYPE_CHAT, "x1", 20, &page), RCPT_MESSAGE_INVALID);
    CHECK_RC(rcpt_client_load_messages(bob.c, "alice", 7, NULL, 20, &page), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_load_messages(bob.c, NULL, RCPT_CHAT_TYPE_CHAT, NULL, 20, &page), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_load_messages(bob.c, "alice", RCPT_CHAT_TYPE_CHAT, NULL, 20, NULL), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_load_messages(NULL, "alice", RCPT_CHAT_TYPE_CHAT, NULL, 20, &page), RCPT_NULL_ARGUMENT);
    CHECK(rcpt_message_list_count(NULL) == 0);
    CHECK(rcpt_message_list_at(NULL, 0) == NULL);
    rcpt_message_list_free(NULL);

    /* Logged out: the history is the logged-in user's. */
    CHECK_RC(rcpt_client_logout(bob.c), RCPT_OK);
    CHECK_RC(rcpt_client_load_messages(bob.c, "alice", RCPT_CHAT_TYPE_CHAT, NULL, 20, &page), RCPT_USER_NOT_LOGIN);

    peer_free(&alice);
    peer_free(&bob);
    return finish("history");
}
