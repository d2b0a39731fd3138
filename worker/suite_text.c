/* suite_text.c: the suite's words and its universal domain (short word
 * instructions: copy, reverse, upper, lower, count, sort, first, last,
 * length, repeat). Not a dictionary: the word list only has to be English
 * enough to meet the pretraining text again. */
#include "worker/suite_gen.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_words[] = {
	"act", "age", "air", "arm", "art", "bag", "bed", "big", "box", "boy",
	"car", "cat", "cup", "day", "dog", "ear", "egg", "end", "eye", "fan",
	"fox", "fun", "gas", "hat", "ice", "ink", "job", "key", "leg", "map",
	"net", "oil", "pen", "pig", "red", "run", "sea", "sky", "sun", "tea",
	"toy", "war", "web", "zoo", "area", "baby", "ball", "bank", "bird", "boat",
	"book", "cake", "city", "cold", "door", "duck", "farm", "fire", "fish", "game",
	"gift", "gold", "hand", "home", "idea", "king", "lake", "lamp", "life", "love",
	"milk", "moon", "name", "nose", "park", "rain", "road", "rock", "rose", "salt",
	"ship", "shoe", "snow", "song", "star", "time", "tree", "wind", "wolf", "word",
	"apple", "beach", "bread", "chair", "cloud", "dream", "earth", "field", "fruit", "glass",
	"grass", "heart", "horse", "house", "light", "money", "music", "night", "ocean", "paper",
	"party", "peace", "plant", "queen", "river", "sheep", "smile", "stone", "storm", "table",
	"tiger", "truth", "water", "world", "bridge", "castle", "dinner", "doctor", "flower", "forest",
	"friend", "garden", "guitar", "island", "letter", "market", "mirror", "number", "orange", "pencil",
	"people", "pocket", "rabbit", "school", "silver", "spring", "summer", "window", "winter", "yellow",
	"balloon", "blanket", "chicken", "country", "dolphin", "evening", "freedom", "general", "history", "kitchen",
	"library", "machine", "morning", "network", "picture", "program", "rainbow", "science", "teacher", "weather",
	"airplane", "birthday", "computer", "daughter", "elephant", "football", "hospital", "language", "mountain", "question",
};

static const char s_consonants[] = "bcdfghjklmnprstvwz";
static const char s_vowels[] = "aeiou";

static int s_cmp_char(const void *a, const void *b)
{
	return *(const char *)a - *(const char *)b;
}

void suite_word(struct suite_rng *r, int lo, int hi, char *out)
{
	size_t n = sizeof s_words / sizeof s_words[0], i;
	uint32_t fits = 0, k;
	int len, v;

	if (suite_rng_below(r, 2) == 0) {
		for (i = 0; i < n; i++)
			fits += (int)strlen(s_words[i]) >= lo && (int)strlen(s_words[i]) <= hi;
		k = suite_rng_below(r, fits);
		for (i = 0; i < n; i++) {
			if ((int)strlen(s_words[i]) < lo || (int)strlen(s_words[i]) > hi)
				continue;
			if (k-- == 0) {
				strcpy(out, s_words[i]);
				return;
			}
		}
	}
	len = lo + (int)suite_rng_below(r, (uint32_t)(hi - lo + 1));
	v = (int)suite_rng_below(r, 2);
	for (i = 0; i < (size_t)len; i++, v = !v)
		out[i] = v ? s_vowels[suite_rng_below(r, sizeof s_vowels - 1)]
		           : s_consonants[suite_rng_below(r, sizeof s_consonants - 1)];
	out[len] = '\0';
}

/* Word lengths by level: 3-4, 3-6, 5-8 letters. */
static const int s_lo[SUITE_LEVEL_MAX] = { 3, 3, 5 };
static const int s_hi[SUITE_LEVEL_MAX] = { 4, 6, 8 };

void suite_gen_universal(struct suite_rng *r, int level, char *task, char *answer)
{
	char w[16], x[16];
	size_t len, i;
	int c, n;

	suite_word(r, s_lo[level - 1], s_hi[level - 1], w);
	len = strlen(w);
	strcpy(x, w);
	switch (suite_rng_below(r, 10)) {
	case 0:
		sprintf(task, "copy %s", w);
		strcpy(answer, w);
		break;
	case 1:
		sprintf(task, "reverse %s", w);
		for (i = 0; i < len; i++)
			answer[i] = w[len - 1 - i];
		answer[len] = '\0';
		break;
	case 2:
		sprintf(task, "upper %s", w);
		for (i = 0; i <= len; i++)
			answer[i] = (char)toupper((unsigned char)w[i]);
		break;
	case 3:
		for (i = 0; i < len; i++)
			if (suite_rng_below(r, 2))
				x[i] = (char)toupper((unsigned char)x[i]);
		i = suite_rng_below(r, (uint32_t)len);
		x[i] = (char)toupper((unsigned char)x[i]);
		sprintf(task, "lower %s", x);
		strcpy(answer, w);
		break;
	case 4:
		/* Mostly a letter of the word, sometimes any letter (count 0). */
		c = suite_rng_below(r, 4) ? w[suite_rng_below(r, (uint32_t)len)] : 'a' + (int)suite_rng_below(r, 26);
		for (i = 0, n = 0; i < len; i++)
			n += w[i] == c;
		sprintf(task, "count %c in %s", c, w);
		sprintf(answer, "%d", n);
		break;
	case 5:
		qsort(x, len, 1, s_cmp_char);
		sprintf(task, "sort %s", w);
		strcpy(answer, x);
		break;
	case 6:
		sprintf(task, "first letter of %s", w);
		sprintf(answer, "%c", w[0]);
		break;
	case 7:
		sprintf(task, "last letter of %s", w);
		sprintf(answer, "%c", w[len - 1]);
		break;
	case 8:
		sprintf(task, "length of %s", w);
		sprintf(answer, "%zu", len);
		break;
	default:
		n = 2 + (int)suite_rng_below(r, 2);
		sprintf(task, "repeat %s %d", w, n);
		answer[0] = '\0';
		for (c = 0; c < n; c++)
			sprintf(answer + strlen(answer), "%s%s", c ? " " : "", w);
		break;
	}
}
