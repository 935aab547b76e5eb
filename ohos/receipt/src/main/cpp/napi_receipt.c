// libreceipt_napi: the NAPI shim between the ArkTS layer (src/main/ets) and the Rust C ABI
// (include/receipt.h, docs/c-api.md). One C11 source for HarmonyOS (OpenHarmony NDK, links
// libace_napi.z.so) and for desktop Node.js (built as a Node addon by scripts/build-napi.sh).
//
// The JS contract is types/libreceipt_napi/index.d.ts. Rules this file keeps:
//  - Node-API is called only on the JS thread that owns the napi_env. The Rust side's wakeup
//    callback (any thread) only calls napi_call_threadsafe_function; the threadsafe function's
//    call_js (JS thread) drains rcpt_client_poll_event and calls the JS event handler.
//  - State is per napi_env (one client per ArkTS worker / Node worker): it is allocated in the
//    module's init and reaches every export through the function's `data` pointer. Env teardown is
//    detected through the threadsafe function's finalizer (Node and ArkUI finalize threadsafe
//    functions when their env goes away); it frees the client (which joins the Rust threads).
//    napi_set_instance_data and napi_add_env_cleanup_hook are not in OpenHarmony's NDK list.
//  - Promises: req id -> napi_deferred, settled by RCPT_EVENT_REQUEST_COMPLETED; login settles on
//    CONNECTED / LOGIN_FAILED. Errors are `{ code, description }` objects (the SDK's codes, docs/errors.md).
//  - The threadsafe function is referenced (keeps the event loop alive) only while a promise is
//    pending, so a worker or process that is done exits.
//  - Only symbols in OpenHarmony's libnapi.ndk.json (scripts/check-napi-symbols.sh checks it).

#ifdef __OHOS__
#include <hilog/log.h>
#include <napi/native_api.h>
#else
#include <node_api.h>
#endif

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "receipt.h"

// ---- error codes -------------------------------------------------------------------------------
// The codes the shim itself produces; every other code comes from the C ABI's rcpt_result. Names
// are the SDK's ChatError names (docs/errors.md); tests/napi/error_table.test.js checks that each is
// RCPT_<name> of receipt.h.

enum {
  ERR_GENERAL_ERROR = RCPT_GENERAL_ERROR,
  ERR_INVALID_PARAM = RCPT_INVALID_PARAM,
  ERR_USER_NOT_LOGIN = RCPT_USER_NOT_LOGIN,
};

// ---- per-env state ------------------------------------------------------------------------------

typedef enum {
  PENDING_VOID = 0,   // resolves with undefined
  PENDING_MESSAGE,    // sendMessage: resolves with the accepted NativeMessage
  PENDING_ACKS,       // fetchGroupReadAcks: resolves with a NativeCursorResult
  PENDING_GROUP_ID,   // createGroup: resolves with the group id
  PENDING_MEMBERS,    // fetchGroupUnreadMembers: resolves with a NativeMemberPage
  PENDING_ITEMS,      // fetchGroupAckCounts, ackMessagesRead: resolves with NativeBatchItem[]
} pending_kind;

typedef struct pending_req {
  uint64_t req;
  uint64_t session;   // the session generation the request was made in
  pending_kind kind;
  napi_deferred deferred;
  struct pending_req *next;
} pending_req;

// An event taken off the client's queue at logout: it belongs to the session that ended and is
// dispatched (in order) before any event of a later session.
typedef struct stashed_event {
  rcpt_event *ev;
  uint64_t session;
  struct stashed_event *next;
} stashed_event;

typedef struct env_state {
  napi_env env;
  rcpt_client *client;            // NULL until init()
  napi_threadsafe_function tsfn;  // created with the state; finalized at env teardown
  atomic_bool poll_scheduled;     // coalesces wakeups (set on any thread, cleared on the JS thread)
  bool tsfn_referenced;
  napi_ref handler;               // the JS event sink (setEventHandler), or NULL

  uint64_t session;               // bumped at each logout: tells a request's session apart
  pending_req *pending;
  napi_deferred login_deferred;
  uint64_t login_session;
  napi_deferred logout_deferred;  // settled once the ended session's events were dispatched
  stashed_event *stash_head, *stash_tail;
  bool finishing_session;         // a logout happened: reject the old session's leftovers
  bool has_server;                // init() was given a server address (there is no default)
} env_state;

// ---- small helpers ------------------------------------------------------------------------------

// The SDK code ArkTS sees for a C ABI result: the C boundary's own failures (NULL argument, bad
// UTF-8, panic: 1001 and up, numbers the SDK uses for other things) become GENERAL_ERROR; the
// description still says what happened.
static int sdk_code(rcpt_result r) {
  return (unsigned)r >= (unsigned)RCPT_NULL_ARGUMENT ? ERR_GENERAL_ERROR : (int)r;
}

static napi_value make_error(napi_env env, int code, const char *description) {
  napi_value obj = NULL, c = NULL, d = NULL;
  napi_create_object(env, &obj);
  napi_create_int32(env, code, &c);
  napi_create_string_utf8(env, description ? description : "", NAPI_AUTO_LENGTH, &d);
  napi_set_named_property(env, obj, "code", c);
  napi_set_named_property(env, obj, "description", d);
  return obj;
}

static napi_value undefined_value(napi_env env) {
  napi_value u = NULL;
  napi_get_undefined(env, &u);
  return u;
}

// Throws `{code, description}`; returns NULL for the caller to return.
static napi_value throw_error(napi_env env, int code, const char *description) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) {
    napi_throw(env, make_error(env, code, description));
  }
  return NULL;
}

// The description of the C ABI's last failure on this thread, copied into buf.
static const char *last_error(char *buf, size_t len, rcpt_result r) {
  const char *e = rcpt_last_error();
  if (e != NULL && e[0] != '\0') {
    snprintf(buf, len, "%s", e);
  } else {
    snprintf(buf, len, "receipt error %u", (unsigned)r);
  }
  return buf;
}

static napi_value throw_rcpt(napi_env env, rcpt_result r) {
  char buf[512];
  return throw_error(env, sdk_code(r), last_error(buf, sizeof buf, r));
}

// A promise already rejected with `{code, description}`.
static napi_value rejected(napi_env env, int code, const char *description) {
  napi_deferred d = NULL;
  napi_value p = NULL;
  if (napi_create_promise(env, &d, &p) != napi_ok) {
    return throw_error(env, ERR_GENERAL_ERROR, "napi_create_promise failed");
  }
  napi_reject_deferred(env, d, make_error(env, code, description));
  return p;
}

static napi_value rejected_rcpt(napi_env env, rcpt_result r) {
  char buf[512];
  return rejected(env, sdk_code(r), last_error(buf, sizeof buf, r));
}

static void set_str(napi_env env, napi_value obj, const char *key, const char *s) {
  napi_value v = NULL;
  napi_create_string_utf8(env, s ? s : "", NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, obj, key, v);
}

static void set_u32(napi_env env, napi_value obj, const char *key, uint32_t n) {
  napi_value v = NULL;
  napi_create_uint32(env, n, &v);
  napi_set_named_property(env, obj, key, v);
}

static void set_i32(napi_env env, napi_value obj, const char *key, int32_t n) {
  napi_value v = NULL;
  napi_create_int32(env, n, &v);
  napi_set_named_property(env, obj, key, v);
}

static void set_u64(napi_env env, napi_value obj, const char *key, uint64_t n) {
  napi_value v = NULL;
  napi_create_double(env, (double)n, &v);
  napi_set_named_property(env, obj, key, v);
}

static void set_bool(napi_env env, napi_value obj, const char *key, bool b) {
  napi_value v = NULL;
  napi_get_boolean(env, b, &v);
  napi_set_named_property(env, obj, key, v);
}

// ---- argument reading ---------------------------------------------------------------------------

// Reads a JS string into a malloc'd NUL-terminated UTF-8 buffer. NULL (and *why set) when `v` is
// not a string, holds a NUL character, or (allow_empty false) is empty.
static char *get_string(napi_env env, napi_value v, bool allow_empty, const char **why) {
  napi_valuetype t = napi_undefined;
  if (v == NULL || napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
    *why = "must be a string";
    return NULL;
  }
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    *why = "must be a string";
    return NULL;
  }
  if (len == 0 && !allow_empty) {
    *why = "must be a non-empty string";
    return NULL;
  }
  char *buf = malloc(len + 1);
  if (buf == NULL) {
    *why = "out of memory";
    return NULL;
  }
  size_t copied = 0;
  if (napi_get_value_string_utf8(env, v, buf, len + 1, &copied) != napi_ok) {
    free(buf);
    *why = "must be a string";
    return NULL;
  }
  buf[copied] = '\0';
  if (strlen(buf) != copied) {
    free(buf);
    *why = "must not contain NUL characters";
    return NULL;
  }
  return buf;
}

static bool get_bool(napi_env env, napi_value v, bool *out) {
  napi_valuetype t = napi_undefined;
  if (v == NULL || napi_typeof(env, v, &t) != napi_ok || t != napi_boolean) {
    return false;
  }
  return napi_get_value_bool(env, v, out) == napi_ok;
}

