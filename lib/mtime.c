/* mtime.c: see mtime.h. */
#include "mtime.h"

#include <time.h>

uint64_t mtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double mtime_s(void)
{
	return (double)mtime_ns() * 1e-9;
}

int64_t mtime_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
