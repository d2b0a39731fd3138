#!/bin/sh
# experiments/reproduce.sh: the paper's tables (shapes of Tables 1, 3, 4,
# the residual ablation and the router heatmaps) on the embedded default,
# with modula-engine alone (no daemon): corpus and suite, pretraining of
# the tiny byte-level base, then per seed: base, lora, molora, modula-flan,
# modula-res, modula-res-nores, and the add-a-domain update (units) of
# modula-flan and modula-res. Prints markdown tables, mean +- std over
# the seeds, and leaves every job, event log and evaluation in WORKDIR.
#
#   experiments/reproduce.sh [WORKDIR]      (default ./reproduce-work)
#
# Sizes come from the environment (defaults are the reported run):
#   ENGINE=modula-engine SEEDS="1 2 3" PRETRAIN_STEPS=1500 STEPS=300
#   ROUTER_STEPS=100 BATCH=16 LR=0.002 TRAIN=2000 TEST=200 EVAL_RECORDS=200
#   UNIVERSAL_RANK=16 DOMAIN_RANK=8 DEVICE=auto
# DEVICE goes to the training, stage and eval jobs (--device): auto takes
# a GPU when one answers (bf16; what the device path cannot run, such as
# the full-parameter pretraining, stays on the CPU engine), cpu never.
# STEPS is the steps of each universal and domain expert (every domain of a
# domain stage gets BATCH records per step); lora and molora train
# STEPS x (number of data sets) steps on the mixture, so every method sees
# the same data. Finished jobs are skipped (their done event is in the log), so a rerun
# continues where a previous one stopped.
set -eu

W=${1:-reproduce-work}
ENGINE=${ENGINE:-modula-engine}
SEEDS=${SEEDS:-"1 2 3"}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-1500}
STEPS=${STEPS:-300}
ROUTER_STEPS=${ROUTER_STEPS:-100}
BATCH=${BATCH:-16}
LR=${LR:-0.002}
TRAIN=${TRAIN:-2000}
TEST=${TEST:-200}
EVAL_RECORDS=${EVAL_RECORDS:-200}
UR=${UNIVERSAL_RANK:-16}
DR=${DOMAIN_RANK:-8}
DEVICE=${DEVICE:-auto}
DOMS="math code logic"
NEW=units

mkdir -p "$W"
cd "$W"

# run KIND NAME JSON: modula-engine KIND NAME.json, events in NAME.log
run() {
	if [ -f "$2.log" ] && grep -q '"event":"done"' "$2.log"; then
		return 0
	fi
	mkdir -p "$(dirname "$2")"
	printf '%s\n' "$3" > "$2.json"
	echo "== $1 $2" >&2
	dev=
	case $1 in
	train | stage | eval) dev="--device $DEVICE" ;;
	esac
	# $dev unquoted: empty, or two words
	if ! "$ENGINE" "$1" "$2.json" $dev > "$2.log"; then
		tail -n 3 "$2.log" >&2
		exit 1
	fi
}

data() {
	for d in "$@"; do
		printf '"suite/%s.train.jsonl",' "$d"
	done | sed 's/,$//'
}

common() { # steps lr seed out_dir
	printf '"model":"base/model","tokenizer":"bytes","steps":%s,"batch":%s,"seq_len":64,"lr":%s,"warmup":10,"seed":%s,"progress_every":50,"out_dir":"%s"' \
		"$1" "$BATCH" "$2" "$3" "$4"
}

evaluate() { # name adapter(or empty) domains...: job NAME.e, result NAME.eval.json
	name=$1 adapter=$2
	shift 2
	doms=$(for d in universal "$@"; do printf '{"name":"%s","data":"suite/%s.test.jsonl"},' "$d" "$d"; done | sed 's/,$//')
	ad=""
	[ -n "$adapter" ] && ad="\"adapter\":\"$adapter\","
	run eval "$name.e" "{\"model\":\"base/model\",\"tokenizer\":\"bytes\",$ad\"domains\":[$doms],\"general\":\"universal\",\"text\":\"corpus/corpus.holdout.txt\",\"max_records\":$EVAL_RECORDS,\"seq_len\":64,\"batch\":32,\"out\":\"$name.eval.json\"}"
}

# 1. data: the suite (units held back for the add-a-domain update) and the corpus
run data suite/data "{\"suite\":{\"seed\":1,\"train\":$TRAIN,\"test\":$TEST,\"level\":2,\"domains\":[\"universal\",\"math\",\"code\",\"logic\",\"units\"]}}"
run data corpus/data '{"corpus":{"seed":1,"holdout_frac":0.05,"record_bytes":64}}'

