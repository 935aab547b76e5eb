/* Who has not read a group message, read counts of a screen of group messages, and 1:1 read
 * acks in one trip, through the C ABI against a real server; then the bad input of each call. */
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

int main(void) {
    peer alice, bob, carol, dave, erin;
    rcpt_event *ev;
    uint64_t req;

    peer_init(&alice, "alice1", false);
    peer_init(&bob, "bob1", false);
    peer_init(&carol, "carol1", false);
    peer_init(&dave, "dave1", false);
    peer_init(&erin, "erin1", false);
    peer_login(&alice, "alice");
    peer_login(&bob, "bob");
    peer_login(&carol, "carol");
    peer_login(&dave, "dave");
    peer_login(&erin, "erin");

    /* 1. Who has not read: carol's group of dave and erin; dave reads. */
    const char *members[] = {"dave", "erin"};
    CHECK_RC(rcpt_client_create_group(carol.c, "team", members, 2, &req), RCPT_OK);
    ev = WAIT_DONE(&carol, req, RCPT_OK);
    REQUIRE(ev != NULL);
    char group[128];
    snprintf(group, sizeof group, "%s", rcpt_event_group_id(ev));
    rcpt_event_free(ev);
    char gm[64];
    send_and_wait(&carol, group, RCPT_CHAT_TYPE_GROUP_CHAT, "lunch?", true, gm, sizeof gm);
    rcpt_event_free(WAIT_EVENT(&dave, .kind = RCPT_EVENT_MESSAGES_RECEIVED, .msg_id = gm));
    CHECK_RC(rcpt_client_ack_group_message_read(dave.c, gm, NULL, &req), RCPT_OK);
    rcpt_event_free(WAIT_DONE(&dave, req, RCPT_OK));
    rcpt_event_free(WAIT_EVENT(&carol, .kind = RCPT_EVENT_GROUP_MESSAGE_READ, .msg_id = gm, .from = "dave"));

    CHECK_RC(rcpt_client_fetch_group_unread_members(carol.c, gm, 1, NULL, &req), RCPT_OK);
    ev = WAIT_DONE(&carol, req, RCPT_OK);
    REQUIRE(ev != NULL);
    CHECK(rcpt_event_member_count(ev) == 1);
    CHECK(strcmp(rcpt_event_member_at(ev, 0), "erin") == 0);
    CHECK(rcpt_event_member_at(ev, 1) == NULL);
    CHECK(strcmp(rcpt_event_cursor(ev), "") == 0); /* the last page */
    rcpt_event_free(ev);
    /* A member may not see who has not read (sender-only visibility): 603 in the event. */
    CHECK_RC(rcpt_client_fetch_group_unread_members(dave.c, gm, 10, "", &req), RCPT_OK);
    rcpt_event_free(WAIT_DONE(&dave, req, RCPT_GROUP_PERMISSION_DENIED));

    /* 2a. Read counts: one item per id, in the order asked. */
    const char *ids[] = {gm, "999999", gm};
    CHECK_RC(rcpt_client_fetch_group_ack_counts(carol.c, ids, 3, &req), RCPT_OK);
    ev = WAIT_DONE(&carol, req, RCPT_OK);
    REQUIRE(ev != NULL && rcpt_event_item_count(ev) == 3);
    CHECK(strcmp(rcpt_event_item_msg_id(ev, 0), gm) == 0 && rcpt_event_item_read_count(ev, 0) == 1);
    CHECK(rcpt_event_item_error_code(ev, 0) == RCPT_OK);
    CHECK(strcmp(rcpt_event_item_msg_id(ev, 1), "999999") == 0);
    CHECK(rcpt_event_item_error_code(ev, 1) == RCPT_MESSAGE_INVALID && rcpt_event_item_read_count(ev, 1) == 0);
    CHECK(strstr(rcpt_event_item_error_message(ev, 1), "999999") != NULL);
    CHECK(strcmp(rcpt_event_item_error_message(ev, 0), "") == 0);
    CHECK(rcpt_event_item_read_count(ev, 2) == 1);
    CHECK(rcpt_event_item_error_code(ev, 3) == RCPT_INVALID_PARAM && rcpt_event_item_msg_id(ev, 3) == NULL);
    rcpt_event_free(ev);

    /* 2b. Read acks in one trip: two from alice, one from erin (another conversation). */
    char m1[64], m2[64], other[64];
    send_and_wait(&alice, "bob", RCPT_CHAT_TYPE_CHAT, "one", false, m1, sizeof m1);
    send_and_wait(&alice, "bob", RCPT_CHAT_TYPE_CHAT, "two", false, m2, sizeof m2);
    send_and_wait(&erin, "bob", RCPT_CHAT_TYPE_CHAT, "erin's", false, other, sizeof other);
    CHECK(wait_unread(&bob, "alice", RCPT_CHAT_TYPE_CHAT, 2) == 2);
    const char *acks[] = {m1, other, m2};
    CHECK_RC(rcpt_client_ack_messages_read(bob.c, "alice", acks, 3, &req), RCPT_OK);
    ev = WAIT_DONE(&bob, req, RCPT_OK);
    REQUIRE(ev != NULL && rcpt_event_item_count(ev) == 3);
    CHECK(rcpt_event_item_error_code(ev, 0) == RCPT_OK);
    CHECK(rcpt_event_item_error_code(ev, 1) == RCPT_MESSAGE_INVALID);
    CHECK(rcpt_event_item_error_code(ev, 2) == RCPT_OK);
    rcpt_event_free(ev);
    CHECK(wait_unread(&bob, "alice", RCPT_CHAT_TYPE_CHAT, 0) == 0);
    rcpt_event_free(WAIT_EVENT(&alice, .kind = RCPT_EVENT_MESSAGES_READ, .msg_id = m2));

    /* 3. Bad input: nothing is sent, *out_req stays 0. */
    char bad_utf8[] = {(char)0xff, (char)0xfe, 0};
    const char *with_null[] = {m1, NULL};
    const char *not_utf8[] = {bad_utf8};
    const char *not_an_id[] = {"12abc"};
    const char *many[21];
    for (int i = 0; i < 21; i++) many[i] = m1;
    req = 7;
    CHECK_RC(rcpt_client_fetch_group_ack_counts(NULL, ids, 1, &req), RCPT_NULL_ARGUMENT);
    CHECK(req == 0);
    CHECK_RC(rcpt_client_fetch_group_ack_counts(carol.c, NULL, 1, &req), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_fetch_group_ack_counts(carol.c, ids, 1, NULL), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_fetch_group_ack_counts(carol.c, with_null, 2, &req), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_fetch_group_ack_counts(carol.c, not_utf8, 1, &req), RCPT_INVALID_UTF8);
    CHECK_RC(rcpt_client_fetch_group_ack_counts(carol.c, not_an_id, 1, &req), RCPT_MESSAGE_INVALID);
    CHECK_RC(rcpt_client_fetch_group_ack_counts(carol.c, ids, 0, &req), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_fetch_group_ack_counts(carol.c, many, 21, &req), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_fetch_group_ack_counts(carol.c, many, 20, &req), RCPT_OK); /* 20 is allowed */
    rcpt_event_free(WAIT_DONE(&carol, req, RCPT_OK));
    CHECK_RC(rcpt_client_ack_messages_read(bob.c, NULL, acks, 1, &req), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_ack_messages_read(bob.c, bad_utf8, acks, 1, &req), RCPT_INVALID_UTF8);
    CHECK_RC(rcpt_client_ack_messages_read(bob.c, "alice", not_utf8, 1, &req), RCPT_INVALID_UTF8);
    CHECK_RC(rcpt_client_ack_messages_read(bob.c, "alice", with_null, 2, &req), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_ack_messages_read(bob.c, "alice", many, 21, &req), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_ack_messages_read(bob.c, "alice", acks, 0, &req), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_ack_messages_read(bob.c, "", acks, 1, &req), RCPT_INVALID_PARAM);
    CHECK(req == 0);
    CHECK_RC(rcpt_client_fetch_group_unread_members(NULL, gm, 10, NULL, &req), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_fetch_group_unread_members(carol.c, NULL, 10, NULL, &req), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_fetch_group_unread_members(carol.c, bad_utf8, 10, NULL, &req), RCPT_INVALID_UTF8);
    CHECK_RC(rcpt_client_fetch_group_unread_members(carol.c, gm, 10, bad_utf8, &req), RCPT_INVALID_UTF8);
    CHECK_RC(rcpt_client_fetch_group_unread_members(carol.c, gm, 0, NULL, &req), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_fetch_group_unread_members(carol.c, gm, 101, NULL, &req), RCPT_INVALID_PARAM);
    CHECK(req == 0);
    CHECK(rcpt_event_member_count(NULL) == 0 && rcpt_event_item_count(NULL) == 0);
    CHECK(rcpt_event_member_at(NULL, 0) == NULL && rcpt_event_item_msg_id(NULL, 0) == NULL);
    CHECK(rcpt_event_item_error_message(NULL, 0) == NULL);
    CHECK(rcpt_event_item_error_code(NULL, 0) == RCPT_NULL_ARGUMENT && rcpt_event_item_read_count(NULL, 0) == 0);

    peer_free(&alice);
    peer_free(&bob);
    peer_free(&carol);
    peer_free(&dave);
    peer_free(&erin);
    return finish("batches");
}