// An optional boolean property of `obj`: absent or undefined leaves *out; anything else but a
// boolean is false (a wrong type).
static bool get_opt_bool(napi_env env, napi_value obj, const char *name, bool *out) {
  napi_value v = NULL;
  napi_valuetype t = napi_undefined;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok) {
    return false;
  }
  return t == napi_undefined || get_bool(env, v, out);
}

// An integral JS number in [lo, hi].
static bool get_int(napi_env env, napi_value v, double lo, double hi, int64_t *out) {
  napi_valuetype t = napi_undefined;
  double d = 0;
  if (v == NULL || napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
    return false;
  }
  if (napi_get_value_double(env, v, &d) != napi_ok) {
    return false;
  }
  if (!(d >= lo && d <= hi) || d != (double)(int64_t)d) {
    return false;  // NaN, infinities, fractions, out of range
  }
  *out = (int64_t)d;
  return true;
}

static void free_strings(char **v, size_t n) {
  if (v == NULL) {
    return;
  }
  for (size_t i = 0; i < n; i++) {
    free(v[i]);
  }
  free(v);
}

// Reads an array of non-empty strings. NULL with *why set on error (*n = 0 for an empty array,
// which returns a non-NULL allocation).
static char **get_string_array(napi_env env, napi_value v, size_t *n, const char **why) {
  bool is_array = false;
  uint32_t len = 0;
  *n = 0;
  if (v == NULL || napi_is_array(env, v, &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, v, &len) != napi_ok) {
    *why = "must be an array of strings";
    return NULL;
  }
  char **out = calloc((size_t)len + 1, sizeof(char *));
  if (out == NULL) {
    *why = "out of memory";
    return NULL;
  }
  for (uint32_t i = 0; i < len; i++) {
    napi_value item = NULL;
    if (napi_get_element(env, v, i, &item) != napi_ok) {
      free_strings(out, i);
      *why = "must be an array of strings";
      return NULL;
    }
    const char *item_why = NULL;
    out[i] = get_string(env, item, false, &item_why);
    if (out[i] == NULL) {
      free_strings(out, i);
      *why = "must be an array of non-empty strings";
      return NULL;
    }
  }
  *n = len;
  return out;
}

#define MAX_ARGS 5

// Fetches this call's arguments and the env state (the function's data pointer).
static env_state *call_info(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  void *data = NULL;
  size_t n = MAX_ARGS;
  napi_value tmp[MAX_ARGS];
  if (napi_get_cb_info(env, info, &n, tmp, NULL, &data) != napi_ok) {
    return NULL;
  }
  for (size_t i = 0; i < MAX_ARGS; i++) {
    argv[i] = i < n ? tmp[i] : NULL;
  }
  *argc = n;
  return (env_state *)data;
}

// ---- event-loop reference and pending requests --------------------------------------------------

static bool has_pending_work(const env_state *s) {
  return s->pending != NULL || s->login_deferred != NULL || s->logout_deferred != NULL ||
         s->stash_head != NULL;
}

// Keeps the event loop alive while a promise waits for the server; lets it go when idle.
static void update_loop_ref(env_state *s) {
  bool want = has_pending_work(s);
  if (want && !s->tsfn_referenced) {
    if (napi_ref_threadsafe_function(s->env, s->tsfn) == napi_ok) {
      s->tsfn_referenced = true;
    }
  } else if (!want && s->tsfn_referenced) {
    if (napi_unref_threadsafe_function(s->env, s->tsfn) == napi_ok) {
      s->tsfn_referenced = false;
    }
  }
}

// Asks for a poll on the JS thread. Safe on any thread; coalesced.
static void schedule_poll(env_state *s) {
  if (!atomic_exchange(&s->poll_scheduled, true)) {
    if (napi_call_threadsafe_function(s->tsfn, NULL, napi_tsfn_nonblocking) != napi_ok) {
      // Closing (env teardown): nothing will run any more.
      atomic_store(&s->poll_scheduled, false);
    }
  }
}

// rcpt_client_set_wakeup's callback: runs on a Rust thread (or on the JS thread during a call).
// It must only schedule the poll.
static void on_wakeup(void *user_data) {
  schedule_poll((env_state *)user_data);
}

// Returns a promise settled by the REQUEST_COMPLETED event of `req` (resolved at once when req is
// 0: nothing was sent because nothing was needed).
static napi_value track_request(env_state *s, uint64_t req, pending_kind kind) {
  napi_env env = s->env;
  napi_deferred d = NULL;
  napi_value p = NULL;
  if (napi_create_promise(env, &d, &p) != napi_ok) {
    return throw_error(env, ERR_GENERAL_ERROR, "napi_create_promise failed");
  }
  if (req == 0) {
    napi_resolve_deferred(env, d, undefined_value(env));
    return p;
  }
  pending_req *r = calloc(1, sizeof *r);
  if (r == NULL) {
    napi_reject_deferred(env, d, make_error(env, ERR_GENERAL_ERROR, "out of memory"));
    return p;
  }
  r->req = req;
  r->session = s->session;
  r->kind = kind;
  r->deferred = d;
  r->next = s->pending;
  s->pending = r;
  update_loop_ref(s);
  return p;
}

static pending_req *take_request(env_state *s, uint64_t session, uint64_t req) {
  for (pending_req **pp = &s->pending; *pp != NULL; pp = &(*pp)->next) {
    if ((*pp)->req == req && (*pp)->session == session) {
      pending_req *r = *pp;
      *pp = r->next;
      return r;
    }
  }
  return NULL;
}

// ---- C ABI objects -> JS ------------------------------------------------------------------------

static napi_value message_to_js(napi_env env, const rcpt_message *m) {
  napi_value o = NULL;
  napi_create_object(env, &o);
  set_str(env, o, "msgId", rcpt_message_id(m));
  set_str(env, o, "clientId", rcpt_message_client_id(m));
  set_str(env, o, "from", rcpt_message_from(m));
  set_str(env, o, "to", rcpt_message_to(m));
  set_str(env, o, "conversationId", rcpt_message_conversation_id(m));
  set_i32(env, o, "chatType", (int32_t)rcpt_message_chat_type(m));
  set_i32(env, o, "direction", (int32_t)rcpt_message_direction(m));
  set_str(env, o, "content", rcpt_message_content(m));
  set_u64(env, o, "timestamp", rcpt_message_timestamp(m));
  set_i32(env, o, "status", (int32_t)rcpt_message_status(m));
  set_bool(env, o, "requireDeliveryAck", rcpt_message_require_delivery_ack(m));
  set_bool(env, o, "needGroupAck", rcpt_message_need_group_ack(m));
  set_bool(env, o, "delivered", rcpt_message_is_delivered(m));
  set_bool(env, o, "receiverRead", rcpt_message_is_receiver_read(m));
  set_bool(env, o, "unread", rcpt_message_is_unread(m));
  set_u32(env, o, "groupAckCount", rcpt_message_group_ack_count(m));
  set_bool(env, o, "groupAckSent", rcpt_message_group_ack_sent(m));
  set_bool(env, o, "needGroupDeliveryAck", rcpt_message_need_group_delivery_ack(m));
  set_u32(env, o, "groupDeliveredCount", rcpt_message_group_delivered_count(m));
  return o;
}

static napi_value ack_to_js(napi_env env, const rcpt_group_read_ack *a) {
  napi_value o = NULL;
  napi_create_object(env, &o);
  set_str(env, o, "ackId", rcpt_group_read_ack_id(a));
  set_str(env, o, "msgId", rcpt_group_read_ack_msg_id(a));
  set_str(env, o, "from", rcpt_group_read_ack_from(a));
  set_str(env, o, "content", rcpt_group_read_ack_content(a));
  set_u32(env, o, "count", rcpt_group_read_ack_count(a));
  set_u64(env, o, "timestamp", rcpt_group_read_ack_timestamp(a));
  return o;
}

static napi_value event_messages(napi_env env, const rcpt_event *ev) {
  size_t n = rcpt_event_message_count(ev);
  napi_value arr = NULL;
  napi_create_array_with_length(env, n, &arr);
  uint32_t j = 0;
  for (size_t i = 0; i < n; i++) {
    const rcpt_message *m = rcpt_event_message_at(ev, i);
    if (m != NULL) {
      napi_set_element(env, arr, j++, message_to_js(env, m));
    }
  }
  return arr;
}

static napi_value event_acks(napi_env env, const rcpt_event *ev) {
  size_t n = rcpt_event_ack_count(ev);
  napi_value arr = NULL;
  napi_create_array_with_length(env, n, &arr);
  uint32_t j = 0;
  for (size_t i = 0; i < n; i++) {
    const rcpt_group_read_ack *a = rcpt_event_ack_at(ev, i);
    if (a != NULL) {
      napi_set_element(env, arr, j++, ack_to_js(env, a));
    }
  }
  return arr;
}

static napi_value event_error(napi_env env, const rcpt_event *ev) {
  return make_error(env, sdk_code(rcpt_event_error_code(ev)), rcpt_event_error_message(ev));
}