# 2. the base: full-parameter pretraining of the tiny LLaMA on the corpus
run train base "{\"model\":\"random\",\"tokenizer\":\"bytes\",\"data\":\"corpus/corpus.jsonl\",\"mode\":\"full\",\"steps\":$PRETRAIN_STEPS,\"batch\":16,\"seq_len\":64,\"lr\":0.003,\"warmup\":20,\"seed\":1,\"progress_every\":50,\"out_dir\":\"base\"}"

MIX=$(data universal $DOMS)
# the joint methods see as much data as the stages together: STEPS batches
# per data set of their mixture (4 here; 5 when retraining with units)
JOINT_STEPS=$((STEPS * 4))
MIXNEW=$(data universal $DOMS $NEW)
for s in $SEEDS; do
	evaluate "s$s-base" "" $DOMS $NEW
	run stage "s$s-lora" "{\"stage\":\"joint\",\"method\":\"lora\",\"universal\":{\"rank\":$UR},\"data\":[$MIX],$(common "$JOINT_STEPS" "$LR" "$s" "s$s-lora")}"
	evaluate "s$s-lora" "s$s-lora/bundle" $DOMS
	for tag in molora moloranew; do
		mix=$MIX
		[ $tag = moloranew ] && mix=$MIXNEW
		n=3 steps=$JOINT_STEPS
		[ $tag = moloranew ] && n=4 steps=$((STEPS * 5))
		run stage "s$s-$tag" "{\"stage\":\"joint\",\"method\":\"molora\",\"n_experts\":$n,\"domain\":{\"rank\":$DR},\"data\":[$mix],$(common "$steps" "$LR" "$s" "s$s-$tag")}"
	done
	evaluate "s$s-molora" "s$s-molora/bundle" $DOMS
	# stage 1, shared by every MoDULA method (the same computation)
	run stage "s$s-universal" "{\"stage\":\"universal\",\"method\":\"modula-flan\",\"universal\":{\"rank\":$UR},\"data\":[$(data universal)],$(common "$STEPS" "$LR" "$s" "s$s-universal")}"
	U="{\"name\":\"universal\",\"path\":\"s$s-universal/experts/universal.safetensors\"}"
	for m in flan res nores; do
		M=modula-$m
		[ $m = nores ] && M=modula-res-nores
		doms=$(for d in $DOMS; do printf '{"name":"%s","data":"suite/%s.train.jsonl"},' "$d" "$d"; done | sed 's/,$//')
		run stage "s$s-$m-domain" "{\"stage\":\"domain\",\"method\":\"$M\",\"domain\":{\"rank\":$DR},\"experts\":[$U],\"domains\":[$doms],$(common "$STEPS" "$LR" "$s" "s$s-$m-domain")}"
		ex=$U
		for d in $DOMS; do
			ex="$ex,{\"name\":\"$d\",\"path\":\"s$s-$m-domain/experts/$d.safetensors\"}"
		done
		run stage "s$s-$m-router" "{\"stage\":\"router\",\"method\":\"$M\",\"experts\":[$ex],\"data\":[$MIX],$(common "$ROUTER_STEPS" "$LR" "$s" "s$s-$m-router")}"
		evaluate "s$s-$m" "s$s-$m-router/bundle" $DOMS
		[ $m = nores ] && continue
		# the add-a-domain update: the new expert alone, then the routers again
		run stage "s$s-$m-new" "{\"stage\":\"domain\",\"method\":\"$M\",\"domain\":{\"rank\":$DR},\"experts\":[$U],\"domains\":[{\"name\":\"$NEW\",\"data\":\"suite/$NEW.train.jsonl\"}],$(common "$STEPS" "$LR" "$s" "s$s-$m-new")}"
		ex="$ex,{\"name\":\"$NEW\",\"path\":\"s$s-$m-new/experts/$NEW.safetensors\"}"
		run stage "s$s-$m-router2" "{\"stage\":\"router\",\"method\":\"$M\",\"experts\":[$ex],\"router\":\"s$s-$m-router/router.safetensors\",\"data\":[$MIXNEW],$(common "$ROUTER_STEPS" "$LR" "$s" "s$s-$m-router2")}"
		evaluate "s$s-$m-add" "s$s-$m-router2/bundle" $DOMS $NEW
	done
	evaluate "s$s-moloranew" "s$s-moloranew/bundle" $DOMS $NEW
