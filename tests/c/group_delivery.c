/* Group delivery receipts through the C ABI against a real server (group delivery acks on):
 * bob's device acks on receipt, carol's at login (backlog); alice hears each delivery, sees the
 * count on her message and pages the list; then the bad input of each call. */
#include "harness.h"

/* Waits for alice's GROUP_MESSAGE_DELIVERED of `from`; checks its ack and returns its count. */
static uint32_t delivered_by(peer *p, const char *msg_id, const char *from) {
    rcpt_event *ev = WAIT_EVENT(p, .kind = RCPT_EVENT_GROUP_MESSAGE_DELIVERED, .msg_id = msg_id, .from = from);
    uint32_t count = 0;
    if (ev != NULL) {
        CHECK(rcpt_event_ack_count(ev) == 1);
        const rcpt_group_read_ack *a = rcpt_event_ack_at(ev, 0);
        CHECK(strcmp(rcpt_group_read_ack_content(a), "") == 0); /* a delivery carries no ext */
        count = rcpt_group_read_ack_count(a);
    }
    rcpt_event_free(ev);
    return count;
}

/* The delivered count of message `id` as alice's client holds it. */
static uint32_t delivered_count(peer *p, const char *id) {
    rcpt_message *m = NULL;
    CHECK_RC(rcpt_client_get_message(p->c, id, &m), RCPT_OK);
    uint32_t n = rcpt_message_group_delivered_count(m);
    rcpt_message_free(m);
    return n;
}

int main(void) {
    peer alice, bob, carol, dave;
    rcpt_event *ev;
    uint64_t req;

    peer_init(&alice, "alice1", false);
    peer_init(&bob, "bob1", false);
    peer_init(&carol, "carol1", false);
    peer_init(&dave, "dave1", false);
    peer_login(&alice, "alice");
    peer_login(&bob, "bob");
    peer_login(&dave, "dave");

    const char *members[] = {"bob", "carol"};
    CHECK_RC(rcpt_client_create_group(alice.c, "team", members, 2, &req), RCPT_OK);
    ev = WAIT_DONE(&alice, req, RCPT_OK);
    REQUIRE(ev != NULL);
    char group[128];
    snprintf(group, sizeof group, "%s", rcpt_event_group_id(ev));
    rcpt_event_free(ev);

    /* 1. Alice asks for delivery acks; the queued message says so. */
    rcpt_message *queued = NULL;
    CHECK_RC(rcpt_client_send_group_message(alice.c, group, "arrived?", false, true, &req, &queued), RCPT_OK);
    REQUIRE(queued != NULL);
    CHECK(rcpt_message_need_group_delivery_ack(queued) && !rcpt_message_need_group_ack(queued));
    CHECK(rcpt_message_group_delivered_count(queued) == 0);
    rcpt_message_free(queued);
    ev = WAIT_DONE(&alice, req, RCPT_OK);
    REQUIRE(ev != NULL && rcpt_event_message_count(ev) == 1);
    char gm[64];
    snprintf(gm, sizeof gm, "%s", rcpt_message_id(rcpt_event_message_at(ev, 0)));
    CHECK(rcpt_message_need_group_delivery_ack(rcpt_event_message_at(ev, 0))); /* kept by the server */
    rcpt_event_free(ev);

    /* 2. Bob is online: his device acks on receipt. Carol acks her backlog at login. */
    rcpt_event_free(WAIT_EVENT(&bob, .kind = RCPT_EVENT_MESSAGES_RECEIVED, .msg_id = gm));
    CHECK(delivered_by(&alice, gm, "bob") == 1);
    CHECK(delivered_count(&alice, gm) == 1);
    peer_login(&carol, "carol");
    CHECK(delivered_by(&alice, gm, "carol") == 2);
    CHECK(delivered_count(&alice, gm) == 2);

    /* 3. The list, one ack a page, newest first. */
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(alice.c, gm, 1, NULL, &req), RCPT_OK);
    ev = WAIT_DONE(&alice, req, RCPT_OK);
    REQUIRE(ev != NULL && rcpt_event_ack_count(ev) == 1);
    CHECK(strcmp(rcpt_group_read_ack_from(rcpt_event_ack_at(ev, 0)), "carol") == 0);
    char cursor[64];
    snprintf(cursor, sizeof cursor, "%s", rcpt_event_cursor(ev));
    CHECK(cursor[0] != '\0');
    rcpt_event_free(ev);
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(alice.c, gm, 1, cursor, &req), RCPT_OK);
    ev = WAIT_DONE(&alice, req, RCPT_OK);
    REQUIRE(ev != NULL && rcpt_event_ack_count(ev) == 1);
    CHECK(strcmp(rcpt_group_read_ack_from(rcpt_event_ack_at(ev, 0)), "bob") == 0);
    CHECK(strcmp(rcpt_event_cursor(ev), "") == 0); /* the last page */
    rcpt_event_free(ev);

    /* 4. Refused by the server, in the event: a member who is not the sender (603), a message
     * of a group dave is not in (603), an unknown id (500). */
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(bob.c, gm, 10, NULL, &req), RCPT_OK);
    rcpt_event_free(WAIT_DONE(&bob, req, RCPT_GROUP_PERMISSION_DENIED));
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(dave.c, gm, 10, NULL, &req), RCPT_OK);
    rcpt_event_free(WAIT_DONE(&dave, req, RCPT_GROUP_PERMISSION_DENIED));
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(alice.c, "999999", 10, NULL, &req), RCPT_OK);
    rcpt_event_free(WAIT_DONE(&alice, req, RCPT_MESSAGE_INVALID));

    /* 5. Bad input: refused at the boundary, nothing sent, *out_req 0. */
    char bad_utf8[] = {(char)0xff, (char)0xfe, 0};
    req = 7;
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(NULL, gm, 10, NULL, &req), RCPT_NULL_ARGUMENT);
    CHECK(req == 0);
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(alice.c, NULL, 10, NULL, &req), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(alice.c, gm, 10, NULL, NULL), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(alice.c, bad_utf8, 10, NULL, &req), RCPT_INVALID_UTF8);
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(alice.c, gm, 10, bad_utf8, &req), RCPT_INVALID_UTF8);
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(alice.c, gm, 10, "12abc", &req), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(alice.c, "12abc", 10, NULL, &req), RCPT_MESSAGE_INVALID);
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(alice.c, gm, 0, NULL, &req), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_fetch_group_delivery_acks(alice.c, gm, 101, NULL, &req), RCPT_INVALID_PARAM);
    CHECK(req == 0);
    CHECK_RC(rcpt_client_send_group_message(NULL, group, "x", false, true, &req, NULL), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_send_group_message(alice.c, NULL, "x", false, true, &req, NULL), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_send_group_message(alice.c, group, NULL, false, true, &req, NULL), RCPT_NULL_ARGUMENT);
    CHECK_RC(rcpt_client_send_group_message(alice.c, group, bad_utf8, false, true, &req, NULL), RCPT_INVALID_UTF8);
    CHECK_RC(rcpt_client_send_group_message(alice.c, group, "", false, true, &req, NULL), RCPT_INVALID_PARAM);
    CHECK_RC(rcpt_client_send_group_message(alice.c, group, "x", false, true, NULL, NULL), RCPT_NULL_ARGUMENT);
    CHECK(req == 0);
    CHECK(!rcpt_message_need_group_delivery_ack(NULL) && rcpt_message_group_delivered_count(NULL) == 0);

    peer_free(&alice);
    peer_free(&bob);
    peer_free(&carol);
    peer_free(&dave);
    return finish("group_delivery");
}