// ---- event dispatch (JS thread) -----------------------------------------------------------------

static void settle_request(env_state *s, const rcpt_event *ev, uint64_t session) {
  napi_env env = s->env;
  pending_req *r = take_request(s, session, rcpt_event_request_id(ev));
  if (r == NULL) {
    return;  // a request whose promise was already settled, or not ours
  }
  if (rcpt_event_error_code(ev) != RCPT_OK) {
    napi_reject_deferred(env, r->deferred, event_error(env, ev));
  } else {
    napi_value v = NULL;
    switch (r->kind) {
      case PENDING_MESSAGE: {
        const rcpt_message *m = rcpt_event_message_count(ev) > 0 ? rcpt_event_message_at(ev, 0) : NULL;
        v = m != NULL ? message_to_js(env, m) : undefined_value(env);
        break;
      }
      case PENDING_ACKS: {
        napi_create_object(env, &v);
        napi_set_named_property(env, v, "data", event_acks(env, ev));
        set_str(env, v, "cursor", rcpt_event_cursor(ev));
        break;
      }
      case PENDING_GROUP_ID: {
        napi_create_string_utf8(env, rcpt_event_group_id(ev), NAPI_AUTO_LENGTH, &v);
        break;
      }
      case PENDING_MEMBERS: {
        napi_value arr = NULL;
        size_t n = rcpt_event_member_count(ev);
        napi_create_object(env, &v);
        napi_create_array_with_length(env, n, &arr);
        for (size_t i = 0; i < n; i++) {
          napi_value m = NULL;
          napi_create_string_utf8(env, rcpt_event_member_at(ev, i), NAPI_AUTO_LENGTH, &m);
          napi_set_element(env, arr, (uint32_t)i, m);
        }
        napi_set_named_property(env, v, "data", arr);
        set_str(env, v, "cursor", rcpt_event_cursor(ev));
        break;
      }
      case PENDING_ITEMS: {
        size_t n = rcpt_event_item_count(ev);
        napi_create_array_with_length(env, n, &v);
        for (size_t i = 0; i < n; i++) {
          napi_value o = NULL;
          napi_create_object(env, &o);
          set_str(env, o, "msgId", rcpt_event_item_msg_id(ev, i));
          set_u32(env, o, "count", rcpt_event_item_read_count(ev, i));
          rcpt_result code = rcpt_event_item_error_code(ev, i);
          set_u32(env, o, "code", code == RCPT_OK ? 0u : (uint32_t)sdk_code(code));
          set_str(env, o, "description", rcpt_event_item_error_message(ev, i));
          napi_set_element(env, v, (uint32_t)i, o);
        }
        break;
      }
      default:
        v = undefined_value(env);
        break;
    }
    napi_resolve_deferred(env, r->deferred, v);
  }
  free(r);
}

// Moves every queued event of the client into the stash (they belong to the session that ends).
static void stash_queued_events(env_state *s) {
  for (;;) {
    rcpt_event *ev = NULL;
    if (rcpt_client_poll_event(s->client, &ev) != RCPT_OK || ev == NULL) {
      return;
    }
    stashed_event *e = calloc(1, sizeof *e);
    if (e == NULL) {
      rcpt_event_free(ev);
      continue;
    }
    e->ev = ev;
    e->session = s->session;
    if (s->stash_tail != NULL) {
      s->stash_tail->next = e;
    } else {
      s->stash_head = e;
    }
    s->stash_tail = e;
  }
}

// Ends the current session on the native side (logout, or a refused login): stashes its queued
// events and starts a new session generation; its leftovers are settled in finish_old_sessions.
static rcpt_result end_session(env_state *s) {
  rcpt_result r = rcpt_client_logout(s->client);
  if (r == RCPT_OK) {
    stash_queued_events(s);
    s->session++;
    s->finishing_session = true;
    schedule_poll(s);
  }
  return r;
}

// After the ended session's events were dispatched: its requests will get no answer any more.
static void finish_old_sessions(env_state *s) {
  napi_env env = s->env;
  if (!s->finishing_session) {
    return;
  }
  s->finishing_session = false;
  for (pending_req **pp = &s->pending; *pp != NULL;) {
    pending_req *r = *pp;
    if (r->session != s->session) {
      *pp = r->next;
      napi_reject_deferred(env, r->deferred,
                           make_error(env, ERR_USER_NOT_LOGIN,
                                      "logged out before the server answered (acks stay queued and are sent at the next login)"));
      free(r);
    } else {
      pp = &r->next;
    }
  }
  if (s->login_deferred != NULL && s->login_session != s->session) {
    napi_reject_deferred(env, s->login_deferred, make_error(env, ERR_USER_NOT_LOGIN, "logged out before the login completed"));
    s->login_deferred = NULL;
  }
  if (s->logout_deferred != NULL) {
    napi_resolve_deferred(env, s->logout_deferred, undefined_value(env));
    s->logout_deferred = NULL;
  }
}

// Builds the NativeEvent for `ev` (NULL when the event is not for the handler) and settles what
// the event settles. `session`: the generation the event belongs to.
static napi_value dispatch_native(env_state *s, const rcpt_event *ev, uint64_t session, bool *end_after) {
  napi_env env = s->env;
  napi_value o = NULL;
  bool live = session == s->session;
  // (uint32_t: rcpt_event_kind is both the accessor's and the enum's name in the C ABI.)
  uint32_t kind = (uint32_t)rcpt_event_kind(ev);
  switch (kind) {
    case RCPT_EVENT_CONNECTED:
      if (s->login_deferred != NULL && s->login_session == session) {
        napi_resolve_deferred(env, s->login_deferred, undefined_value(env));
        s->login_deferred = NULL;
      }
      napi_create_object(env, &o);
      set_str(env, o, "kind", "connected");
      break;
    case RCPT_EVENT_DISCONNECTED:
      napi_create_object(env, &o);
      set_str(env, o, "kind", "disconnected");
      set_i32(env, o, "code", (int32_t)sdk_code(rcpt_event_error_code(ev)));
      break;
    // The connection and token lifecycle (ConnectionListener).
    case RCPT_EVENT_DATABASE_OPENED:
      // An offline start: the login counts as done now (the connection is retried meanwhile).
      if (rcpt_event_offline_start(ev) && s->login_deferred != NULL && s->login_session == session) {
        napi_resolve_deferred(env, s->login_deferred, undefined_value(env));
        s->login_deferred = NULL;
      }
      napi_create_object(env, &o);
      set_str(env, o, "kind", "databaseOpened");
      set_str(env, o, "from", rcpt_event_from(ev));
      break;
    case RCPT_EVENT_OFFLINE_SYNC_START:
    case RCPT_EVENT_OFFLINE_SYNC_FINISH:
    case RCPT_EVENT_TOKEN_WILL_EXPIRE:
    case RCPT_EVENT_TOKEN_EXPIRED:
      napi_create_object(env, &o);
      set_str(env, o, "kind",
              kind == RCPT_EVENT_OFFLINE_SYNC_START    ? "offlineSyncStart"
              : kind == RCPT_EVENT_OFFLINE_SYNC_FINISH ? "offlineSyncFinish"
              : kind == RCPT_EVENT_TOKEN_WILL_EXPIRE   ? "tokenWillExpire"
                                                       : "tokenExpired");
      break;
    case RCPT_EVENT_LOGGED_OUT:
      // The session is over (refused after an offline start, or replaced: 206), as after a
      // refused login: settle a pending login and end the session on this side too.
      if (s->login_deferred != NULL && s->login_session == session) {
        napi_reject_deferred(env, s->login_deferred, event_error(env, ev));
        s->login_deferred = NULL;
      }
      if (live) {
        *end_after = true;
      }
      napi_create_object(env, &o);
      set_str(env, o, "kind", "loggedOut");
      set_i32(env, o, "code", (int32_t)sdk_code(rcpt_event_error_code(ev)));
      set_str(env, o, "description", rcpt_event_error_message(ev));
      break;
    case RCPT_EVENT_LOGIN_FAILED:
      if (s->login_deferred != NULL && s->login_session == session) {
        napi_reject_deferred(env, s->login_deferred, event_error(env, ev));
        s->login_deferred = NULL;
      }
      // The session is dead (the runtime does not retry a refused token): log it out so that
      // currentUser() says "" and a new login can start.
      if (live) {
        *end_after = true;
      }
      napi_create_object(env, &o);
      set_str(env, o, "kind", "disconnected");
      set_i32(env, o, "code", (int32_t)sdk_code(rcpt_event_error_code(ev)));
      set_str(env, o, "description", rcpt_event_error_message(ev));
      break;
    case RCPT_EVENT_PROTOCOL_ERROR:
      napi_create_object(env, &o);
      set_str(env, o, "kind", "disconnected");
      set_i32(env, o, "code", (int32_t)sdk_code(rcpt_event_error_code(ev)));
      set_str(env, o, "description", rcpt_event_error_message(ev));
      break;
    case RCPT_EVENT_MESSAGES_RECEIVED:
    case RCPT_EVENT_MESSAGES_DELIVERED:
    case RCPT_EVENT_MESSAGES_READ: {
      napi_create_object(env, &o);
      set_str(env, o, "kind",
              kind == RCPT_EVENT_MESSAGES_RECEIVED   ? "received"
              : kind == RCPT_EVENT_MESSAGES_DELIVERED ? "delivered"
                                                      : "read");
      napi_set_named_property(env, o, "messages", event_messages(env, ev));
      break;
    }
    case RCPT_EVENT_GROUP_MESSAGE_READ:
    case RCPT_EVENT_GROUP_MESSAGE_DELIVERED:
      napi_create_object(env, &o);
      set_str(env, o, "kind", kind == RCPT_EVENT_GROUP_MESSAGE_READ ? "groupRead" : "groupDelivered");
      napi_set_named_property(env, o, "acks", event_acks(env, ev));
      break;
    case RCPT_EVENT_CONVERSATION_READ:
      napi_create_object(env, &o);
      set_str(env, o, "kind", "conversationRead");
      set_str(env, o, "from", rcpt_event_from(ev));
      set_str(env, o, "to", rcpt_event_to(ev));
      break;
    case RCPT_EVENT_UNREAD_COUNT_CHANGED:
      napi_create_object(env, &o);
      set_str(env, o, "kind", "unreadChanged");
      set_str(env, o, "conversationId", rcpt_event_conversation_id(ev));
      set_i32(env, o, "chatType", (int32_t)rcpt_event_chat_type(ev));
      set_u32(env, o, "unread", rcpt_event_unread(ev));
      break;
    case RCPT_EVENT_MESSAGES_UPDATED:
      // Messages whose own flags changed, in their current state: ArkTS applies them as they are.
      napi_create_object(env, &o);
      set_str(env, o, "kind", "messagesUpdated");
      napi_set_named_property(env, o, "messages", event_messages(env, ev));
      break;
    case RCPT_EVENT_READ_ACK_FOR_GROUP_MESSAGE_UPDATED:
      // A large group's coalesced read counts went up: the messages in their new state.
      napi_create_object(env, &o);
      set_str(env, o, "kind", "groupReadCountUpdated");
      napi_set_named_property(env, o, "messages", event_messages(env, ev));
      break;
    case RCPT_EVENT_CONVERSATION_UPDATED:
      // A conversation's marks moved: ArkTS re-reads the messages of it that it holds.
      napi_create_object(env, &o);
      set_str(env, o, "kind", "conversationUpdated");
      set_str(env, o, "conversationId", rcpt_event_conversation_id(ev));
      set_i32(env, o, "chatType", (int32_t)rcpt_event_chat_type(ev));
      set_u32(env, o, "unread", rcpt_event_unread(ev));
      set_str(env, o, "readUpTo", rcpt_event_read_up_to(ev));
      set_str(env, o, "receiptUpTo", rcpt_event_receipt_up_to(ev));
      set_str(env, o, "peerReadUpTo", rcpt_event_peer_read_up_to(ev));
      break;
    case RCPT_EVENT_REQUEST_COMPLETED:
      settle_request(s, ev, session);
      break;
    case RCPT_EVENT_MEMBERSHIP_CHANGED:
      napi_create_object(env, &o);
      set_str(env, o, "kind", "membershipChanged");
      set_str(env, o, "conversationId", rcpt_event_group_id(ev));
      break;
    case RCPT_EVENT_STORE_FAILED:
      napi_create_object(env, &o);
      set_str(env, o, "kind", "storeFailed");
      set_i32(env, o, "code", (int32_t)sdk_code(rcpt_event_error_code(ev)));
      set_str(env, o, "description", rcpt_event_error_message(ev));
      break;
    default:
      break;
  }
  return o;
}

