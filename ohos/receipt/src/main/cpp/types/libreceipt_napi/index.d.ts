// The native module `libreceipt_napi.so` (the NAPI shim over the Rust C ABI in include/receipt.h).
// This file is the contract between the shim (../../napi_receipt.c) and the ArkTS layer
// (src/main/ets). All functions must be called on the JS thread; events are delivered on it too.
// Errors: synchronous functions throw, and promises reject, with an object
// `{ code: number, description: string }` carrying the SDK's codes (docs/errors.md).

export interface NativeOptions {
  requireDeliveryAck: boolean;
  requireReadAck: boolean;
  // Private reading (optional, default false): read acks sync own devices, tell the sender nothing.
  privateReadReceipts?: boolean;
  server: string;   // host; "" when the app set none (login then fails with 300)
  port: number;     // 0 when the app set none
  dataDir: string;  // directory for the client store (context.filesDir on HarmonyOS)
  // TLS (optional): trust these PEM CAs / pin this PEM certificate; useTls with the built-in
  // roots; allowPlaintext to a non-loopback host. Default: TLS except to a loopback host.
  tlsCaPem?: string;
  tlsPinnedCertPem?: string;
  useTls?: boolean;
  allowPlaintext?: boolean;
  // History (optional): messages kept in memory (>= 1; default 2048), and local retention: drop
  // messages older than retentionMaxAgeMs (server time) / beyond the newest
  // retentionMaxPerConversation of each conversation (0 or absent: no cap). Integers, else init
  // throws 110 INVALID_PARAM.
  messageCacheSize?: number;
  retentionMaxAgeMs?: number;
  retentionMaxPerConversation?: number;
}

export interface NativeMessage {
  msgId: string;        // server id once sent, else the client id
  clientId: string;
  from: string;
  to: string;
  conversationId: string; // the engine's: the peer (1:1) or the group id
  chatType: number;     // 0 Chat, 1 GroupChat, 2 ChatRoom
  direction: number;    // 0 SEND, 1 RECEIVE
  content: string;
  timestamp: number;    // server time, ms
  status: number;       // 0 pending, 1 sent, 2 failed
  requireDeliveryAck: boolean;
  needGroupAck: boolean;
  delivered: boolean;
  receiverRead: boolean;
  unread: boolean;
  groupAckCount: number;
  groupAckSent: boolean;
  needGroupDeliveryAck: boolean; // a group message that asks for group delivery acks
  groupDeliveredCount: number;   // sender side: members' devices that acked its delivery
}

export interface NativeGroupReadAck {
  ackId: string;
  msgId: string;
  from: string;
  content: string;      // the ext, "" when none
  count: number;
  timestamp: number;
}

export interface NativeCursorResult {
  data: NativeGroupReadAck[];
  cursor: string;       // "" when there is no next page
}

// A page of the members who have not read a group message, in user-id order.
export interface NativeMemberPage {
  data: string[];
  cursor: string;       // "" when there is no next page
}

// One id's outcome in a batch answer (fetchGroupAckCounts, ackMessagesRead), in the order asked.
export interface NativeBatchItem {
  msgId: string;
  count: number;        // the read count (fetchGroupAckCounts); 0 with an error
  code: number;         // 0: done; else the SDK error code for this id
  description: string;  // why, "" when done
}

// One event from the engine. `kind` says which fields are set.
//  'received' | 'delivered' | 'read'   -> messages
//  'groupRead' | 'groupDelivered'       -> acks (group read / delivery acks; a delivery's content is "")
//  'conversationRead'                   -> from, to
//  'unreadChanged'                      -> conversationId, chatType, unread
//  'messagesUpdated'                    -> messages (their own flags changed; apply as they are)
//  'groupReadCountUpdated'              -> messages (a large group's coalesced read counts rose)
//  'conversationUpdated'                -> conversationId, chatType, unread, readUpTo, receiptUpTo,
//                                          peerReadUpTo (marks moved; re-read the held messages)
//  'connected' | 'disconnected'         -> (code, description on a refused login)
//  'databaseOpened'                     -> from (the user)
//  'offlineSyncStart' | 'offlineSyncFinish' | 'tokenWillExpire' | 'tokenExpired'
//  'loggedOut'                          -> code, description
export interface NativeEvent {
  kind: string;
  messages?: NativeMessage[];
  acks?: NativeGroupReadAck[];
  from?: string;
  to?: string;
  conversationId?: string;
  chatType?: number;
  unread?: number;
  // conversationUpdated: the conversation's marks after the move (decimal message ids, "0": none).
  readUpTo?: string;
  receiptUpTo?: string;
  peerReadUpTo?: string;
  code?: number;
  description?: string;
}

// Creates this env's client (one per ArkTS worker / JS env). Throws if already created.
export function init(options: NativeOptions): void;
// Registers the single event sink for this env (replaces any previous one).
export function setEventHandler(handler: (event: NativeEvent) => void): void;
export function login(userId: string, token: string): Promise<void>;
export function logout(): Promise<void>;
export function currentUser(): string;  // "" when logged out
// Resolves with the message once the server accepted it (or rejects with its error).
// needGroupDeliveryAck (optional, default false): a group message asks for group delivery acks.
export function sendMessage(to: string, chatType: number, content: string, needGroupAck: boolean,
  needGroupDeliveryAck?: boolean): Promise<NativeMessage>;
// Read-ack mode (optional `mode` of the read-ack calls): 0 or absent the client's option
// (privateReadReceipts), 1 public, 2 private; any other value rejects with 110.
export function ackMessageRead(msgId: string, mode?: number): Promise<void>;
export function ackConversationRead(conversationId: string, mode?: number): Promise<void>;
export function ackGroupMessageRead(msgId: string, ext: string, mode?: number): Promise<void>;
export function fetchGroupReadAcks(msgId: string, pageSize: number, startAckId: string): Promise<NativeCursorResult>;
export function fetchGroupDeliveryAcks(msgId: string, pageSize: number, startAckId: string): Promise<NativeCursorResult>;
export function fetchGroupUnreadMembers(msgId: string, pageSize: number, cursor: string): Promise<NativeMemberPage>;
export function fetchGroupAckCounts(msgIds: string[]): Promise<NativeBatchItem[]>;
export function ackMessagesRead(conversationId: string, msgIds: string[], mode?: number): Promise<NativeBatchItem[]>;
export function getMessage(msgId: string): NativeMessage | undefined;
export function markMessageAsRead(msgId: string): Promise<void>;
export function markAllMessagesAsRead(conversationId: string, chatType: number): Promise<void>;
export function getUnreadCount(conversationId: string, chatType: number): number;
// Diagnostic: how many messages the client holds in memory now (its message cache).
export function cachedMessageCount(): number;
export function createGroup(name: string, members: string[]): Promise<string>;
export function addGroupMembers(groupId: string, members: string[]): Promise<void>;
export function removeGroupMembers(groupId: string, members: string[]): Promise<void>;
export function isConnected(): boolean;
export function isLoggedIn(): boolean;        // an offline start counts
export function isDatabaseOpened(): boolean;
// Replaces the token without dropping the session; resolves when the server accepted it
// (at once when offline: the next connection uses it).
export function renewToken(token: string): Promise<void>;
// Where the Rust side's logs go (hilog on a device, stderr under Node): 0 off .. 5 trace.
export function setLogLevel(level: number): void;
/** One page of a conversation's local history, newest first, older than startMsgId ("": from the newest). */
export function loadMessages(conversationId: string, chatType: number, startMsgId: string, pageSize: number): NativeMessage[];