done

# 3. the tables
python3 - "$SEEDS" "$DOMS" "$NEW" <<'EOF'
import json, math, sys

seeds, doms, new = sys.argv[1].split(), sys.argv[2].split(), sys.argv[3]


def ev(name):
    return json.load(open(f"{name}.eval.json"))


def acc(e, d):
    return next(x["accuracy"] for x in e["domains"] if x["name"] == d)


def ms(v):
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def cost(name):
    for line in open(f"{name}.log"):
        e = json.loads(line)
        if e.get("event") == "done":
            return e["cost"]


methods = [("base", "not fine-tuned"), ("lora", "LoRA"), ("molora", "MoLoRA"), ("flan", "MoDULA-Flan"),
           ("res", "MoDULA-Res"), ("nores", "MoDULA-Res without residual")]
print(f"Seeds {' '.join(seeds)}; exact-match accuracy (%), mean ± std.\n")
print("Table 1 shape: methods x domains\n")
print("| method | " + " | ".join(doms) + " | average |")
print("|---|" + "---|" * (len(doms) + 1))
for m, label in methods:
    cells = [ms([acc(ev(f"s{s}-{m}"), d) for s in seeds]) for d in doms]
    avg = ms([sum(acc(ev(f"s{s}-{m}"), d) for d in doms) / len(doms) for s in seeds])
    print(f"| {label} | " + " | ".join(cells) + f" | {avg} |")
print("\nTable 3 shape: general capability\n")
print("| method | universal accuracy (%) | held-out perplexity |")
print("|---|---|---|")
for m, label in methods:
    ppl = [ev(f"s{s}-{m}")["general"]["perplexity"] for s in seeds]
    pm = sum(ppl) / len(ppl)
    ps = math.sqrt(sum((x - pm) ** 2 for x in ppl) / (len(ppl) - 1)) if len(ppl) > 1 else 0.0
    print(f"| {label} | {ms([ev(f's{s}-{m}')['general']['universal_accuracy'] for s in seeds])} | {pm:.2f} ± {ps:.2f} |")
print(f"\nTable 4 shape: adding the domain '{new}'\n")
print("| method | " + " | ".join(doms + [new]) + " | average | update params / MoLoRA | update tokens / MoLoRA | params x tokens |")
print("|---|" + "---|" * (len(doms) + 5))
for m, label, runs in (("moloranew", "MoLoRA retrained on all", None), ("flan-add", "MoDULA-Flan + domain", "flan"),
                       ("res-add", "MoDULA-Res + domain", "res")):
    cells = [ms([acc(ev(f"s{s}-{m}"), d) for s in seeds]) for d in doms + [new]]
    avg = ms([sum(acc(ev(f"s{s}-{m}"), d) for d in doms + [new]) / (len(doms) + 1) for s in seeds])
    if runs:
        fp, ft, fx = [], [], []
        for s in seeds:
            a, b, full = cost(f"s{s}-{runs}-new"), cost(f"s{s}-{runs}-router2"), cost(f"s{s}-moloranew")
            p = a["trainable_params"] + b["trainable_params"]
            t = a["tokens"] + b["tokens"]
            fp.append(p / full["trainable_params"])
            ft.append(t / full["tokens"])
            fx.append((a["trainable_params"] * a["tokens"] + b["trainable_params"] * b["tokens"]) /
                      (full["trainable_params"] * full["tokens"]))
        extra = f" | {ms(fp)} | {ms(ft)} | {ms(fx)} |"
    else:
        extra = " | 100 | 100 | 100 |"
    print(f"| {label} | " + " | ".join(cells) + f" | {avg}" + extra)
print("\nRouter distributions (MoDULA-Res, seed %s): mean routing weight per domain's test tokens\n" % seeds[0])
r = ev(f"s{seeds[0]}-res")["routers"]
for lay in (r["layers"][0], r["layers"][len(r["layers"]) // 2], r["layers"][-1]):
    print(f"layer {lay['layer']} {lay['module']}\n")
    print("| test data | " + " | ".join(r["experts"]) + " |")
    print("|---|" + "---|" * len(r["experts"]))
    for d, w in lay["mean"].items():
        print(f"| {d} | " + " | ".join(f"{x:.2f}" for x in w) + " |")
    print()
EOF
