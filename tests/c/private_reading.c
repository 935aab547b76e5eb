/* Private reading through the C ABI against a real server: the option, the per-call mode of
 * each read-ack call, require_read_ack false winning, and the bad input of each new call. */
#include "harness.h"

/* Sends a text and waits for the server's acceptance; copies the server id into `id`. */
static void send_and_wait(peer *p, const char *to, uint32_t chat_type, const char *text, bool need_group_ack, char *id, size_t id_len) {
    uint64_t req = 0;
    rcpt_message *queued = NULL;
    CHECK_RC(rcpt_client_send_text(p->c, to, chat_type, text, need_group_ack, &req, &queued), RCPT_OK);
    rcpt_message_free(queued);
    rcpt_event *ev = WAIT_DONE(p, req, RCPT_OK);
    REQUIRE(ev != NULL && rcpt_event_message_count(ev) == 1);
    snprintf(id, id_len, "%s", rcpt_message_id(rcpt_event_message_at(ev, 0)));
    rcpt_event_free(ev);
}

/* The client's copy of message `id`: is it read by the receiver (sender side: the peer's
 * receipt came back; receiver side: this user sent it)? */
static bool receiver_read(peer *p, const char *id) {
    rcpt_message *m = NULL;
    CHECK_RC(rcpt_client_get_message(p->c, id, &m), RCPT_OK);
    bool read = m != NULL && rcpt_message_is_receiver_read(m);
    rcpt_message_free(m);
    return read;
}

