"""The records schema, as the migrations that build it (one list of statements each)."""

from __future__ import annotations

# Each entry migrates the schema from version i to i + 1; never edit a released entry.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE bystroq_records (
            submission_id TEXT PRIMARY KEY, category TEXT NOT NULL, state TEXT NOT NULL,
            attempts INTEGER NOT NULL, queue_id BIGINT, server TEXT, worker TEXT,
            progress BIGINT NOT NULL, skipped BIGINT NOT NULL, messages TEXT NOT NULL,
            result TEXT, reason TEXT, batch TEXT, submitted_at DOUBLE PRECISION,
            started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION,
            updated_at DOUBLE PRECISION, run_base INTEGER NOT NULL,
            attempt_done INTEGER NOT NULL, seq INTEGER NOT NULL, prior_runs TEXT NOT NULL,
            body TEXT)""",
        "CREATE INDEX bystroq_records_run ON bystroq_records (server, queue_id)",
        "CREATE INDEX bystroq_records_batch ON bystroq_records (batch, state)",
        "CREATE INDEX bystroq_records_updated ON bystroq_records (updated_at)",
        """CREATE TABLE bystroq_events (
            key TEXT PRIMARY KEY, submission_id TEXT, category TEXT NOT NULL,
            server TEXT NOT NULL, queue_id BIGINT, attempt INTEGER, seq INTEGER,
            event TEXT NOT NULL, worker TEXT, at DOUBLE PRECISION NOT NULL,
            applied INTEGER NOT NULL, body TEXT NOT NULL)""",
        "CREATE INDEX bystroq_events_submission ON bystroq_events (submission_id, at)",
    ),
    (
        """CREATE TABLE bystroq_batches (
            batch_id TEXT PRIMARY KEY, category TEXT NOT NULL, total INTEGER NOT NULL,
            fed INTEGER NOT NULL, concurrency INTEGER NOT NULL, error_policy TEXT NOT NULL,
            priority BIGINT NOT NULL, state TEXT NOT NULL, reason TEXT,
            created_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION,
            watermarks TEXT NOT NULL)""",
        """CREATE TABLE bystroq_batch_items (
            batch_id TEXT NOT NULL, n INTEGER NOT NULL, submission_id TEXT NOT NULL,
            body TEXT NOT NULL, PRIMARY KEY (batch_id, n))""",
    ),
    (
        # A batch item's put in progress (see bystroq.records.batchstore): its claim's
        # generation, the servers' last ids before it, and where the job went.
        """CREATE TABLE bystroq_batch_claims (
            batch_id TEXT NOT NULL, n INTEGER NOT NULL, gen INTEGER NOT NULL,
            claimed_at DOUBLE PRECISION NOT NULL, put_after TEXT NOT NULL,
            queue_id BIGINT, server TEXT, PRIMARY KEY (batch_id, n))""",
        # Claims made before this version (put without parking): recovered as generation 0.
        """INSERT INTO bystroq_batch_claims (batch_id, n, gen, claimed_at, put_after)
            SELECT i.batch_id, i.n, 0, 0, '{}' FROM bystroq_batch_items i
            JOIN bystroq_records r ON r.submission_id = i.submission_id
            AND r.batch = i.batch_id WHERE r.state = 'queued' AND r.queue_id IS NULL""",
    ),
    (
        # How much work the handler said there is (progress of total).
        "ALTER TABLE bystroq_records ADD COLUMN total BIGINT",
        # Where the handler raised, for a failure (bounded by the worker).
        "ALTER TABLE bystroq_records ADD COLUMN traceback TEXT",
    ),
    (
        # The HTTP API's Idempotency-Key: the first request's fingerprint and response
        # (see bystroq.records.feeds).
        """CREATE TABLE bystroq_idempotency (
            key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, state TEXT NOT NULL,
            status INTEGER, response TEXT, created_at DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX bystroq_idempotency_created ON bystroq_idempotency (created_at)",
        # The order of the live event feed: PostgreSQL numbers the events from a sequence
        # (existing rows too); SQLite leaves the column empty and uses the rowid.
        "ALTER TABLE bystroq_events ADD COLUMN feed_id BIGSERIAL",
        "CREATE INDEX bystroq_events_feed ON bystroq_events (feed_id)",
        # Event hooks (bystroq.ops.hooks): how far each hook got in the feed, and every
        # webhook delivery attempt.
        """CREATE TABLE bystroq_hook_cursors (
            name TEXT PRIMARY KEY, after BIGINT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL, owner TEXT,
            lease_until DOUBLE PRECISION NOT NULL DEFAULT 0)""",
        """CREATE TABLE bystroq_webhook_deliveries (
            url TEXT NOT NULL, event_id BIGINT NOT NULL, attempt INTEGER NOT NULL,
            status INTEGER, error TEXT, at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (url, event_id, attempt))""",
        "CREATE INDEX bystroq_webhook_deliveries_at ON bystroq_webhook_deliveries (at)",
    ),
    (
        # Unique submits in flight: a submission id held by one producer's put until its
        # queued record is written (or `until_at`, should that producer die meanwhile).
        """CREATE TABLE bystroq_submit_claims (
            submission_id TEXT PRIMARY KEY, until_at DOUBLE PRECISION NOT NULL)""",
    ),
    (
        # Live workers, from their heartbeats (see bystroq.records.workers).
        """CREATE TABLE bystroq_workers (
            worker_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid BIGINT NOT NULL,
            category TEXT NOT NULL, state TEXT NOT NULL, slots_busy INTEGER NOT NULL,
            slots_total INTEGER NOT NULL, isolation TEXT NOT NULL, version TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL, last_seen_at DOUBLE PRECISION NOT NULL,
            interval_s DOUBLE PRECISION NOT NULL, jobs TEXT NOT NULL)""",
        "CREATE INDEX bystroq_workers_seen ON bystroq_workers (last_seen_at)",
        # The W3C trace context the submission was made in, when there was one.
        "ALTER TABLE bystroq_records ADD COLUMN traceparent TEXT",
    ),
    (
        # The dashboard: every action taken through it (who, what, when, on what), and
        # the indexes its pages read by (a state's page by submissionID, the last hour's
        # finished jobs).
        """CREATE TABLE bystroq_audit (
            at DOUBLE PRECISION NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL,
            target TEXT NOT NULL, detail TEXT NOT NULL, outcome TEXT NOT NULL)""",
        "CREATE INDEX bystroq_audit_at ON bystroq_audit (at)",
        "CREATE INDEX bystroq_records_state ON bystroq_records (state, submission_id)",
        "CREATE INDEX bystroq_records_category ON bystroq_records (category, submission_id)",
        "CREATE INDEX bystroq_records_finished ON bystroq_records (finished_at)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
