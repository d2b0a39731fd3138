-- 001_init.sql: the first schema of modulad's registry (DATA/registry.db).
--
-- Applied by daemon/registry.c inside one transaction, which then sets
-- PRAGMA user_version = 1. Never edit a migration that has shipped: add
-- schema/NNN_what.sql instead. Times are Unix milliseconds (INTEGER);
-- JSON columns hold text the daemon checked on the way in.

-- Content-addressed files of the artifact store (DATA/artifacts/ab/abcd...).
CREATE TABLE artifacts (
	id          INTEGER PRIMARY KEY,            -- for paging lists
	sha256      TEXT NOT NULL UNIQUE CHECK (length(sha256) = 64),
	size        INTEGER NOT NULL CHECK (size >= 0),
	kind        TEXT NOT NULL DEFAULT 'blob',  -- checkpoint, expert, router, bundle, dataset, model, log, blob
	created_ms  INTEGER NOT NULL
);

CREATE TABLE base_models (
	id          INTEGER PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE,
	artifact    TEXT REFERENCES artifacts(sha256),
	config      TEXT NOT NULL DEFAULT '{}',   -- JSON: architecture, sizes
	created_ms  INTEGER NOT NULL
);

CREATE TABLE datasets (
	id          INTEGER PRIMARY KEY,
	name        TEXT NOT NULL,
	domain      TEXT,
	split       TEXT NOT NULL DEFAULT 'train',
	artifact    TEXT REFERENCES artifacts(sha256),
	rows        INTEGER,
	created_ms  INTEGER NOT NULL,
	UNIQUE (name, split)
);

-- A submitted spec (a sweep); runs are its points.
CREATE TABLE experiments (
	id          INTEGER PRIMARY KEY,
	name        TEXT NOT NULL,
	spec        TEXT NOT NULL,                -- JSON as submitted
	created_ms  INTEGER NOT NULL
);

CREATE TABLE runs (
	id            INTEGER PRIMARY KEY,
	experiment_id INTEGER REFERENCES experiments(id) ON DELETE CASCADE,
	method        TEXT NOT NULL,              -- modula, lora, mole, ...
	seed          INTEGER NOT NULL DEFAULT 0,
	params        TEXT NOT NULL DEFAULT '{}', -- JSON hyper-parameters
	created_ms    INTEGER NOT NULL
);
CREATE INDEX runs_experiment ON runs(experiment_id);

