-- Schema 1 of the PostgreSQL store (docs/deployment.md). Keys are text COLLATE "C": byte order,
-- as the embedded store sorts them, whatever the database's collation. Ids and seqs are u64 in
-- the server, stored as bigint (they stay far below 2^63). Record bodies are the embedded
-- store's encodings (a format byte, then postcard): one codec for both backends.

-- Counters (key 'counters').
CREATE TABLE receipt_meta (
    key text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);

-- Messages, written once; the conversation columns index a resync's walk (conv_messages).
CREATE TABLE messages (
    id bigint PRIMARY KEY,
    conv_kind smallint NOT NULL,
    conv_a text COLLATE "C" NOT NULL,
    conv_b text COLLATE "C" NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX messages_by_conv ON messages (conv_kind, conv_a, conv_b, id);

-- bit 0: delivered, bit 1: read acked.
CREATE TABLE message_flags (
    id bigint PRIMARY KEY,
    flags smallint NOT NULL
);

-- (sender, client id) -> message: idempotent sends; dropped with the message it names.
CREATE TABLE client_ids (
    sender text COLLATE "C" NOT NULL,
    client_id text COLLATE "C" NOT NULL,
    msg_id bigint NOT NULL,
    PRIMARY KEY (sender, client_id)
);
CREATE INDEX client_ids_by_msg ON client_ids (msg_id);

-- Group acks, by kind (0: read, 1: delivery): a page is a range scan of the primary key; who
-- acked, by the second index.
CREATE TABLE group_acks (
    msg_id bigint NOT NULL,
    kind smallint NOT NULL,
    ack_id bigint NOT NULL,
    acker text COLLATE "C" NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (msg_id, kind, ack_id)
);
CREATE INDEX group_acks_by_acker ON group_acks (msg_id, kind, acker);

-- A user's events of one commit in one row (consecutive seqs first_seq..=last_seq).
CREATE TABLE events (
    usr text COLLATE "C" NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (usr, first_seq)
);

-- user -> seq of the last event trimmed from the user's log.
CREATE TABLE log_base (
    usr text COLLATE "C" PRIMARY KEY,
    up_to bigint NOT NULL
);

CREATE TABLE conversations (
    usr text COLLATE "C" NOT NULL,
    chat_type smallint NOT NULL,
    conv text COLLATE "C" NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (usr, chat_type, conv)
);

-- Messages above a conversation's read watermark read one by one.
CREATE TABLE conversation_reads (
    usr text COLLATE "C" NOT NULL,
    chat_type smallint NOT NULL,
    conv text COLLATE "C" NOT NULL,
    msg_id bigint NOT NULL,
    PRIMARY KEY (usr, chat_type, conv, msg_id)
);

-- Groups; member_since: the members' join marks (NULL: every member since the creation).
CREATE TABLE groups (
    id text COLLATE "C" PRIMARY KEY,
    body bytea NOT NULL,
    member_since bytea
);

CREATE TABLE device_cursors (
    usr text COLLATE "C" NOT NULL,
    device text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    seen bigint NOT NULL,
    PRIMARY KEY (usr, device)
);
