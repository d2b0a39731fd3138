#!/bin/sh
# daemon/sort.sh: sorted lists of the HTTP API (GET .../runs|jobs|experiments
# ?sort=COL&order=asc|desc) on a real modulad with 600 runs and 400 jobs
# whose sort columns repeat a lot: every sort is paged through with a small
# limit (keyset cursors across many pages, ties broken by id) and the ids
# must be exactly those of sqlite3's own ORDER BY on the registry file.
# Also: a filter with a sort, an unknown column and a bad cursor are 400s,
# and the sorted pages are index seeks (EXPLAIN QUERY PLAN of the query).
. "$top_srcdir/tests/lib.sh"
modulad="$top_builddir/daemon/modulad"
tmp=$(mktemp -d /tmp/modula-sort-XXXXXX)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

"$modulad" --data "$tmp/data" --http 127.0.0.1:0 --broker 'tcp://127.0.0.1:*' --log "$tmp/log" &
pid=$!
port=
for _ in $(seq 1 100); do
	port=$(sed -n 's/.*http: listening on .*(port \([0-9]*\)).*/\1/p' "$tmp/log" 2>/dev/null)
	[ -n "$port" ] && break
	sleep 0.1
done
check "daemon started on a free port ($port)" $([ -n "$port" ]; echo $?)
base="http://127.0.0.1:$port/api/v1"
db="$tmp/data/registry.db"
A="Authorization: Bearer $("$modulad" token create --data "$tmp/data" --role operator)"

# Seed: 3 experiments of 200 runs (4 methods, 7 seeds: many ties), then
# 400 jobs with 5 priorities, 3 kinds, half of them in no run.
for e in 1 2 3; do
	jq -nc --arg n "exp-$((4 - e))" '{name: $n, runs: [range(200) | {method: (["lora","modula","mole","modula-res"][(. * 7 + 3) % 4]), seed: ((. * 5) % 7)}]}' \
		> "$tmp/exp.json"
	curl -sf -H "$A" --data-binary @"$tmp/exp.json" "$base/experiments" > /dev/null
done
jq -nc '{jobs: [range(400) | {kind: (["train","eval","noop"][. % 3]), priority: ((. * 3) % 5),
	run: (if . % 2 == 0 then (. % 600) + 1 else null end)} | with_entries(select(.value != null))]}' > "$tmp/jobs.json"
curl -sf -H "$A" --data-binary @"$tmp/jobs.json" "$base/jobs" > /dev/null
check "seeded 600 runs and 400 jobs" \
	$([ "$(sqlite3 "$db" 'SELECT count(*) FROM runs') $(sqlite3 "$db" 'SELECT count(*) FROM jobs')" = "600 400" ]; echo $?)

# pages PATH QUERY LIMIT: every id of the list, following `next`, one a line.
pages() {
	after=
	n=0
	: > "$tmp/ids"
	while :; do
		curl -s "$base/$1?$2&limit=$3${after:+&after=$after}" > "$tmp/page"
		jq -r '.items[].id' "$tmp/page" >> "$tmp/ids" || return 1
		after=$(jq -r '.next // empty' "$tmp/page")
		n=$((n + 1))
		[ -n "$after" ] || break
	done
	cat "$tmp/ids"
}
# same "what" PATH QUERY LIMIT SQL: the paged ids equal sqlite3's.
same() {
	pages "$2" "$3" "$4" > "$tmp/got"
	sqlite3 "$db" "$5" > "$tmp/want"
	st=0
	cmp -s "$tmp/got" "$tmp/want" || st=1
	[ -s "$tmp/want" ] || st=1
	[ $st -eq 0 ] || diag "got $(wc -l < "$tmp/got") ids, want $(wc -l < "$tmp/want"): $(diff "$tmp/got" "$tmp/want" | head -4 | tr '\n' ' ')"
	check "$1 ($n pages)" $st
}

same "runs by method, ascending, ties by id" runs "sort=method" 37 "SELECT id FROM runs ORDER BY method, id"
same "runs by method, descending" runs "sort=method&order=desc" 37 "SELECT id FROM runs ORDER BY method DESC, id DESC"
same "runs by seed" runs "sort=seed&order=asc" 50 "SELECT id FROM runs ORDER BY seed, id"
same "runs by experiment, descending" runs "sort=experiment&order=desc" 64 \
	"SELECT id FROM runs ORDER BY experiment_id DESC, id DESC"
same "runs of one method by seed" runs "method=mole&sort=seed&order=desc" 9 \
	"SELECT id FROM runs WHERE method = 'mole' ORDER BY seed DESC, id DESC"
same "runs by id (the default) still page" runs "order=desc" 100 "SELECT id FROM runs ORDER BY id DESC"
same "jobs by priority" jobs "sort=priority&order=desc" 33 "SELECT id FROM jobs ORDER BY priority DESC, id DESC"
same "jobs by run (jobs without a run first)" jobs "sort=run" 33 "SELECT id FROM jobs ORDER BY run_id, id"
same "jobs by kind, one state" jobs "state=ready&sort=kind" 21 \
	"SELECT id FROM jobs WHERE state = 'ready' ORDER BY kind, id"
same "experiments by name" experiments "sort=name" 2 "SELECT id FROM experiments ORDER BY name, id"

req() {
	code=$(curl -s -o "$tmp/out" -w '%{http_code}' "$base/$1")
	body=$(cat "$tmp/out")
}
req 'runs?sort=params'
check "an unknown sort column is a 400 naming the allowed ones" \
	$([ "$code" = 400 ] && echo "$body" | grep -q "cannot sort runs by 'params': expected one of id, experiment, method, seed, created_ms"; echo $?)
req 'runs?sort=method;DROP%20TABLE%20runs'
check "SQL in the sort column is refused as a name" $([ "$code" = 400 ] && [ "$(sqlite3 "$db" 'SELECT count(*) FROM runs')" = 600 ]; echo $?)
req 'runs?sort=method&after=99999'
check "a sorted list's cursor must be a row" $([ "$code" = 400 ] && echo "$body" | grep -q "no row 99999 in runs"; echo $?)
req 'jobs?sort=priority&order=sideways'
check "a bad direction is a 400" $([ "$code" = 400 ] && echo "$body" | grep -q "expected asc or desc"; echo $?)

# The page queries seek their index instead of sorting the table.
plan() { sqlite3 "$db" "EXPLAIN QUERY PLAN $1" | tr '\n' ' '; }
p=$(plan "SELECT id FROM runs WHERE 1 AND method >= 'mole' AND (method, id) > ('mole', 5) ORDER BY method ASC, id ASC LIMIT 100")
check "runs by method: an index search ($p)" $(echo "$p" | grep -q 'SEARCH runs USING .*INDEX runs_method' && ! echo "$p" | grep -q 'TEMP B-TREE'; echo $?)
p=$(plan "SELECT id FROM jobs WHERE 1 AND ifnull(run_id, 0) <= 7 AND (ifnull(run_id, 0), id) < (7, 9) ORDER BY ifnull(run_id, 0) DESC, id DESC LIMIT 100")
check "jobs by run: an index search on the expression ($p)" $(echo "$p" | grep -q 'SEARCH jobs USING INDEX jobs_sort_run' && ! echo "$p" | grep -q 'TEMP B-TREE'; echo $?)
done_testing
