/*
 * A tiny test harness for the C programs in tests/c (run by crates/receipt-ffi/tests/c_programs.rs).
 *
 * Environment: RCPT_TEST_HOST, RCPT_TEST_PORT (the receipt server), RCPT_TEST_DIR (a fresh
 * directory for the clients' data), RCPT_TEST_TOKEN_<user> (a login token per user),
 * RCPT_TEST_TIMEOUT_MS (how long one wait may take; default 30000, generous for valgrind).
 *
 * Events are read in poll mode (rcpt_client_poll_event + short sleeps). A peer keeps the events
 * it polled but did not want yet in a backlog, so waits may ask for events in any order. Every
 * wait stops by itself at the deadline.
 */
#ifndef RCPT_TEST_HARNESS_H
#define RCPT_TEST_HARNESS_H

#define _POSIX_C_SOURCE 200809L

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "receipt.h"

static int g_checks;
static int g_failures;

#define CHECK(cond)                                                                                     \
    do {                                                                                                \
        g_checks++;                                                                                     \
        if (!(cond)) {                                                                                  \
            g_failures++;                                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s (rcpt_last_error: %s)\n", __FILE__, __LINE__, #cond, \
                    rcpt_last_error());                                                                 \
        }                                                                                               \
    } while (0)

#define CHECK_RC(expr, want)                                                                               \
    do {                                                                                                   \
        rcpt_result rc_ = (expr);                                                                          \
        g_checks++;                                                                                        \
        if (rc_ != (want)) {                                                                               \
            g_failures++;                                                                                  \
            fprintf(stderr, "%s:%d: %s returned %u, want %u (%s) (rcpt_last_error: %s)\n", __FILE__, __LINE__, \
                    #expr, (unsigned)rc_, (unsigned)(want), #want, rcpt_last_error());                     \
        }                                                                                                  \
    } while (0)

/* A failure after which the program cannot go on. */
#define REQUIRE(cond)                                                                     \
    do {                                                                                  \
        CHECK(cond);                                                                      \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: giving up after a failed REQUIRE\n", __FILE__, __LINE__); \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static inline uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline const char *env_or_die(const char *name) {
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        fprintf(stderr, "missing environment variable %s\n", name);
        exit(2);
    }
    return v;
}

static inline long timeout_ms(void) {
    const char *v = getenv("RCPT_TEST_TIMEOUT_MS");
    long t = v ? atol(v) : 0;
    return t > 0 ? t : 30000;
}

static inline const char *token_for(const char *user) {
    char name[128];
    snprintf(name, sizeof name, "RCPT_TEST_TOKEN_%s", user);
    return env_or_die(name);
}

#define BACKLOG_MAX 256

typedef struct {
    const char *name; /* for messages: "alice1" */
    rcpt_client *c;
    rcpt_event *backlog[BACKLOG_MAX];
    size_t n;
} peer;

/* Options for a client with its own data dir $RCPT_TEST_DIR/<label>, talking to the test server;
 * the caller adds its own settings, then hands them to peer_start. */
static inline rcpt_options *peer_options(const char *label) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", env_or_die("RCPT_TEST_DIR"), label);
    rcpt_options *o = rcpt_options_new();
    REQUIRE(o != NULL);
    CHECK_RC(rcpt_options_set_data_dir(o, dir), RCPT_OK);
    CHECK_RC(rcpt_options_set_device_id(o, label), RCPT_OK);
    CHECK_RC(rcpt_options_set_server(o, env_or_die("RCPT_TEST_HOST"), (uint16_t)atoi(env_or_die("RCPT_TEST_PORT"))), RCPT_OK);
    return o;
}

/* Makes p's client from `o` (freed here); p->name is `label`. */
static inline void peer_start(peer *p, const char *label, rcpt_options *o) {
    memset(p, 0, sizeof *p);
    p->name = label;
    CHECK_RC(rcpt_client_new(o, &p->c), RCPT_OK);
    rcpt_options_free(o);
    REQUIRE(p->c != NULL);
}

/* A client with its own data dir $RCPT_TEST_DIR/<label>, talking to the test server. */
static inline void peer_init(peer *p, const char *label, bool require_delivery_ack) {
    rcpt_options *o = peer_options(label);
    CHECK_RC(rcpt_options_set_require_delivery_ack(o, require_delivery_ack), RCPT_OK);
    peer_start(p, label, o);
}

static inline void peer_free(peer *p) {
    for (size_t i = 0; i < p->n; i++) rcpt_event_free(p->backlog[i]);
    p->n = 0;
    rcpt_client_free(p->c);
    p->c = NULL;
}

/* What an awaited event must look like; 0 / NULL fields match anything. */
typedef struct {
    rcpt_event_type kind;
    uint64_t req;        /* REQUEST_COMPLETED: this request */
    const char *msg_id;  /* one of its messages, or one of its acks' msg_id, has this id */
    const char *from;    /* rcpt_event_from, or one of its acks' from */
} want;

static inline bool event_matches(const rcpt_event *ev, const want *w) {
    if (rcpt_event_kind(ev) != w->kind) return false;
    if (w->req != 0 && rcpt_event_request_id(ev) != w->req) return false;
    if (w->msg_id != NULL) {
        bool found = false;
        for (size_t i = 0; i < rcpt_event_message_count(ev); i++)
            if (strcmp(rcpt_message_id(rcpt_event_message_at(ev, i)), w->msg_id) == 0) found = true;
        for (size_t i = 0; i < rcpt_event_ack_count(ev); i++)
            if (strcmp(rcpt_group_read_ack_msg_id(rcpt_event_ack_at(ev, i)), w->msg_id) == 0) found = true;
        if (!found) return false;
    }
    if (w->from != NULL) {
        bool found = strcmp(rcpt_event_from(ev), w->from) == 0;
        for (size_t i = 0; i < rcpt_event_ack_count(ev); i++)
            if (strcmp(rcpt_group_read_ack_from(rcpt_event_ack_at(ev, i)), w->from) == 0) found = true;
        if (!found) return false;
    }
    return true;
}

/* Waits (bounded) for an event like `w`; the caller frees it. NULL (and a failure) on timeout. */
static inline rcpt_event *wait_event_at(peer *p, want w, const char *file, int line) {
    for (size_t i = 0; i < p->n; i++) {
        if (event_matches(p->backlog[i], &w)) {
            rcpt_event *ev = p->backlog[i];
            memmove(&p->backlog[i], &p->backlog[i + 1], (p->n - i - 1) * sizeof p->backlog[0]);
            p->n--;
            return ev;
        }
    }
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms();
    while (now_ms() < deadline) {
        rcpt_event *ev = NULL;
        rcpt_result rc = rcpt_client_poll_event(p->c, &ev);
        if (rc != RCPT_OK) {
            fprintf(stderr, "%s:%d: rcpt_client_poll_event returned %u: %s\n", file, line, (unsigned)rc, rcpt_last_error());
            g_failures++;
            return NULL;
        }
        if (ev == NULL) {
            sleep_ms(10);
            continue;
        }
        if (event_matches(ev, &w)) return ev;
        if (p->n == BACKLOG_MAX) {
            rcpt_event_free(p->backlog[0]);
            memmove(&p->backlog[0], &p->backlog[1], (BACKLOG_MAX - 1) * sizeof p->backlog[0]);
            p->n--;
        }
        p->backlog[p->n++] = ev;
    }
    g_checks++;
    g_failures++;
    fprintf(stderr, "%s:%d: %s: timed out waiting for event kind %u (req %llu, msg %s, from %s)\n", file, line, p->name,
            (unsigned)w.kind, (unsigned long long)w.req, w.msg_id ? w.msg_id : "-", w.from ? w.from : "-");
    return NULL;
}

#define WAIT_EVENT(p, ...) wait_event_at((p), (want){__VA_ARGS__}, __FILE__, __LINE__)

/* Waits for the REQUEST_COMPLETED of `req` and checks its outcome is `code`. */
#define WAIT_DONE(p, r, code) wait_done_at((p), (r), (code), __FILE__, __LINE__)
static inline rcpt_event *wait_done_at(peer *p, uint64_t req, rcpt_result code, const char *file, int line) {
    rcpt_event *ev = wait_event_at(p, (want){.kind = RCPT_EVENT_REQUEST_COMPLETED, .req = req}, file, line);
    g_checks++;
    if (ev != NULL && rcpt_event_error_code(ev) != code) {
        g_failures++;
        fprintf(stderr, "%s:%d: %s: request %llu completed with %u (%s), want %u\n", file, line, p->name,
                (unsigned long long)req, (unsigned)rcpt_event_error_code(ev), rcpt_event_error_message(ev), (unsigned)code);
    }
    return ev;
}

/* Waits (bounded) until the unread count of a conversation is `expected`; returns the last count. */
static inline uint32_t wait_unread(peer *p, const char *conversation, uint32_t chat_type, uint32_t expected) {
    uint32_t n = UINT32_MAX;
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms();
    do {
        if (rcpt_client_unread_count(p->c, conversation, chat_type, &n) != RCPT_OK) return UINT32_MAX;
        if (n == expected) return n;
        sleep_ms(10);
    } while (now_ms() < deadline);
    return n;
}

/* Logs in and waits for CONNECTED. */
static inline void peer_login(peer *p, const char *user) {
    CHECK_RC(rcpt_client_login(p->c, user, token_for(user)), RCPT_OK);
    rcpt_event *ev = WAIT_EVENT(p, .kind = RCPT_EVENT_CONNECTED);
    REQUIRE(ev != NULL);
    rcpt_event_free(ev);
}

/* The message with id `id` inside `ev`, or NULL. */
static inline const rcpt_message *find_message(const rcpt_event *ev, const char *id) {
    for (size_t i = 0; ev != NULL && i < rcpt_event_message_count(ev); i++) {
        const rcpt_message *m = rcpt_event_message_at(ev, i);
        if (strcmp(rcpt_message_id(m), id) == 0) return m;
    }
    return NULL;
}

static inline int finish(const char *program) {
    printf("%s: %d checks, %d failed\n", program, g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}

#endif /* RCPT_TEST_HARNESS_H */
