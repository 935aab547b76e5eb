/*
 * The seed's receipt flows through the C ABI against a real server:
 * alice (two devices) and bob: delivery ack, message read ack, conversation read ack
 * (CONVERSATION_READ on the peer and on the acker's other device), unread counts;
 * carol, dave and erin in a group: group read acks with the running count, a paged fetch
 * (newest first, cursor). erin uses the event callback instead of polling; bob has a wake-up.
 */
#include "harness.h"

#include <stdatomic.h>

/* erin's callback state (the callback runs on erin's connection thread). */
static rcpt_client *g_erin;
static atomic_int erin_connected, erin_received, erin_membership, erin_events;
static atomic_uint erin_reentry_rc;
static atomic_int bob_wakeups;

static void erin_callback(void *user_data, const rcpt_event *ev) {
    atomic_fetch_add((atomic_int *)user_data, 1);
    switch (rcpt_event_kind(ev)) {
    case RCPT_EVENT_CONNECTED: {
        atomic_store(&erin_connected, 1);
        /* Calling back into the client from its callback fails cleanly (no deadlock). */
        uint32_t n = 0;
        atomic_store(&erin_reentry_rc, (unsigned)rcpt_client_unread_count(g_erin, "carol", RCPT_CHAT_TYPE_CHAT, &n));
        break;
    }
    case RCPT_EVENT_MESSAGES_RECEIVED:
        atomic_fetch_add(&erin_received, (int)rcpt_event_message_count(ev));
        break;
    case RCPT_EVENT_MEMBERSHIP_CHANGED:
        if (rcpt_event_group_id(ev)[0] != '\0') atomic_store(&erin_membership, 1);
        break;
    default:
        break;
    }
}

static void bob_wakeup(void *user_data) { atomic_fetch_add((atomic_int *)user_data, 1); }

static bool wait_flag(atomic_int *flag, int at_least) {
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms();
    while (atomic_load(flag) < at_least && now_ms() < deadline) sleep_ms(10);
    return atomic_load(flag) >= at_least;
}

/* Sends a text and waits for the server's acceptance; copies the server id into `id`. */
static void send_and_wait(peer *p, const char *to, uint32_t chat_type, const char *text, bool need_group_ack, char *id, size_t id_len) {
    uint64_t req = 0;
    rcpt_message *queued = NULL;
    CHECK_RC(rcpt_client_send_text(p->c, to, chat_type, text, need_group_ack, &req, &queued), RCPT_OK);
    CHECK(req != 0);
    REQUIRE(queued != NULL);
    CHECK(rcpt_message_status(queued) == RCPT_STATUS_PENDING);
    CHECK(rcpt_message_direction(queued) == RCPT_DIRECTION_SEND);
    CHECK(strcmp(rcpt_message_content(queued), text) == 0);
    CHECK(strcmp(rcpt_message_to(queued), to) == 0);
    rcpt_message_free(queued);
    rcpt_event *ev = WAIT_DONE(p, req, RCPT_OK);
    REQUIRE(ev != NULL && rcpt_event_message_count(ev) == 1);
    const rcpt_message *m = rcpt_event_message_at(ev, 0);
    CHECK(rcpt_message_status(m) == RCPT_STATUS_SENT);
    CHECK(rcpt_message_timestamp(m) > 0);
    CHECK(rcpt_message_need_group_ack(m) == need_group_ack);
    snprintf(id, id_len, "%s", rcpt_message_id(m));
    CHECK(strtoull(id, NULL, 10) > 0);
    rcpt_event_free(ev);
}

