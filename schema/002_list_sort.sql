-- 002_list_sort.sql: indexes for the sorted lists of the HTTP API
-- (GET /api/v1/runs|experiments|jobs?sort=COL, daemon/api.c s_list).
--
-- A list sorted by COL pages by the keyset (COL, id): each index below is
-- that pair, so a page is a seek and a range scan however deep it is,
-- never a scan of the table and a sort. The expressions must stay
-- character for character those of api.c's sort allow-list (SQLite uses
-- an index on an expression only for the same expression). jobs(state, id)
-- already exists (jobs_state). Only columns written once (at insert) are
-- indexed on jobs, so the queue's hot updates pay for none of these.
CREATE INDEX experiments_name ON experiments(name, id);
CREATE INDEX experiments_created ON experiments(created_ms, id);

CREATE INDEX runs_sort_experiment ON runs(ifnull(experiment_id, 0), id);
CREATE INDEX runs_method ON runs(method, id);
CREATE INDEX runs_seed ON runs(seed, id);
CREATE INDEX runs_created ON runs(created_ms, id);

CREATE INDEX jobs_kind ON jobs(kind, id);
CREATE INDEX jobs_priority ON jobs(priority, id);
CREATE INDEX jobs_sort_run ON jobs(ifnull(run_id, 0), id);
CREATE INDEX jobs_created ON jobs(created_ms, id);