// Calls the JS handler with `event`. false when it threw (the exception stays pending).
static bool call_handler(env_state *s, napi_value event) {
  napi_env env = s->env;
  napi_value fn = NULL, global = NULL, ret = NULL;
  if (s->handler == NULL || napi_get_reference_value(env, s->handler, &fn) != napi_ok || fn == NULL) {
    return true;
  }
  napi_get_global(env, &global);
  napi_status st = napi_call_function(env, global, fn, 1, &event, &ret);
  if (st == napi_pending_exception) {
    return false;
  }
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  return !pending;
}

// The threadsafe function's call_js: JS thread. Drains the stashed events of ended sessions, then
// the client's queue.
static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)js_cb;
  (void)data;
  env_state *s = (env_state *)context;
  if (env == NULL || s == NULL) {
    return;  // env teardown: the queue is being dropped
  }
  atomic_store(&s->poll_scheduled, false);
  for (;;) {
    rcpt_event *ev = NULL;
    uint64_t session = s->session;
    if (s->stash_head != NULL) {
      stashed_event *e = s->stash_head;
      s->stash_head = e->next;
      if (s->stash_head == NULL) {
        s->stash_tail = NULL;
      }
      ev = e->ev;
      session = e->session;
      free(e);
    } else {
      finish_old_sessions(s);
      if (s->client == NULL || rcpt_client_poll_event(s->client, &ev) != RCPT_OK || ev == NULL) {
        break;
      }
    }
    napi_handle_scope scope = NULL;
    napi_open_handle_scope(env, &scope);
    bool end_after = false;
    napi_value obj = dispatch_native(s, ev, session, &end_after);
    bool ok = obj == NULL || call_handler(s, obj);
    napi_close_handle_scope(env, scope);
    rcpt_event_free(ev);
    if (end_after && s->client != NULL) {
      end_session(s);
    }
    if (!ok) {
      // The handler threw: let the exception surface (uncaught) and poll the rest next turn.
      schedule_poll(s);
      break;
    }
  }
  update_loop_ref(s);
}

// The threadsafe function's finalizer: the env is going away (worker exit, process teardown).
static void env_teardown(napi_env env, void *finalize_data, void *hint) {
  (void)hint;
  env_state *s = (env_state *)finalize_data;
  if (s == NULL) {
    return;
  }
  while (s->stash_head != NULL) {
    stashed_event *e = s->stash_head;
    s->stash_head = e->next;
    rcpt_event_free(e->ev);
    free(e);
  }
  if (s->client != NULL) {
    rcpt_client_set_wakeup(s->client, NULL, NULL);
    rcpt_client_free(s->client);  // logs out, joins the connection thread: no wakeup after this
    s->client = NULL;
  }
  if (s->handler != NULL && env != NULL) {
    napi_delete_reference(env, s->handler);
  }
  s->handler = NULL;
  // Promises still pending die with the env (nothing can observe them any more).
  while (s->pending != NULL) {
    pending_req *r = s->pending;
    s->pending = r->next;
    free(r);
  }
  free(s);
}

// ---- exported functions -------------------------------------------------------------------------

#define ARGS(n)                                          \
  size_t argc = 0;                                       \
  napi_value argv[MAX_ARGS];                             \
  env_state *s = call_info(env, info, &argc, argv);      \
  (void)argc;                                            \
  if (s == NULL) {                                       \
    return throw_error(env, ERR_GENERAL_ERROR, "bad call");    \
  }

static napi_value invalid_arg_throw(napi_env env, const char *name, const char *why) {
  char buf[256];
  snprintf(buf, sizeof buf, "invalid parameter: %s %s", name, why);
  return throw_error(env, ERR_INVALID_PARAM, buf);
}

static napi_value invalid_arg_reject(napi_env env, const char *name, const char *why) {
  char buf[256];
  snprintf(buf, sizeof buf, "invalid parameter: %s %s", name, why);
  return rejected(env, ERR_INVALID_PARAM, buf);
}

static napi_value not_initialized_reject(napi_env env) {
  return rejected(env, ERR_GENERAL_ERROR, "init() was not called");
}

// The optional history settings of init()'s options: messageCacheSize (1..2^32-1),
// retentionMaxAgeMs (0: none, up to 2^53-1) and retentionMaxPerConversation (0: none, up to
// 2^32-1). Absent (undefined or null): the C ABI's defaults.
typedef struct {
  int64_t value[3];
  bool set[3];
} history_settings;

static const char *history_fields[] = {"options.messageCacheSize", "options.retentionMaxAgeMs",
                                       "options.retentionMaxPerConversation"};