int main(void) {
    peer alice1, alice2, bob, carol, dave, erin;
    rcpt_event *ev;
    const rcpt_message *m;
    rcpt_message *owned;
    uint64_t req;
    uint32_t unread;

    CHECK(strncmp(rcpt_version(), "receipt-ffi ", 12) == 0);

    peer_init(&alice1, "alice1", true);
    peer_init(&alice2, "alice2", false);
    peer_init(&bob, "bob1", false);
    peer_init(&carol, "carol1", false);
    peer_init(&dave, "dave1", false);
    peer_init(&erin, "erin1", false);
    g_erin = erin.c;
    CHECK_RC(rcpt_client_set_event_callback(erin.c, erin_callback, &erin_events), RCPT_OK);
    CHECK_RC(rcpt_client_set_wakeup(bob.c, bob_wakeup, &bob_wakeups), RCPT_OK);

    peer_login(&alice1, "alice");
    peer_login(&alice2, "alice");
    peer_login(&bob, "bob");
    peer_login(&carol, "carol");
    peer_login(&dave, "dave");
    CHECK_RC(rcpt_client_login(erin.c, "erin", token_for("erin")), RCPT_OK);
    CHECK(wait_flag(&erin_connected, 1));
    CHECK(atomic_load(&erin_reentry_rc) == RCPT_GENERAL_ERROR);

    char *user = NULL;
    CHECK_RC(rcpt_client_current_user(alice2.c, &user), RCPT_OK);
    CHECK(user != NULL && strcmp(user, "alice") == 0);
    rcpt_string_free(user);

    /* 1. Delivery ack: alice asks for it; bob's client sends it on receipt. */
    char m1[64];
    send_and_wait(&alice1, "bob", RCPT_CHAT_TYPE_CHAT, "hello bob", false, m1, sizeof m1);
    ev = WAIT_EVENT(&bob, .kind = RCPT_EVENT_MESSAGES_RECEIVED, .msg_id = m1);
    m = find_message(ev, m1);
    CHECK(m != NULL);
    if (m != NULL) {
        CHECK(rcpt_message_direction(m) == RCPT_DIRECTION_RECEIVE);
        CHECK(rcpt_message_chat_type(m) == RCPT_CHAT_TYPE_CHAT);
        CHECK(rcpt_message_is_unread(m));
        CHECK(rcpt_message_require_delivery_ack(m));
        CHECK(strcmp(rcpt_message_from(m), "alice") == 0);
        CHECK(strcmp(rcpt_message_content(m), "hello bob") == 0);
    }
    rcpt_event_free(ev);
    ev = WAIT_EVENT(&alice1, .kind = RCPT_EVENT_MESSAGES_DELIVERED, .msg_id = m1);
    m = find_message(ev, m1);
    CHECK(m != NULL && rcpt_message_is_delivered(m));
    rcpt_event_free(ev);
    CHECK_RC(rcpt_client_get_message(alice1.c, m1, &owned), RCPT_OK);
    CHECK(owned != NULL && rcpt_message_is_delivered(owned) && !rcpt_message_is_receiver_read(owned));
    rcpt_message_free(owned);
    CHECK(wait_unread(&bob, "alice", RCPT_CHAT_TYPE_CHAT, 1) == 1);

    /* 2. Message read ack. */
    CHECK_RC(rcpt_client_ack_message_read(bob.c, m1, &req), RCPT_OK);
    CHECK(req != 0);
    rcpt_event_free(WAIT_DONE(&bob, req, RCPT_OK));
    ev = WAIT_EVENT(&alice1, .kind = RCPT_EVENT_MESSAGES_READ, .msg_id = m1);
    m = find_message(ev, m1);
    CHECK(m != NULL && rcpt_message_is_receiver_read(m));
    rcpt_event_free(ev);
    CHECK_RC(rcpt_client_unread_count(bob.c, "alice", RCPT_CHAT_TYPE_CHAT, &unread), RCPT_OK);
    CHECK(unread == 0);
    CHECK_RC(rcpt_client_ack_message_read(bob.c, m1, &req), RCPT_OK); /* idempotent: nothing sent */
    CHECK(req == 0);

    /* 3. Conversation read ack by alice1: bob and alice2 hear CONVERSATION_READ(alice, bob). */
    char m2[64], m3[64];
    send_and_wait(&bob, "alice", RCPT_CHAT_TYPE_CHAT, "one", false, m2, sizeof m2);
    send_and_wait(&bob, "alice", RCPT_CHAT_TYPE_CHAT, "two", false, m3, sizeof m3);
    peer *alices[2] = {&alice1, &alice2};
    for (int i = 0; i < 2; i++) {
        rcpt_event_free(WAIT_EVENT(alices[i], .kind = RCPT_EVENT_MESSAGES_RECEIVED, .msg_id = m2));
        rcpt_event_free(WAIT_EVENT(alices[i], .kind = RCPT_EVENT_MESSAGES_RECEIVED, .msg_id = m3));
        CHECK(wait_unread(alices[i], "bob", RCPT_CHAT_TYPE_CHAT, 2) == 2);
    }
    CHECK_RC(rcpt_client_ack_conversation_read(alice1.c, "bob", &req), RCPT_OK);
    CHECK(req != 0);
    rcpt_event_free(WAIT_DONE(&alice1, req, RCPT_OK));
    CHECK_RC(rcpt_client_unread_count(alice1.c, "bob", RCPT_CHAT_TYPE_CHAT, &unread), RCPT_OK);
    CHECK(unread == 0);
    peer *told[2] = {&bob, &alice2};
    for (int i = 0; i < 2; i++) {
        ev = WAIT_EVENT(told[i], .kind = RCPT_EVENT_CONVERSATION_READ, .from = "alice");
        CHECK(ev != NULL && strcmp(rcpt_event_from(ev), "alice") == 0 && strcmp(rcpt_event_to(ev), "bob") == 0);
        rcpt_event_free(ev);
    }
    CHECK(wait_unread(&alice2, "bob", RCPT_CHAT_TYPE_CHAT, 0) == 0);
    CHECK_RC(rcpt_client_get_message(bob.c, m3, &owned), RCPT_OK);
    CHECK(owned != NULL && rcpt_message_is_receiver_read(owned));
    rcpt_message_free(owned);
    CHECK_RC(rcpt_client_ack_conversation_read(alice1.c, "bob", &req), RCPT_OK); /* nothing new */
    CHECK(req == 0);

    /* 4. Group read acks. */
    const char *members[] = {"dave", "erin"};
    CHECK_RC(rcpt_client_create_group(carol.c, "team", members, 2, &req), RCPT_OK);
    ev = WAIT_DONE(&carol, req, RCPT_OK);
    REQUIRE(ev != NULL && rcpt_event_group_id(ev)[0] != '\0');
    char group[128];
    snprintf(group, sizeof group, "%s", rcpt_event_group_id(ev));
    rcpt_event_free(ev);
    ev = WAIT_EVENT(&dave, .kind = RCPT_EVENT_MEMBERSHIP_CHANGED);
    CHECK(ev != NULL && strcmp(rcpt_event_group_id(ev), group) == 0);
    rcpt_event_free(ev);
    CHECK(wait_flag(&erin_membership, 1));

    char gm[64];
    send_and_wait(&carol, group, RCPT_CHAT_TYPE_GROUP_CHAT, "lunch?", true, gm, sizeof gm);
    ev = WAIT_EVENT(&dave, .kind = RCPT_EVENT_MESSAGES_RECEIVED, .msg_id = gm);
    m = find_message(ev, gm);
    CHECK(m != NULL && rcpt_message_need_group_ack(m) && rcpt_message_chat_type(m) == RCPT_CHAT_TYPE_GROUP_CHAT);
    CHECK(m != NULL && !rcpt_message_group_ack_sent(m));
    rcpt_event_free(ev);
    CHECK(wait_flag(&erin_received, 1));
    CHECK(wait_unread(&dave, group, RCPT_CHAT_TYPE_GROUP_CHAT, 1) == 1);

    CHECK_RC(rcpt_client_ack_group_message_read(dave.c, gm, "seen by dave", &req), RCPT_OK);
    CHECK(req != 0);
    rcpt_event_free(WAIT_DONE(&dave, req, RCPT_OK));
    CHECK_RC(rcpt_client_unread_count(dave.c, group, RCPT_CHAT_TYPE_GROUP_CHAT, &unread), RCPT_OK);
    CHECK(unread == 0);
    CHECK_RC(rcpt_client_ack_group_message_read(dave.c, gm, NULL, &req), RCPT_OK); /* already acked */
    CHECK(req == 0);
    ev = WAIT_EVENT(&carol, .kind = RCPT_EVENT_GROUP_MESSAGE_READ, .msg_id = gm, .from = "dave");
    CHECK(ev != NULL && rcpt_event_ack_count(ev) == 1);
    if (ev != NULL && rcpt_event_ack_count(ev) == 1) {
        const rcpt_group_read_ack *a = rcpt_event_ack_at(ev, 0);
        CHECK(strcmp(rcpt_group_read_ack_from(a), "dave") == 0);
        CHECK(strcmp(rcpt_group_read_ack_content(a), "seen by dave") == 0);
        CHECK(strcmp(rcpt_group_read_ack_msg_id(a), gm) == 0);
        CHECK(rcpt_group_read_ack_count(a) == 1);
        CHECK(rcpt_group_read_ack_timestamp(a) > 0);
        CHECK(strtoull(rcpt_group_read_ack_id(a), NULL, 10) > 0);
        CHECK(rcpt_event_ack_at(ev, 1) == NULL);
    }
    rcpt_event_free(ev);

    /* erin (callback mode) acks from this thread; carol sees the running count reach 2. */
    CHECK_RC(rcpt_client_ack_group_message_read(erin.c, gm, NULL, &req), RCPT_OK);
    CHECK(req != 0);
    ev = WAIT_EVENT(&carol, .kind = RCPT_EVENT_GROUP_MESSAGE_READ, .msg_id = gm, .from = "erin");
    CHECK(ev != NULL && rcpt_event_ack_count(ev) == 1);
    if (ev != NULL && rcpt_event_ack_count(ev) == 1) {
        CHECK(rcpt_group_read_ack_count(rcpt_event_ack_at(ev, 0)) == 2);
        CHECK(strcmp(rcpt_group_read_ack_content(rcpt_event_ack_at(ev, 0)), "") == 0);
    }
    rcpt_event_free(ev);
    CHECK_RC(rcpt_client_get_message(carol.c, gm, &owned), RCPT_OK);
    CHECK(owned != NULL && rcpt_message_group_ack_count(owned) == 2);
    rcpt_message_free(owned);

    /* Paged fetch, one ack per page: newest first, then the cursor runs out. */
    const char *expected[] = {"erin", "dave"};
    char cursor[64] = "";
    int seen = 0;
    for (int page = 0; page < 4; page++) {
        CHECK_RC(rcpt_client_fetch_group_read_acks(carol.c, gm, 1, page == 0 ? NULL : cursor, &req), RCPT_OK);
        ev = WAIT_DONE(&carol, req, RCPT_OK);
        if (ev == NULL) break;
        CHECK(rcpt_event_ack_count(ev) <= 1);
        for (size_t i = 0; i < rcpt_event_ack_count(ev) && seen < 2; i++, seen++)
            CHECK(strcmp(rcpt_group_read_ack_from(rcpt_event_ack_at(ev, i)), expected[seen]) == 0);
        snprintf(cursor, sizeof cursor, "%s", rcpt_event_cursor(ev));
        rcpt_event_free(ev);
        if (cursor[0] == '\0') break;
    }
    CHECK(seen == 2);
    CHECK(cursor[0] == '\0');
    /* The whole list in one page. */
    CHECK_RC(rcpt_client_fetch_group_read_acks(carol.c, gm, 10, "", &req), RCPT_OK);
    ev = WAIT_DONE(&carol, req, RCPT_OK);
    CHECK(ev != NULL && rcpt_event_ack_count(ev) == 2 && rcpt_event_cursor(ev)[0] == '\0');
    if (ev != NULL && rcpt_event_ack_count(ev) == 2) {
        CHECK(rcpt_group_read_ack_count(rcpt_event_ack_at(ev, 0)) == 2);
        CHECK(rcpt_group_read_ack_count(rcpt_event_ack_at(ev, 1)) == 1);
    }
    rcpt_event_free(ev);

    /* 5. Unread counts: mark a group conversation read locally (no receipt). */
    char gm2[64];
    send_and_wait(&carol, group, RCPT_CHAT_TYPE_GROUP_CHAT, "no acks here", false, gm2, sizeof gm2);
    rcpt_event_free(WAIT_EVENT(&dave, .kind = RCPT_EVENT_MESSAGES_RECEIVED, .msg_id = gm2));
    CHECK(wait_unread(&dave, group, RCPT_CHAT_TYPE_GROUP_CHAT, 1) == 1);
    CHECK_RC(rcpt_client_mark_all_messages_read(dave.c, group, RCPT_CHAT_TYPE_GROUP_CHAT, &req), RCPT_OK);
    CHECK(req != 0);
    rcpt_event_free(WAIT_DONE(&dave, req, RCPT_OK));
    CHECK_RC(rcpt_client_unread_count(dave.c, group, RCPT_CHAT_TYPE_GROUP_CHAT, &unread), RCPT_OK);
    CHECK(unread == 0);

    /* bob polled after wake-ups; erin's callback saw events. */
    CHECK(atomic_load(&bob_wakeups) > 0);
    CHECK(atomic_load(&erin_events) > 0);

    CHECK_RC(rcpt_client_logout(alice2.c), RCPT_OK);
    CHECK_RC(rcpt_client_logout(alice2.c), RCPT_USER_NOT_LOGIN);
    CHECK_RC(rcpt_client_current_user(alice2.c, &user), RCPT_OK);
    CHECK(user == NULL);

    peer_free(&alice1);
    peer_free(&alice2);
    peer_free(&bob);
    peer_free(&carol);
    peer_free(&dave);
    peer_free(&erin);
    return finish("seed_flows");
}
