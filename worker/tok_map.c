/* tok_map.c: see tok_map.h. */
#include "worker/tok_map.h"
#include "err.h"

#include <stdlib.h>
#include <string.h>

struct tok_map_slot {
	uint64_t hash;          /* 0: empty */
	size_t off, len;        /* key in the arena */
	int64_t val;
};

struct tok_map {
	struct tok_map_slot *slots;
	size_t cap, count;      /* cap is a power of two */
	char *arena;
	size_t arena_len, arena_cap;
};

/* FNV-1a, with 0 kept for empty slots. */
static uint64_t s_hash(const void *key, size_t len)
{
	const unsigned char *p = key;
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	h ^= h >> 29;
	return h ? h : 1;
}

tok_map_t *tok_map_new(void)
{
	tok_map_t *m = calloc(1, sizeof *m);

	if (!m || !(m->slots = calloc(64, sizeof *m->slots))) {
		free(m);
		err_set("out of memory for a hash map");
		return NULL;
	}
	m->cap = 64;
	return m;
}

void tok_map_destroy(tok_map_t **pm)
{
	tok_map_t *m = pm ? *pm : NULL;

	if (!m)
		return;
	free(m->slots);
	free(m->arena);
	free(m);
	*pm = NULL;
}

static struct tok_map_slot *s_find(const tok_map_t *m, const void *key, size_t len, uint64_t h)
{
	size_t i = (size_t)h & (m->cap - 1);

	for (;;) {
		struct tok_map_slot *s = &m->slots[i];
		if (!s->hash || (s->hash == h && s->len == len && !memcmp(m->arena + s->off, key, len)))
			return s;
		i = (i + 1) & (m->cap - 1);
	}
}

static int s_grow(tok_map_t *m)
{
	struct tok_map_slot *old = m->slots;
	size_t old_cap = m->cap;

	if (!(m->slots = calloc(old_cap * 2, sizeof *m->slots))) {
		m->slots = old;
		return err_set("out of memory growing a hash map to %zu slots", old_cap * 2);
	}
	m->cap = old_cap * 2;
	for (size_t i = 0; i < old_cap; i++) {
		if (old[i].hash) {
			size_t j = (size_t)old[i].hash & (m->cap - 1);
			while (m->slots[j].hash)
				j = (j + 1) & (m->cap - 1);
			m->slots[j] = old[i];
		}
	}
	free(old);
	return 0;
}

int tok_map_put(tok_map_t *m, const void *key, size_t len, int64_t val)
{
	uint64_t h = s_hash(key, len);
	struct tok_map_slot *s;

	if ((m->count + 1) * 2 > m->cap && s_grow(m) < 0)
		return -1;
	s = s_find(m, key, len, h);
	if (s->hash)
		return 1;
	if (m->arena_len + len > m->arena_cap) {
		size_t cap = m->arena_cap ? m->arena_cap : 4096;
		char *a;
		while (cap < m->arena_len + len)
			cap *= 2;
		if (!(a = realloc(m->arena, cap)))
			return err_set("out of memory for hash map keys");
		m->arena = a;
		m->arena_cap = cap;
	}
	if (len)
		memcpy(m->arena + m->arena_len, key, len);
	*s = (struct tok_map_slot){ h, m->arena_len, len, val };
	m->arena_len += len;
	m->count++;
	return 0;
}

int tok_map_get(const tok_map_t *m, const void *key, size_t len, int64_t *val)
{
	const struct tok_map_slot *s = s_find(m, key, len, s_hash(key, len));

	if (!s->hash)
		return 0;
	*val = s->val;
	return 1;
}

size_t tok_map_count(const tok_map_t *m)
{
	return m->count;
}

void tok_map_clear(tok_map_t *m)
{
	memset(m->slots, 0, m->cap * sizeof *m->slots);
	m->count = 0;
	m->arena_len = 0;
}