-- One stage of one run. See daemon/queue.h for the state machine and its
-- invariants; only daemon/queue.c writes state.
CREATE TABLE jobs (
	id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: (id, attempt) names one execution
	run_id          INTEGER REFERENCES runs(id),
	kind            TEXT NOT NULL,
	state           TEXT NOT NULL DEFAULT 'pending'
	                CHECK (state IN ('pending', 'ready', 'leased', 'running',
	                                 'succeeded', 'failed', 'cancelled')),
	priority        INTEGER NOT NULL DEFAULT 0,
	attempts        INTEGER NOT NULL DEFAULT 0,
	attempt_base    INTEGER NOT NULL DEFAULT 0,
	max_attempts    INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
	content_key     TEXT CHECK (content_key IS NULL OR length(content_key) = 64),
	spec            TEXT NOT NULL DEFAULT '{}',
	backend         INTEGER NOT NULL DEFAULT 1,          -- 1 cpu (runs anywhere), 2 cuda
	min_gpu_mem_mb  INTEGER NOT NULL DEFAULT 0,
	deps_left       INTEGER NOT NULL DEFAULT 0,          -- dependencies not yet succeeded
	lease_owner     TEXT,
	lease_deadline  INTEGER,
	backoff_until   INTEGER NOT NULL DEFAULT 0,
	worker          TEXT,                                -- last worker that ran it
	checkpoint      TEXT,                                -- sha256 of the newest checkpoint
	result          TEXT,                                -- JSON
	error           TEXT,
	cached_from     INTEGER REFERENCES jobs(id),
	created_ms      INTEGER NOT NULL,
	ready_ms        INTEGER,                             -- last time it became ready
	leased_ms       INTEGER,
	started_ms      INTEGER,
	finished_ms     INTEGER,
	CHECK ((state IN ('leased', 'running')) = (lease_deadline IS NOT NULL))
);
-- Lease selection: the best ready job without a scan of the rest.
CREATE INDEX jobs_ready ON jobs(priority DESC, id) WHERE state = 'ready';
CREATE INDEX jobs_state ON jobs(state, id);
CREATE INDEX jobs_leases ON jobs(lease_deadline) WHERE lease_deadline IS NOT NULL;
CREATE INDEX jobs_owner ON jobs(lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX jobs_content_key ON jobs(content_key, state) WHERE content_key IS NOT NULL;
CREATE INDEX jobs_run ON jobs(run_id) WHERE run_id IS NOT NULL;

-- DAG edges: job_id needs dep_id.
CREATE TABLE job_deps (
	job_id  INTEGER NOT NULL REFERENCES jobs(id),
	dep_id  INTEGER NOT NULL REFERENCES jobs(id),
	PRIMARY KEY (job_id, dep_id),
	CHECK (job_id <> dep_id)
) WITHOUT ROWID;
CREATE INDEX job_deps_dep ON job_deps(dep_id, job_id);

-- Outputs of finished jobs (no foreign key to artifacts: a worker may name
-- a file it uploads through file:// before the store registers it).
CREATE TABLE job_outputs (
	job_id  INTEGER NOT NULL REFERENCES jobs(id),
	name    TEXT NOT NULL,
	sha256  TEXT NOT NULL CHECK (length(sha256) = 64),
	PRIMARY KEY (job_id, name)
) WITHOUT ROWID;
CREATE INDEX job_outputs_sha ON job_outputs(sha256);

CREATE TABLE experts (
	id          INTEGER PRIMARY KEY,
	name        TEXT NOT NULL,
	role        TEXT NOT NULL CHECK (role IN ('universal', 'domain')),
	domain      TEXT,
	rank        INTEGER NOT NULL CHECK (rank > 0),
	base_model  INTEGER REFERENCES base_models(id),
	artifact    TEXT REFERENCES artifacts(sha256),
	job_id      INTEGER REFERENCES jobs(id),         -- the job that trained it
	created_ms  INTEGER NOT NULL,
	CHECK ((role = 'domain') = (domain IS NOT NULL))
);

CREATE TABLE routers (
	id          INTEGER PRIMARY KEY,
	name        TEXT NOT NULL,
	kind        TEXT NOT NULL DEFAULT 'modula',
	base_model  INTEGER REFERENCES base_models(id),
	artifact    TEXT REFERENCES artifacts(sha256),
	job_id      INTEGER REFERENCES jobs(id),
	created_ms  INTEGER NOT NULL
);

-- Time series (loss curves...): append-only, read by (run or job, key).
-- Kept apart from the summary rows (evaluations) so lists stay fast.
CREATE TABLE metrics (
	job_id  INTEGER NOT NULL,
	run_id  INTEGER,
	key     TEXT NOT NULL,
	step    INTEGER NOT NULL,
	value   REAL,
	t_ms    INTEGER NOT NULL
);
CREATE INDEX metrics_job ON metrics(job_id, key, step);
CREATE INDEX metrics_run ON metrics(run_id, key, step) WHERE run_id IS NOT NULL;

-- Summary figures: one row per (run or job, domain, metric).
CREATE TABLE evaluations (
	id          INTEGER PRIMARY KEY,
	run_id      INTEGER REFERENCES runs(id),
	job_id      INTEGER REFERENCES jobs(id),
	domain      TEXT NOT NULL,
	metric      TEXT NOT NULL,
	value       REAL,
	created_ms  INTEGER NOT NULL
);
CREATE INDEX evaluations_run ON evaluations(run_id) WHERE run_id IS NOT NULL;
CREATE INDEX evaluations_job ON evaluations(job_id);

CREATE TABLE workers (
	id          TEXT PRIMARY KEY,
	host        TEXT,
	backend     INTEGER NOT NULL DEFAULT 1,
	gpu_mem_mb  INTEGER NOT NULL DEFAULT 0,
	slots       INTEGER NOT NULL DEFAULT 1,
	state       TEXT NOT NULL DEFAULT 'up' CHECK (state IN ('up', 'down')),
	first_seen  INTEGER NOT NULL,
	last_seen   INTEGER NOT NULL
) WITHOUT ROWID;

-- Audit log: who did what to which job.
CREATE TABLE events (
	id      INTEGER PRIMARY KEY,
	t_ms    INTEGER NOT NULL,
	kind    TEXT NOT NULL,
	job_id  INTEGER,
	actor   TEXT,
	detail  TEXT
);
CREATE INDEX events_job ON events(job_id) WHERE job_id IS NOT NULL;

-- Bearer tokens, stored as the SHA-256 of the token (hex); the token itself
-- is shown once, by `modulad token create`.
CREATE TABLE api_tokens (
	id          INTEGER PRIMARY KEY,
	hash        TEXT NOT NULL UNIQUE CHECK (length(hash) = 64),
	role        TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'worker')),
	note        TEXT,
	created_ms  INTEGER NOT NULL,
	last_used   INTEGER
);