// Reads them from `options`; NULL, or the name of the field that is not an integer in range.
static const char *read_history_options(napi_env env, napi_value options, history_settings *h) {
  static const char *props[] = {"messageCacheSize", "retentionMaxAgeMs", "retentionMaxPerConversation"};
  static const double lo[] = {1, 0, 0};
  static const double hi[] = {4294967295.0, 9007199254740991.0, 4294967295.0};
  for (size_t i = 0; i < 3; i++) {
    napi_value v = NULL;
    napi_valuetype t = napi_undefined;
    h->value[i] = 0;
    h->set[i] = false;
    if (napi_get_named_property(env, options, props[i], &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok ||
        t == napi_undefined || t == napi_null) {
      continue;
    }
    if (!get_int(env, v, lo[i], hi[i], &h->value[i])) {
      return history_fields[i];
    }
    h->set[i] = true;
  }
  return NULL;
}

static rcpt_result apply_history_options(rcpt_options *o, const history_settings *h) {
  rcpt_result r = RCPT_OK;
  if (h->set[0]) r = rcpt_options_set_message_cache(o, (uint32_t)h->value[0]);
  if (r == RCPT_OK && (h->set[1] || h->set[2])) {
    r = rcpt_options_set_retention(o, (uint64_t)h->value[1], (uint32_t)h->value[2]);
  }
  return r;
}

// init(options: NativeOptions): void
static rcpt_result tls_options(napi_env env, napi_value options, rcpt_options *o, const char **field);

static napi_value js_init(napi_env env, napi_callback_info info) {
  ARGS(1);
  if (s->client != NULL) {
    return throw_error(env, ERR_GENERAL_ERROR, "init() was already called in this env");
  }
  napi_valuetype t = napi_undefined;
  if (argv[0] == NULL || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_object) {
    return invalid_arg_throw(env, "options", "must be an object");
  }
  napi_value v = NULL;
  bool delivery = false, read = true;
  int64_t port = 0;
  const char *why = NULL;
  if (napi_get_named_property(env, argv[0], "requireDeliveryAck", &v) != napi_ok || !get_bool(env, v, &delivery)) {
    return invalid_arg_throw(env, "options.requireDeliveryAck", "must be a boolean");
  }
  if (napi_get_named_property(env, argv[0], "requireReadAck", &v) != napi_ok || !get_bool(env, v, &read)) {
    return invalid_arg_throw(env, "options.requireReadAck", "must be a boolean");
  }
  bool private_read = false;
  if (!get_opt_bool(env, argv[0], "privateReadReceipts", &private_read)) {
    return invalid_arg_throw(env, "options.privateReadReceipts", "must be a boolean");
  }
  // No default address (on a phone 127.0.0.1 is the phone): "" and 0 mean "not set", and login()
  // then fails with SERVER_NOT_REACHABLE saying so.
  if (napi_get_named_property(env, argv[0], "port", &v) != napi_ok || !get_int(env, v, 0, 65535, &port)) {
    return invalid_arg_throw(env, "options.port", "must be an integer in 1..65535, or 0 for none");
  }
  if (napi_get_named_property(env, argv[0], "server", &v) != napi_ok) {
    return invalid_arg_throw(env, "options.server", "must be a string");
  }
  char *server = get_string(env, v, true, &why);
  if (server == NULL) {
    return invalid_arg_throw(env, "options.server", why);
  }
  bool has_server = server[0] != '\0' && port > 0;
  if (!has_server && (server[0] != '\0' || port > 0)) {
    free(server);
    return invalid_arg_throw(env, "options.server", "set both the host and the port, or neither");
  }
  if (napi_get_named_property(env, argv[0], "dataDir", &v) != napi_ok) {
    free(server);
    return invalid_arg_throw(env, "options.dataDir", "must be a non-empty string");
  }
  char *data_dir = get_string(env, v, false, &why);
  if (data_dir == NULL) {
    free(server);
    return invalid_arg_throw(env, "options.dataDir", why);
  }

  history_settings history;
  const char *bad_history = read_history_options(env, argv[0], &history);
  if (bad_history != NULL) {
    free(server);
    free(data_dir);
    return invalid_arg_throw(env, bad_history, "must be an integer in range (see NativeOptions)");
  }

  rcpt_options *o = rcpt_options_new();
  if (o == NULL) {
    free(server);
    free(data_dir);
    return throw_error(env, ERR_GENERAL_ERROR, "rcpt_options_new failed");
  }
  rcpt_result r = rcpt_options_set_require_delivery_ack(o, delivery);
  if (r == RCPT_OK) r = rcpt_options_set_require_read_ack(o, read);
  if (r == RCPT_OK) r = rcpt_options_set_private_read_receipts(o, private_read);
  if (r == RCPT_OK && has_server) r = rcpt_options_set_server(o, server, (uint16_t)port);
  if (r == RCPT_OK) r = rcpt_options_set_data_dir(o, data_dir);
  const char *tls_field = NULL;
  if (r == RCPT_OK) r = tls_options(env, argv[0], o, &tls_field);
  if (r == RCPT_OK) r = apply_history_options(o, &history);
  rcpt_client *c = NULL;
  if (r == RCPT_OK) r = rcpt_client_new(o, &c);
  char buf[512];
  if (r != RCPT_OK) {
    last_error(buf, sizeof buf, r);
    if (tls_field != NULL) {
      char detail[600];
      snprintf(detail, sizeof detail, "options.%s: %s", tls_field, buf);
      snprintf(buf, sizeof buf, "%.500s", detail);
    }
  }
  rcpt_options_free(o);
  free(server);
  free(data_dir);
  if (r != RCPT_OK) {
    rcpt_client_free(c);
    return throw_error(env, sdk_code(r), buf);
  }
  s->client = c;
  s->has_server = has_server;
  rcpt_client_set_wakeup(c, on_wakeup, s);
  schedule_poll(s);  // anything queued before the wakeup was set
  return undefined_value(env);
}

// setEventHandler(handler: (event: NativeEvent) => void): void
static napi_value js_set_event_handler(napi_env env, napi_callback_info info) {
  ARGS(1);
  napi_valuetype t = napi_undefined;
  if (argv[0] == NULL || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_function) {
    return invalid_arg_throw(env, "handler", "must be a function");
  }
  napi_ref ref = NULL;
  if (napi_create_reference(env, argv[0], 1, &ref) != napi_ok) {
    return throw_error(env, ERR_GENERAL_ERROR, "napi_create_reference failed");
  }
  if (s->handler != NULL) {
    napi_delete_reference(env, s->handler);
  }
  s->handler = ref;
  return undefined_value(env);
}

// login(userId: string, token: string): Promise<void>
static napi_value js_login(napi_env env, napi_callback_info info) {
  ARGS(2);
  if (s->client == NULL) {
    return not_initialized_reject(env);
  }
  if (!s->has_server) {
    return rejected(env, RCPT_SERVER_NOT_REACHABLE,
                    "no server address: set ChatOptions.setIMServer(host) and setImPort(port) before init()");
  }
  const char *why = NULL;
  char *user = get_string(env, argv[0], false, &why);
  if (user == NULL) {
    return invalid_arg_reject(env, "userId", why);
  }
  char *token = get_string(env, argv[1], true, &why);
  if (token == NULL) {
    free(user);
    return invalid_arg_reject(env, "token", why);
  }
  if (s->login_deferred != NULL && s->login_session != s->session) {
    // The login of a session that was logged out since (its events not dispatched yet).
    napi_reject_deferred(env, s->login_deferred, make_error(env, ERR_USER_NOT_LOGIN, "logged out before the login completed"));
    s->login_deferred = NULL;
  }
  if (s->login_deferred != NULL) {
    free(user);
    free(token);
    return rejected(env, RCPT_USER_ALREADY_LOGIN, "a login is already in progress");
  }
  rcpt_result r = rcpt_client_login(s->client, user, token);
  free(user);
  free(token);
  if (r != RCPT_OK) {
    return rejected_rcpt(env, r);
  }
  napi_value p = NULL;
  if (napi_create_promise(env, &s->login_deferred, &p) != napi_ok) {
    return throw_error(env, ERR_GENERAL_ERROR, "napi_create_promise failed");
  }
  s->login_session = s->session;
  update_loop_ref(s);
  return p;
}

// logout(): Promise<void> -- resolves once every event of the ended session was dispatched.
static napi_value js_logout(napi_env env, napi_callback_info info) {
  ARGS(0);
  if (s->client == NULL) {
    return not_initialized_reject(env);
  }
  if (s->logout_deferred != NULL) {
    return rejected(env, ERR_USER_NOT_LOGIN, "a logout is already in progress");
  }
  rcpt_result r = end_session(s);
  if (r != RCPT_OK) {
    return rejected_rcpt(env, r);
  }
  napi_value p = NULL;
  if (napi_create_promise(env, &s->logout_deferred, &p) != napi_ok) {
    return throw_error(env, ERR_GENERAL_ERROR, "napi_create_promise failed");
  }
  update_loop_ref(s);
  return p;
}

// currentUser(): string ("" when logged out)
static napi_value js_current_user(napi_env env, napi_callback_info info) {
  ARGS(0);
  napi_value v = NULL;
  char *user = NULL;
  if (s->client != NULL && rcpt_client_current_user(s->client, &user) == RCPT_OK && user != NULL) {
    napi_create_string_utf8(env, user, NAPI_AUTO_LENGTH, &v);
    rcpt_string_free(user);
  } else {
    napi_create_string_utf8(env, "", 0, &v);
  }
  return v;
}

// sendMessage(to, chatType, content, needGroupAck, needGroupDeliveryAck?): Promise<NativeMessage>
static napi_value js_send_message(napi_env env, napi_callback_info info) {
  ARGS(5);
  if (s->client == NULL) {
    return not_initialized_reject(env);
  }
  const char *why = NULL;
  int64_t chat_type = 0;
  bool need_group_ack = false;
  bool need_group_delivery_ack = false;
  if (!get_int(env, argv[1], 0, 2, &chat_type)) {
    return invalid_arg_reject(env, "chatType", "must be 0 (Chat), 1 (GroupChat) or 2 (ChatRoom)");
  }
  if (!get_bool(env, argv[3], &need_group_ack)) {
    return invalid_arg_reject(env, "needGroupAck", "must be a boolean");
  }
  napi_valuetype t4 = napi_undefined;
  if (argv[4] != NULL && napi_typeof(env, argv[4], &t4) == napi_ok && t4 != napi_undefined &&
      !get_bool(env, argv[4], &need_group_delivery_ack)) {
    return invalid_arg_reject(env, "needGroupDeliveryAck", "must be a boolean");
  }
  char *to = get_string(env, argv[0], false, &why);
  if (to == NULL) {
    return invalid_arg_reject(env, "to", why);
  }
  char *content = get_string(env, argv[2], true, &why);
  if (content == NULL) {
    free(to);
    return invalid_arg_reject(env, "content", why);
  }
  uint64_t req = 0;
  // Group delivery acks are asked for per group message; the C ABI has its own call for that.
  rcpt_result r = chat_type == RCPT_CHAT_TYPE_GROUP_CHAT
                      ? rcpt_client_send_group_message(s->client, to, content, need_group_ack, need_group_delivery_ack, &req, NULL)
                      : rcpt_client_send_text(s->client, to, (uint32_t)chat_type, content, need_group_ack, &req, NULL);
  free(to);
  free(content);
  if (r != RCPT_OK) {
    return rejected_rcpt(env, r);
  }
  return track_request(s, req, PENDING_MESSAGE);
}

// The optional read-ack mode argument (private reading): undefined is RCPT_READ_ACK_DEFAULT,
// else an integer 0..2 (RCPT_READ_ACK_*); anything else is false (a wrong type).
static bool get_read_mode(napi_env env, size_t argc, napi_value *argv, size_t i, uint32_t *out) {
  *out = RCPT_READ_ACK_DEFAULT;
  napi_valuetype t = napi_undefined;
  if (i >= argc || argv[i] == NULL || (napi_typeof(env, argv[i], &t) == napi_ok && t == napi_undefined)) {
    return true;
  }
  int64_t mode = 0;
  if (!get_int(env, argv[i], RCPT_READ_ACK_DEFAULT, RCPT_READ_ACK_PRIVATE, &mode)) {
    return false;
  }
  *out = (uint32_t)mode;
  return true;
}

#define READ_MODE_WHY "must be 0 (the option), 1 (public) or 2 (private)"

typedef rcpt_result (*mode_id_call)(rcpt_client *, const char *, uint32_t, uint64_t *);

// ackMessageRead / ackConversationRead: one id and an optional read-ack mode.
static napi_value one_id_mode_request(napi_env env, napi_callback_info info, const char *name, mode_id_call f) {
  ARGS(2);
  if (s->client == NULL) {
    return not_initialized_reject(env);
  }
  uint32_t mode = 0;
  if (!get_read_mode(env, argc, argv, 1, &mode)) {
    return invalid_arg_reject(env, "mode", READ_MODE_WHY);
  }
  const char *why = NULL;
  char *id = get_string(env, argv[0], false, &why);
  if (id == NULL) {
    return invalid_arg_reject(env, name, why);
  }
  uint64_t req = 0;
  rcpt_result r = f(s->client, id, mode, &req);
  free(id);
  if (r != RCPT_OK) {
    return rejected_rcpt(env, r);
  }
  return track_request(s, req, PENDING_VOID);
}

typedef rcpt_result (*id_call)(rcpt_client *, const char *, uint64_t *);

static napi_value one_id_request(napi_env env, napi_callback_info info, const char *name, id_call f) {
  ARGS(1);
  if (s->client == NULL) {
    return not_initialized_reject(env);
  }
  const char *why = NULL;
  char *id = get_string(env, argv[0], false, &why);
  if (id == NULL) {
    return invalid_arg_reject(env, name, why);
  }
  uint64_t req = 0;
  rcpt_result r = f(s->client, id, &req);
  free(id);
  if (r != RCPT_OK) {
    return rejected_rcpt(env, r);
  }
  return track_request(s, req, PENDING_VOID);
}

// ackMessageRead(msgId, mode?): Promise<void>
static napi_value js_ack_message_read(napi_env env, napi_callback_info info) {
  return one_id_mode_request(env, info, "msgId", rcpt_client_ack_message_read_mode);
}

// ackConversationRead(conversationId, mode?): Promise<void>
static napi_value js_ack_conversation_read(napi_env env, napi_callback_info info) {
  return one_id_mode_request(env, info, "conversationId", rcpt_client_ack_conversation_read_mode);
}

// markMessageAsRead(msgId): Promise<void>
static napi_value js_mark_message_as_read(napi_env env, napi_callback_info info) {
  return one_id_request(env, info, "msgId", rcpt_client_mark_message_read);
}

// ackGroupMessageRead(msgId, ext, mode?): Promise<void>
static napi_value js_ack_group_message_read(napi_env env, napi_callback_info info) {
  ARGS(3);
  if (s->client == NULL) {
    return not_initialized_reject(env);
  }
  uint32_t mode = 0;
  if (!get_read_mode(env, argc, argv, 2, &mode)) {
    return invalid_arg_reject(env, "mode", READ_MODE_WHY);
  }
  const char *why = NULL;
  char *id = get_string(env, argv[0], false, &why);
  if (id == NULL) {
    return invalid_arg_reject(env, "msgId", why);
  }
  char *ext = NULL;
  napi_valuetype t = napi_undefined;
  if (argv[1] != NULL && napi_typeof(env, argv[1], &t) == napi_ok && t != napi_undefined && t != napi_null) {
    ext = get_string(env, argv[1], true, &why);
    if (ext == NULL) {
      free(id);
      return invalid_arg_reject(env, "ext", why);
    }
  }
  uint64_t req = 0;
  rcpt_result r = rcpt_client_ack_group_message_read_mode(s->client, id, ext, mode, &req);
  free(id);
  free(ext);
  if (r != RCPT_OK) {
    return rejected_rcpt(env, r);
  }
  return track_request(s, req, PENDING_VOID);
}

typedef rcpt_result (*ack_page_call)(rcpt_client *, const char *, uint32_t, const char *, uint64_t *);

// The body of fetchGroupReadAcks and fetchGroupDeliveryAcks: one page of a group message's acks.
static napi_value fetch_ack_page(napi_env env, napi_callback_info info, ack_page_call f) {
  ARGS(3);
  if (s->client == NULL) {
    return not_initialized_reject(env);
  }
  const char *why = NULL;
  int64_t page_size = 0;
  if (!get_int(env, argv[1], 0, 4294967295.0, &page_size)) {
    return invalid_arg_reject(env, "pageSize", "must be a non-negative integer");
  }
  char *id = get_string(env, argv[0], false, &why);
  if (id == NULL) {
    return invalid_arg_reject(env, "msgId", why);
  }
  char *start = NULL;
  napi_valuetype t = napi_undefined;
  if (argv[2] != NULL && napi_typeof(env, argv[2], &t) == napi_ok && t != napi_undefined && t != napi_null) {
    start = get_string(env, argv[2], true, &why);
    if (start == NULL) {
      free(id);
      return invalid_arg_reject(env, "startAckId", why);
    }
  }
  uint64_t req = 0;
  rcpt_result r = f(s->client, id, (uint32_t)page_size, start, &req);
  free(id);
  free(start);
  if (r != RCPT_OK) {
    return rejected_rcpt(env, r);
  }
  if (req == 0) {
    // Not expected (a fetch always asks the server); answer with an empty page.
    napi_deferred d = NULL;
    napi_value p = NULL, v = NULL, arr = NULL;
    napi_create_promise(env, &d, &p);
    napi_create_object(env, &v);
    napi_create_array(env, &arr);
    napi_set_named_property(env, v, "data", arr);
    set_str(env, v, "cursor", "");
    napi_resolve_deferred(env, d, v);
    return p;
  }
  return track_request(s, req, PENDING_ACKS);
}

// fetchGroupReadAcks(msgId, pageSize, startAckId): Promise<NativeCursorResult>
static napi_value js_fetch_group_read_acks(napi_env env, napi_callback_info info) {
  return fetch_ack_page(env, info, rcpt_client_fetch_group_read_acks);
}

// fetchGroupDeliveryAcks(msgId, pageSize, startAckId): Promise<NativeCursorResult>
static napi_value js_fetch_group_delivery_acks(napi_env env, napi_callback_info info) {
  return fetch_ack_page(env, info, rcpt_client_fetch_group_delivery_acks);
}

// fetchGroupUnreadMembers(msgId, pageSize, cursor): Promise<NativeMemberPage>
static napi_value js_fetch_group_unread_members(napi_env env, napi_callback_info info) {
  ARGS(3);
  if (s->client == NULL) {
    return not_initialized_reject(env);
  }
  const char *why = NULL;
  int64_t page_size = 0;
  if (!get_int(env, argv[1], 0, 4294967295.0, &page_size)) {
    return invalid_arg_reject(env, "pageSize", "must be a non-negative integer");
  }
  char *id = get_string(env, argv[0], false, &why);
  if (id == NULL) {
    return invalid_arg_reject(env, "msgId", why);
  }
  char *cursor = get_string(env, argv[2], true, &why);
  if (cursor == NULL) {
    free(id);
    return invalid_arg_reject(env, "cursor", why);
  }
  uint64_t req = 0;
  rcpt_result r = rcpt_client_fetch_group_unread_members(s->client, id, (uint32_t)page_size, cursor, &req);
  free(id);
  free(cursor);
  if (r != RCPT_OK) {
    return rejected_rcpt(env, r);
  }
  return track_request(s, req, PENDING_MEMBERS);
}

// fetchGroupAckCounts(msgIds): Promise<NativeBatchItem[]>
static napi_value js_fetch_group_ack_counts(napi_env env, napi_callback_info info) {
  ARGS(1);
  if (s->client == NULL) {
    return not_initialized_reject(env);
  }
  const char *why = NULL;
  size_t n = 0;
  char **ids = get_string_array(env, argv[0], &n, &why);
  if (ids == NULL) {
    return invalid_arg_reject(env, "msgIds", why);
  }
  uint64_t req = 0;
  rcpt_result r = rcpt_client_fetch_group_ack_counts(s->client, (const char *const *)ids, n, &req);
  free_strings(ids, n);
  if (r != RCPT_OK) {
    return rejected_rcpt(env, r);
  }
  return track_request(s, req, PENDING_ITEMS);
}

// ackMessagesRead(conversationId, msgIds, mode?): Promise<NativeBatchItem[]>
static napi_value js_ack_messages_read(napi_env env, napi_callback_info info) {
  ARGS(3);
  if (s->client == NULL) {
    return not_initialized_reject(env);
  }
  uint32_t mode = 0;
  if (!get_read_mode(env, argc, argv, 2, &mode)) {
    return invalid_arg_reject(env, "mode", READ_MODE_WHY);
  }
  const char *why = NULL;
  char *conversation = get_string(env, argv[0], false, &why);
  if (conversation == NULL) {
    return invalid_arg_reject(env, "conversationId", why);
  }
  size_t n = 0;
  char **ids = get_string_array(env, argv[1], &n, &why);
  if (ids == NULL) {
    free(conversation);
    return invalid_arg_reject(env, "msgIds", why);
  }
  uint64_t req = 0;
  rcpt_result r = rcpt_client_ack_messages_read_mode(s->client, conversation, (const char *const *)ids, n, mode, &req);
  free(conversation);
  free_strings(ids, n);
  if (r != RCPT_OK) {
    return rejected_rcpt(env, r);
  }
  return track_request(s, req, PENDING_ITEMS);
}

// getMessage(msgId): NativeMessage | undefined
static napi_value js_get_message(napi_env env, napi_callback_info info) {
  ARGS(1);
  const char *why = NULL;
  char *id = get_string(env, argv[0], false, &why);
  if (id == NULL) {
    return invalid_arg_throw(env, "msgId", why);
  }
  if (s->client == NULL) {
    free(id);
    return throw_error(env, ERR_GENERAL_ERROR, "init() was not called");
  }
  rcpt_message *m = NULL;
  rcpt_result r = rcpt_client_get_message(s->client, id, &m);
  free(id);
  if (r == RCPT_MESSAGE_INVALID) {
    rcpt_message_free(m);
    return undefined_value(env);  // unknown id
  }
  if (r != RCPT_OK) {
    rcpt_message_free(m);
    return throw_rcpt(env, r);
  }
  if (m == NULL) {
    return undefined_value(env);
  }
  napi_value v = message_to_js(env, m);
  rcpt_message_free(m);
  return v;
}

// markAllMessagesAsRead(conversationId, chatType): Promise<void>
static napi_value js_mark_all_messages_as_read(napi_env env, napi_callback_info info) {
  ARGS(2);
  if (s->client == NULL) {
    return not_initialized_reject(env);
  }
  const char *why = NULL;
  int64_t chat_type = 0;
  if (!get_int(env, argv[1], 0, 2, &chat_type)) {
    return invalid_arg_reject(env, "chatType", "must be 0 (Chat), 1 (GroupChat) or 2 (ChatRoom)");
  }
  char *id = get_string(env, argv[0], false, &why);
  if (id == NULL) {
    return invalid_arg_reject(env, "conversationId", why);
  }
  uint64_t req = 0;
  rcpt_result r = rcpt_client_mark_all_messages_read(s->client, id, (uint32_t)chat_type, &req);
  free(id);
  if (r != RCPT_OK) {
    return rejected_rcpt(env, r);
  }
  return track_request(s, req, PENDING_VOID);
}

// getUnreadCount(conversationId, chatType): number
static napi_value js_get_unread_count(napi_env env, napi_callback_info info) {
  ARGS(2);
  const char *why = NULL;
  int64_t chat_type = 0;
  if (!get_int(env, argv[1], 0, 2, &chat_type)) {
    return invalid_arg_throw(env, "chatType", "must be 0 (Chat), 1 (GroupChat) or 2 (ChatRoom)");
  }
  char *id = get_string(env, argv[0], false, &why);
  if (id == NULL) {
    return invalid_arg_throw(env, "conversationId", why);
  }
  if (s->client == NULL) {
    free(id);
    return throw_error(env, ERR_GENERAL_ERROR, "init() was not called");
  }
  uint32_t n = 0;
  rcpt_result r = rcpt_client_unread_count(s->client, id, (uint32_t)chat_type, &n);
  free(id);
  if (r != RCPT_OK) {
    return throw_rcpt(env, r);
  }
  napi_value v = NULL;
  napi_create_uint32(env, n, &v);
  return v;
}

// loadMessages(conversationId, chatType, startMsgId, pageSize): NativeMessage[]
// One page of the local history, newest first, older than startMsgId ("" = from the newest).
static napi_value js_load_messages(napi_env env, napi_callback_info info) {
  ARGS(4);
  const char *why = NULL;
  int64_t chat_type = 0, page_size = 0;
  if (!get_int(env, argv[1], 0, 2, &chat_type)) {
    return invalid_arg_throw(env, "chatType", "must be 0 (Chat), 1 (GroupChat) or 2 (ChatRoom)");
  }
  if (!get_int(env, argv[3], 1, RCPT_MAX_HISTORY_PAGE, &page_size)) {
    return invalid_arg_throw(env, "pageSize", "must be an integer in 1..400");
  }
  char *id = get_string(env, argv[0], false, &why);
  if (id == NULL) {
    return invalid_arg_throw(env, "conversationId", why);
  }
  char *start = get_string(env, argv[2], true, &why);
  if (start == NULL) {
    free(id);
    return invalid_arg_throw(env, "startMsgId", why);
  }
  if (s->client == NULL) {
    free(id);
    free(start);
    return throw_error(env, ERR_GENERAL_ERROR, "init() was not called");
  }
  rcpt_message_list *page = NULL;
  rcpt_result r = rcpt_client_load_messages(s->client, id, (uint32_t)chat_type, start, (uint32_t)page_size, &page);
  free(id);
  free(start);
  if (r != RCPT_OK) {
    rcpt_message_list_free(page);
    return throw_rcpt(env, r);
  }
  size_t n = rcpt_message_list_count(page);
  napi_value arr = NULL;
  napi_create_array_with_length(env, n, &arr);
  for (size_t i = 0; i < n; i++) {
    napi_set_element(env, arr, (uint32_t)i, message_to_js(env, rcpt_message_list_at(page, i)));
  }
  rcpt_message_list_free(page);
  return arr;
}

typedef rcpt_result (*members_call)(rcpt_client *, const char *, const char *const *, size_t, uint64_t *);

static napi_value group_request(napi_env env, napi_callback_info info, const char *first_name, bool allow_empty_first,
                                members_call f, pending_kind kind) {
  ARGS(2);
  if (s->client == NULL) {
    return not_initialized_reject(env);
  }
  const char *why = NULL;
  char *first = get_string(env, argv[0], allow_empty_first, &why);
  if (first == NULL) {
    return invalid_arg_reject(env, first_name, why);
  }
  size_t n = 0;
  char **members = get_string_array(env, argv[1], &n, &why);
  if (members == NULL) {
    free(first);
    return invalid_arg_reject(env, "members", why);
  }
  uint64_t req = 0;
  rcpt_result r = f(s->client, first, (const char *const *)members, n, &req);
  free(first);
  free_strings(members, n);
  if (r != RCPT_OK) {
    return rejected_rcpt(env, r);
  }
  return track_request(s, req, kind);
}

// createGroup(name, members): Promise<string>
static napi_value js_create_group(napi_env env, napi_callback_info info) {
  return group_request(env, info, "name", true, rcpt_client_create_group, PENDING_GROUP_ID);
}

// addGroupMembers(groupId, members): Promise<void>
static napi_value js_add_group_members(napi_env env, napi_callback_info info) {
  return group_request(env, info, "groupId", false, rcpt_client_add_group_members, PENDING_VOID);
}

// removeGroupMembers(groupId, members): Promise<void>
static napi_value js_remove_group_members(napi_env env, napi_callback_info info) {
  return group_request(env, info, "groupId", false, rcpt_client_remove_group_members, PENDING_VOID);
}

// ---- connection, token and logs ------------------------------------------------------------------

static napi_value js_bool(napi_env env, bool b) {
  napi_value v = NULL;
  napi_get_boolean(env, b, &v);
  return v;
}

// isConnected(): boolean
static napi_value js_is_connected(napi_env env, napi_callback_info info) {
  ARGS(0);
  return js_bool(env, s->client != NULL && rcpt_client_is_connected(s->client));
}

// isLoggedIn(): boolean (an offline start counts)
static napi_value js_is_logged_in(napi_env env, napi_callback_info info) {
  ARGS(0);
  return js_bool(env, s->client != NULL && rcpt_client_is_logged_in(s->client));
}

// isDatabaseOpened(): boolean
static napi_value js_is_database_opened(napi_env env, napi_callback_info info) {
  ARGS(0);
  return js_bool(env, s->client != NULL && rcpt_client_is_database_opened(s->client));
}

// renewToken(token): Promise<void> (settled by the server's answer; at once when offline)
static napi_value js_renew_token(napi_env env, napi_callback_info info) {
  return one_id_request(env, info, "token", rcpt_client_renew_token);
}

// The log sink: hilog on a device, stderr under Node. Records come from any thread; neither
// OH_LOG_Print nor fprintf needs the JS thread.
static void log_to_host(void *user_data, rcpt_log_level level, const char *target, const char *message) {
  (void)user_data;
#ifdef __OHOS__
  LogLevel l = level <= RCPT_LOG_ERROR ? LOG_ERROR : level == RCPT_LOG_WARN ? LOG_WARN : level == RCPT_LOG_INFO ? LOG_INFO : LOG_DEBUG;
  // Domain 0xD0B0 (an app domain), tag "receipt"; %{public}: the text holds no content or token
  // above debug (the library's rule), so it may show in release logs.
  OH_LOG_Print(LOG_APP, l, 0xD0B0, "receipt", "%{public}s: %{public}s", target, message);
#else
  static const char *names[] = {"off", "error", "warn", "info", "debug", "trace"};
  fprintf(stderr, "receipt %s %s: %s\n", names[level <= RCPT_LOG_TRACE ? level : RCPT_LOG_TRACE], target, message);
#endif
}

// setLogLevel(level: number): void — 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace.
static napi_value js_set_log_level(napi_env env, napi_callback_info info) {
  ARGS(1);
  int64_t level = 0;
  if (!get_int(env, argv[0], 0, 5, &level)) {
    return invalid_arg_throw(env, "level", "must be an integer in 0 (off)..5 (trace)");
  }
  rcpt_result r = level == 0 ? rcpt_set_log_sink(NULL, NULL, RCPT_LOG_OFF)
                             : rcpt_set_log_sink(log_to_host, NULL, (rcpt_log_level)level);
  if (r != RCPT_OK) {
    return throw_rcpt(env, r);
  }
  return undefined_value(env);
}

// Reads the optional TLS settings of init()'s options into `o`. RCPT_OK, or the failing result
// (the name of the bad field in *field).
static rcpt_result tls_options(napi_env env, napi_value options, rcpt_options *o, const char **field) {
  static const char *pem_fields[] = {"tlsCaPem", "tlsPinnedCertPem"};
  for (size_t i = 0; i < 2; i++) {
    napi_value v = NULL;
    napi_valuetype t = napi_undefined;
    if (napi_get_named_property(env, options, pem_fields[i], &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok ||
        t == napi_undefined || t == napi_null) {
      continue;
    }
    const char *why = NULL;
    char *pem = get_string(env, v, true, &why);
    *field = pem_fields[i];
    if (pem == NULL) {
      return RCPT_INVALID_PARAM;
    }
    rcpt_result r = RCPT_OK;
    if (pem[0] != '\0') {
      r = i == 0 ? rcpt_options_set_tls_ca_pem(o, pem) : rcpt_options_set_tls_pinned_cert_pem(o, pem);
    }
    free(pem);
    if (r != RCPT_OK) {
      return r;
    }
  }
  static const char *bool_fields[] = {"useTls", "allowPlaintext"};
  for (size_t i = 0; i < 2; i++) {
    napi_value v = NULL;
    napi_valuetype t = napi_undefined;
    bool b = false;
    if (napi_get_named_property(env, options, bool_fields[i], &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok ||
        t == napi_undefined || t == napi_null) {
      continue;
    }
    *field = bool_fields[i];
    if (!get_bool(env, v, &b)) {
      return RCPT_INVALID_PARAM;
    }
    // useTls false leaves the default (TLS except to a loopback host) as it is.
    rcpt_result r = i == 0 ? (b ? rcpt_options_set_use_tls(o, true) : RCPT_OK) : rcpt_options_set_allow_plaintext(o, b);
    if (r != RCPT_OK) {
      return r;
    }
  }
  *field = NULL;
  return RCPT_OK;
}

// cachedMessageCount(): number (a diagnostic: messages the client holds in memory now)
static napi_value js_cached_message_count(napi_env env, napi_callback_info info) {
  ARGS(0);
  (void)argv;
  if (s->client == NULL) {
    return throw_error(env, ERR_GENERAL_ERROR, "init() was not called");
  }
  uint32_t n = 0;
  rcpt_result r = rcpt_client_cached_message_count(s->client, &n);
  if (r != RCPT_OK) {
    return throw_rcpt(env, r);
  }
  napi_value v = NULL;
  napi_create_uint32(env, n, &v);
  return v;
}

// A function for the threadsafe function to hold on to (its call_js does the work).
static napi_value js_noop(napi_env env, napi_callback_info info) {
  (void)info;
  return undefined_value(env);
}

// ---- module -------------------------------------------------------------------------------------

static napi_value module_init(napi_env env, napi_value exports) {
  env_state *s = calloc(1, sizeof *s);
  if (s == NULL) {
    return throw_error(env, ERR_GENERAL_ERROR, "out of memory");
  }
  s->env = env;
  atomic_init(&s->poll_scheduled, false);

  napi_value noop = NULL, name = NULL;
  if (napi_create_function(env, "receiptEvents", NAPI_AUTO_LENGTH, js_noop, NULL, &noop) != napi_ok ||
      napi_create_string_utf8(env, "receipt_napi.events", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_threadsafe_function(env, noop, NULL, name, 0, 1, s, env_teardown, s, call_js, &s->tsfn) != napi_ok) {
    free(s);
    return throw_error(env, ERR_GENERAL_ERROR, "napi_create_threadsafe_function failed");
  }
  // Idle until a promise waits for the server.
  napi_unref_threadsafe_function(env, s->tsfn);
  s->tsfn_referenced = false;

  static const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {
      {"init", js_init},
      {"setEventHandler", js_set_event_handler},
      {"login", js_login},
      {"logout", js_logout},
      {"currentUser", js_current_user},
      {"sendMessage", js_send_message},
      {"ackMessageRead", js_ack_message_read},
      {"ackConversationRead", js_ack_conversation_read},
      {"ackGroupMessageRead", js_ack_group_message_read},
      {"fetchGroupReadAcks", js_fetch_group_read_acks},
      {"fetchGroupDeliveryAcks", js_fetch_group_delivery_acks},
      {"fetchGroupUnreadMembers", js_fetch_group_unread_members},
      {"fetchGroupAckCounts", js_fetch_group_ack_counts},
      {"ackMessagesRead", js_ack_messages_read},
      {"getMessage", js_get_message},
      {"markMessageAsRead", js_mark_message_as_read},
      {"markAllMessagesAsRead", js_mark_all_messages_as_read},
      {"getUnreadCount", js_get_unread_count},
      {"cachedMessageCount", js_cached_message_count},
      {"createGroup", js_create_group},
      {"addGroupMembers", js_add_group_members},
      {"removeGroupMembers", js_remove_group_members},
      {"isConnected", js_is_connected},
      {"isLoggedIn", js_is_logged_in},
      {"isDatabaseOpened", js_is_database_opened},
      {"renewToken", js_renew_token},
      {"setLogLevel", js_set_log_level},
      {"loadMessages", js_load_messages},
  };
  // Plain, enumerable, writable properties on the plain exports object.
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn = NULL;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, s, &fn) != napi_ok ||
        napi_set_named_property(env, exports, fns[i].name, fn) != napi_ok) {
      return throw_error(env, ERR_GENERAL_ERROR, "defining the module's functions failed");
    }
  }
  return exports;
}

// nm_modname must equal the library name without lib/.so: libreceipt_napi.so.
static napi_module receipt_module = {
    .nm_version = 1,
    .nm_flags = 0,
    .nm_filename = "napi_receipt.c",
    .nm_register_func = module_init,
    .nm_modname = "receipt_napi",
    .nm_priv = NULL,
    .reserved = {0},
};

__attribute__((constructor)) static void receipt_napi_register(void) {
  napi_module_register(&receipt_module);
}
