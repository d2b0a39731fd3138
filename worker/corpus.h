/* corpus.h: the plain-English pretraining corpus of the embedded default,
 * built from Debian's `fortunes` package (/usr/share/games/fortunes).
 *
 * Reads every plain fortune file of a folder (not *.dat, *.u8, other dotted
 * names, sub-folders such as off/, or rot13 "-o" files), splits records on
 * lines holding a single '%', normalises each record to ASCII (overstrikes
 * applied, typographic quotes and dashes mapped, whitespace collapsed, empty
 * lines dropped), drops records that are not prose or keep other non-ASCII
 * characters, removes duplicates, shuffles from a seed and splits into a
 * training text and a held-out text. Each output record is its lines
 * followed by one empty line. Not a tokenizer and not a data loader.
 */
#ifndef MODULA_CORPUS_H
#define MODULA_CORPUS_H

#include <stddef.h>
#include <stdint.h>

#define CORPUS_VERSION 1
#define CORPUS_DEFAULT_SOURCE "/usr/share/games/fortunes"

struct corpus_opts {
	const char *source;   /* folder of fortune files */
	const char *out;      /* training text; its manifest is OUT.manifest.json */
	const char *holdout;  /* held-out text */
	double holdout_frac;  /* share of the records held out, 0 to 0.5 */
	uint64_t seed;        /* shuffle seed */
};

/* What corpus_normalise() made of a record. */
enum corpus_verdict {
	CORPUS_KEPT = 0,
	CORPUS_EMPTY,      /* nothing left after normalisation */
	CORPUS_NON_ASCII,  /* a character with no ASCII stand-in, or bad UTF-8 */
	CORPUS_NOT_PROSE,  /* under 60% letters: ASCII art, tables */
};

/* Normalise the `len` bytes of one raw record into `out`, which holds at
 * least len + 1 bytes; `*out_len` gets the result's length (NUL-terminated).
 * Never fails. */
enum corpus_verdict corpus_normalise(const char *raw, size_t len, char *out, size_t *out_len);

/* Build the two texts and OUT.manifest.json (all written atomically).
 * 0, or -1 via err_set(); a missing source folder names the Debian package
 * to install. */
int corpus_build(const struct corpus_opts *o);

/* `modula-engine corpus ...`; argv[0] is "corpus". Returns the exit status:
 * 0 done, 1 failed (message printed), 2 bad usage. */
int cmd_corpus(int argc, char **argv);

#endif