int main(void) {
    peer alice, bob, bob2, carol;
    rcpt_event *ev;
    uint64_t req;

    peer_init(&alice, "alice1", false);
    rcpt_options *o = peer_options("bob1");
    CHECK_RC(rcpt_options_set_private_read_receipts(o, true), RCPT_OK);
    peer_start(&bob, "bob1", o);
    peer_init(&bob2, "bob2", false);
    o = peer_options("carol1");
    CHECK_RC(rcpt_options_set_require_read_ack(o, false), RCPT_OK);
    CHECK_RC(rcpt_options_set_private_read_receipts(o, true), RCPT_OK);
    peer_start(&carol, "carol1", o);
    peer_login(&alice, "alice");
    peer_login(&bob, "bob");
    peer_login(&bob2, "bob");
    peer_login(&carol, "carol");

    /* 1. The option: bob's ack is private. His other device follows, alice hears nothing. */
    char m1[64], m2[64], m3[64];
    send_and_wait(&alice, "bob", RCPT_CHAT_TYPE_CHAT, "one", false, m1, sizeof m1);
    send_and_wait(&alice, "bob", RCPT_CHAT_TYPE_CHAT, "two", false, m2, sizeof m2);
    send_and_wait(&alice, "bob", RCPT_CHAT_TYPE_CHAT, "three", false, m3, sizeof m3);
    CHECK(wait_unread(&bob, "alice", RCPT_CHAT_TYPE_CHAT, 3) == 3);
    CHECK(wait_unread(&bob2, "alice", RCPT_CHAT_TYPE_CHAT, 3) == 3);
    CHECK_RC(rcpt_client_ack_message_read(bob.c, m1, &req), RCPT_OK);
    CHECK(req != 0);
    rcpt_event_free(WAIT_DONE(&bob, req, RCPT_OK));
    CHECK(wait_unread(&bob, "alice", RCPT_CHAT_TYPE_CHAT, 2) == 2);
    CHECK(wait_unread(&bob2, "alice", RCPT_CHAT_TYPE_CHAT, 2) == 2);
    CHECK(!receiver_read(&bob, m1)); /* no receipt went out */
    /* Again, private: already read, nothing sent. */
    CHECK_RC(rcpt_client_ack_message_read_mode(bob.c, m1, RCPT_READ_ACK_PRIVATE, &req), RCPT_OK);
    CHECK(req == 0);

    /* 2. Per call, public: alice hears of m2; m1 (read privately) is still not read for her. */
    CHECK_RC(rcpt_client_ack_message_read_mode(bob.c, m2, RCPT_READ_ACK_PUBLIC, &req), RCPT_OK);
    rcpt_event_free(WAIT_DONE(&bob, req, RCPT_OK));
    rcpt_event_free(WAIT_EVENT(&alice, .kind = RCPT_EVENT_MESSAGES_READ, .msg_id = m2));
    CHECK(receiver_read(&alice, m2));
    CHECK(!receiver_read(&alice, m1));
    /* The mode switched off for m1: the sender is told now. */
    CHECK_RC(rcpt_client_ack_message_read_mode(bob.c, m1, RCPT_READ_ACK_PUBLIC, &req), RCPT_OK);
    CHECK(req != 0);
    rcpt_event_free(WAIT_DONE(&bob, req, RCPT_OK));
    rcpt_event_free(WAIT_EVENT(&alice, .kind = RCPT_EVENT_MESSAGES_READ, .msg_id = m1));
    CHECK(receiver_read(&alice, m1));

    /* 3. A private batch and a private conversation ack: unread drops, alice hears nothing of
     * m3 (checked after a later public ack of hers reached her: events come in order). */
    const char *batch[] = {m3};
    CHECK_RC(rcpt_client_ack_messages_read_mode(bob.c, "alice", batch, 1, RCPT_READ_ACK_DEFAULT, &req), RCPT_OK);
    ev = WAIT_DONE(&bob, req, RCPT_OK);
    REQUIRE(ev != NULL && rcpt_event_item_count(ev) == 1);
    CHECK(rcpt_event_item_error_code(ev, 0) == RCPT_OK);
    rcpt_event_free(ev);
    CHECK(wait_unread(&bob2, "alice", RCPT_CHAT_TYPE_CHAT, 0) == 0);
    CHECK_RC(rcpt_client_ack_conversation_read_mode(bob.c, "alice", RCPT_READ_ACK_PRIVATE, &req), RCPT_OK);
    CHECK(req == 0); /* nothing unread left */
    char m4[64];
    send_and_wait(&alice, "bob", RCPT_CHAT_TYPE_CHAT, "four", false, m4, sizeof m4);
    CHECK(wait_unread(&bob, "alice", RCPT_CHAT_TYPE_CHAT, 1) == 1);
    CHECK_RC(rcpt_client_ack_conversation_read_mode(bob.c, "alice", RCPT_READ_ACK_DEFAULT, &req), RCPT_OK);
    CHECK(req != 0);
    rcpt_event_free(WAIT_DONE(&bob, req, RCPT_OK));
    CHECK(wait_unread(&bob2, "alice", RCPT_CHAT_TYPE_CHAT, 0) == 0);
    CHECK_RC(rcpt_client_ack_message_read_mode(bob.c, m4, RCPT_READ_ACK_PUBLIC, &req), RCPT_OK);
    rcpt_event_free(WAIT_EVENT(&alice, .kind = RCPT_EVENT_MESSAGES_READ, .msg_id = m4));
    CHECK(!receiver_read(&alice, m3));

    /* 4. require_read_ack false wins over private reading: 505, nothing sent. */
    char c1[64];
    send_and_wait(&alice, "carol", RCPT_CHAT_TYPE_CHAT, "hi carol", false, c1, sizeof c1);
    CHECK(wait_unread(&carol, "alice", RCPT_CHAT_TYPE_CHAT, 1) == 1);
    req = 7;
    CHECK_RC(rcpt_client_ack_message_read_mode(carol.c, c1, RCPT_READ_ACK_PRIVATE, &req), RCPT_SERVICE_NOT_ENABLED);
    CHECK(req == 0);
    CHECK_RC(rcpt_client_ack_message_read(carol.c, c1, &req), RCPT_SERVICE_NOT_ENABLED);
    CHECK_RC(rcpt_client_ack_conversation_read_mode(carol.c, "alice", RCPT_READ_ACK_PRIVATE, &req), RCPT_SERVICE_NOT_ENABLED);
    CHECK(wait_unread(&carol, "alice", RCPT_CHAT_TYPE_CHAT, 1) == 1);

    /* 5. Bad input: nothing is sent, *out_req stays 0. */
    char bad_utf8[] = {(char)0xff, (char)0xfe, 0};
    const char *with_null[] = {m1, NULL};
    CHECK_RC(rcpt_options_set_private_read_receipts(NULL, true), RCPT_NULL_ARGUMENT);
    req = 7;
    CHECK_RC(rcpt_client_ack_message_read_mode(bob.c, m1, 3, &req), RCPT_INVALID_PARAM);
    CHECK(req == 0);
    CHECK_RC(rcpt_client_ack_message_read_mode(bob.c, m1, UINT32_MAX, &req), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_ack_message_read_mode(NULL, m1, RCPT_READ_ACK_PRIVATE, &req), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_ack_message_read_mode(bob.c, NULL, RCPT_READ_ACK_PRIVATE, &req), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_ack_message_read_mode(bob.c, bad_utf8, RCPT_READ_ACK_PRIVATE, &req), RCPT_INVALID_UTF8);
    CHECK_RC(rcpt_client_ack_message_read_mode(bob.c, m1, RCPT_READ_ACK_PRIVATE, NULL), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_ack_message_read_mode(bob.c, "12abc", RCPT_READ_ACK_PRIVATE, &req), RCPT_MESSAGE_INVALID);
    CHECK_RC(rcpt_client_ack_message_read_mode(bob.c, "999999", RCPT_READ_ACK_PRIVATE, &req), RCPT_MESSAGE_INVALID);
    CHECK_RC(rcpt_client_ack_message_read_mode(alice.c, m1, RCPT_READ_ACK_PRIVATE, &req), RCPT_MESSAGE_INVALID); /* own */
    CHECK_RC(rcpt_client_ack_conversation_read_mode(bob.c, "alice", 9, &req), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_ack_conversation_read_mode(bob.c, NULL, RCPT_READ_ACK_PRIVATE, &req), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_ack_conversation_read_mode(bob.c, bad_utf8, RCPT_READ_ACK_PRIVATE, &req), RCPT_INVALID_UTF8);
    CHECK_RC(rcpt_client_ack_group_message_read_mode(bob.c, m1, NULL, 5, &req), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_ack_group_message_read_mode(bob.c, m1, bad_utf8, RCPT_READ_ACK_PRIVATE, &req), RCPT_INVALID_UTF8);
    CHECK_RC(rcpt_client_ack_group_message_read_mode(bob.c, m1, NULL, RCPT_READ_ACK_PRIVATE, &req), RCPT_MESSAGE_INVALID); /* 1:1 */
    CHECK_RC(rcpt_client_ack_messages_read_mode(bob.c, "alice", batch, 1, 4, &req), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_ack_messages_read_mode(bob.c, "alice", with_null, 2, RCPT_READ_ACK_PRIVATE, &req), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_ack_messages_read_mode(bob.c, "alice", batch, 0, RCPT_READ_ACK_PRIVATE, &req), RCPT_INVALID_PARAM);
    CHECK(req == 0);

    peer_free(&alice);
    peer_free(&bob);
    peer_free(&bob2);
    peer_free(&carol);
    return finish("private_reading");
}
