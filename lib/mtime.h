/* mtime.h: clocks. Monotonic time for durations and deadlines (never the
 * wall clock), wall time in milliseconds for records people read. */
#ifndef MODULA_MTIME_H
#define MODULA_MTIME_H

#include <stdint.h>

/* Nanoseconds on CLOCK_MONOTONIC. */
uint64_t mtime_ns(void);
/* Seconds on CLOCK_MONOTONIC, as a double. */
double mtime_s(void);
/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t mtime_wall_ms(void);

#endif
